"""``run_federated``: a federated run in the NVFlare simulator, written like a local/central run.

    from fedbio.training.run import plan
    from fedbio.federation import FedConfig, run_federated
    cfg = plan(mode="fedavg", model="composition")
    metrics = run_federated(cfg, FedConfig(rounds=3), "runs/fedavg")

The run folder gets ``config.json`` (the ``RunConfig`` plus ``federation``: the ``FedConfig``),
``manifest.json``, ``metrics.json`` (the schema of ``fedbio.training.run`` plus ``rounds`` and
``bytes_per_round``), the selected global model in ``model/`` (safetensors) with its per-record
predictions on the common test sets (``test_predictions.csv``, ``test_hard_predictions.csv``:
the coordinator scores them, no site is involved), TensorBoard curves
in ``tb/`` (``tb/server`` and one folder per site), the NVFlare workspace with every site's log
in ``nvflare/``, and what the sites and the server read and wrote in ``federation/``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from fedbio.config import to_dict
from fedbio.data.tasks import TaskData, task_type_of
from fedbio.errors import FedbioError
from fedbio.federation.config import ALGORITHMS, FedConfig
from fedbio.federation.privacy import private_prefixes, split_private
from fedbio.federation.server import ServerSettings
from fedbio.outputs import output_dir
from fedbio.progress import ProgressLines
from fedbio.reporting.manifest import manifest
from fedbio.training.run import (
    RunConfig,
    check_run,
    metrics_head,
    prepare_task,
    read_inputs,
    run_inputs,
    score_and_keep,
)


def site_spec(cfg: RunConfig, fed: FedConfig, task: TaskData, run_dir: Path) -> dict:
    """What every site's client script reads (``RUN/federation/sites.json``); no data in it."""
    fed_dir = run_dir / "federation"
    split = Path(task.split_dir).resolve()
    try:
        split_ref = os.path.relpath(split, fed_dir.resolve())
    except ValueError:  # another drive (Windows)
        split_ref = str(split)
    return {
        "task": cfg.task, "task_type": task.task_type, "classes": task.classes,
        "split": split_ref, "run_dir": "..",
        "model": to_dict(cfg.model), "data": to_dict(cfg.data), "train": to_dict(cfg.train),
        "epochs_per_round": cfg.train.epochs / fed.rounds,
        "threads": cfg.train.threads or max(1, (os.cpu_count() or 1) // len(task.sites)),
        "faults": {"fail": list(fed.fail_sites), "slow": list(fed.slow_sites),
                   "slow_seconds": fed.slow_seconds, "die": list(fed.die_sites)},
        "private": list(private_prefixes(fed.private_heads, task.task_type)),
    }


def check_simulator_paths(out: str | Path) -> None:
    """NVFlare's simulator joins its worker command lines into one string and splits it at
    spaces, so a run folder (or a Python) whose path holds one breaks every site; refused here."""
    for path, what in ((os.path.abspath(out), f"--out {out}"), (sys.executable, f"python {sys.executable}")):
        if any(c.isspace() for c in str(path)):
            raise FedbioError(f"{what}: NVFlare's simulator splits its command lines at spaces, so a "
                              "federated run cannot use a path that holds one; choose a path without "
                              "spaces")


def check_federation(cfg: RunConfig, fed: FedConfig) -> None:
    """Refuse what cannot federate, before anything is written."""
    private = private_prefixes(fed.private_heads, task_type_of(cfg.task))
    if private and cfg.model.is_composition:
        raise FedbioError("private heads need an encoder to share; the composition model is all head "
                          "(use an ESM-2 or AMPLIFY model, or --shared-heads)")
    if private and cfg.model.tuning == "head":
        raise FedbioError(f"with private heads and tuning {cfg.model.tuning!r} nothing is left to "
                          "federate (the encoder is frozen); use --tuning lora or full")


def _initial_model(cfg: RunConfig, fed: FedConfig, task: TaskData, run_dir: Path):
    """Build the model once here, write its trainable parameters as the first global model.

    Head mode: the common test sets are encoded here, once, into ``RUN/cache/common`` before
    any site starts; the coordinator scores them from there at the end, and every site reads
    them there for its own scores instead of encoding them again.
    """
    from safetensors.numpy import save_file

    from fedbio.federation.site import COMMON_CACHE
    from fedbio.training.learner import Learner

    learner = Learner.build(cfg.model, cfg.data, cfg.train, task.codec(),
                            run_dir / "cache" / COMMON_CACHE, progress=False)
    params = {k: v.numpy() for k, v in learner.trainable_state().items()}
    private = private_prefixes(fed.private_heads, task.task_type)
    params, _ = split_private(params, private)  # private parameters are never global
    if not params:
        raise FedbioError(f"model {cfg.model.name!r} ({cfg.model.backend} backend, tuning "
                          f"{cfg.model.tuning!r}) has no parameters to exchange before its first fit; "
                          "federate it in head mode")
    path = run_dir / "federation" / "initial.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(params, str(path))
    if not cfg.model.is_composition and cfg.model.tuning == "head":
        for records in (task.test, task.test_hard):
            if records:
                learner.inputs(records)  # cached for the sites and for _deliver
    return learner


def server_settings(cfg: RunConfig, fed: FedConfig, task: TaskData, run_dir: Path) -> ServerSettings:
    from fedbio.training.metrics import key_metric

    metric, sign = key_metric(task.task_type)
    return ServerSettings(
        run_dir=str(run_dir), algorithm=fed.algorithm, num_rounds=fed.rounds, min_clients=fed.min_clients,
        mu=fed.mu if fed.algorithm == "fedprox" else 0.0, server_optimizer=fed.server_optimizer,
        server_lr=fed.server_lr, server_momentum=fed.server_momentum, server_betas=tuple(fed.server_betas),
        server_eps=fed.server_eps, key_metric=metric, higher_is_better=sign > 0,
        feature_stats=cfg.model.is_composition,
        # one scaler for labels that feed shared heads; private heads keep their site's own
        label_stats=task.task_type == "regression" or (
            task.task_type == "multitask" and not private_prefixes(fed.private_heads, task.task_type)))


def federate(cfg: RunConfig, fed: FedConfig, task: TaskData, run_dir: Path, progress: bool = True,
             engine: str = "nvflare") -> dict:
    """Run the federation in ``run_dir`` (``engine``: the NVFlare simulator, or ``loop``: the same
    Site/Server code in this process); return the server's history (``history.json``)."""
    sites = list(task.sites)
    spec = run_dir / "federation" / "sites.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps(site_spec(cfg, fed, task, run_dir), indent=1) + "\n")
    settings = server_settings(cfg, fed, task, run_dir)
    if engine == "loop":
        from fedbio.federation.loop import simulate_in_loop
        from fedbio.federation.server import RunStopped

        try:
            history = simulate_in_loop(settings, str(spec), sites, cfg.train.threads or None)
        except RunStopped as err:
            raise FedbioError(f"federated run stopped: {err}") from None
    elif engine == "nvflare":
        from fedbio.federation.nvflare.job import FedbioRecipe, simulator
        from fedbio.federation.nvflare.watch import log_tails

        if progress:
            print(f"federating {len(sites)} sites x {fed.rounds} rounds ({fed.algorithm}) in the NVFlare "
                  "simulator; complete site logs go to nvflare/ in the run folder", flush=True)
        watch = FederationProgress(fed.rounds, settings.key_metric) if progress else None
        try:
            private = private_prefixes(fed.private_heads, task.task_type)
            FedbioRecipe(settings, fed, spec, private).run(simulator(run_dir, sites, fed, watch))
        except RuntimeError as err:
            raise FedbioError(f"the NVFlare simulation failed ({err}); see nvflare/ in the run folder. "
                              f"Last log lines:\n{log_tails(run_dir / 'nvflare')}") from None
        if not (spec.parent / "server" / "done.json").is_file():
            raise FedbioError("the NVFlare simulation ended before the job did; see nvflare/ in the run "
                              f"folder. Last log lines:\n{log_tails(run_dir / 'nvflare')}")
        history = json.loads((spec.parent / "server" / "history.json").read_text())
        history["simulator"] = simulator_phases(spec.parent / "simulator.json")
    else:
        raise FedbioError(f"unknown federation engine {engine!r}; choose nvflare or loop")
    if history.get("error"):
        raise FedbioError(f"federated run stopped: {history['error']}")
    return history


class FederationProgress:
    """Progress lines of a federated run, from the files it writes as it goes (the watchdog's
    ``on_progress``): one per finished round, and per site and local epoch at most every
    ``fedbio.progress.LINE_INTERVAL`` seconds."""

    def __init__(self, rounds: int, metric: str):
        self.rounds, self.metric = rounds, metric
        self.lines = ProgressLines()
        self.shown = 0  # rounds reported so far
        self.start = time.monotonic()

    def _elapsed(self) -> str:
        seconds = int(time.monotonic() - self.start)
        return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"

    def __call__(self, path: Path) -> None:
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            return  # replaced while read: the next change brings it again
        if path.name == "history.json":
            rows = entry.get("rounds", [])
            for row in rows[self.shown + 1:]:
                before = rows[row["round"] - 1].get("global_valid") or {}
                score = (f"; the global model it started from: valid {self.metric} "
                         f"{before[self.metric]:.4g}" if self.metric in before else "")
                self.lines.say("round", f"round {row['round']}/{self.rounds} done, {self._elapsed()}: "
                               f"{len(row.get('ok', []))} of {len(entry['sites'])} sites trained{score}",
                               force=True)
                self.shown = row["round"]
        elif "epoch" in entry:
            loss = entry.get("train_loss")
            self.lines.say(path.stem, f"{path.stem} round {entry['round']}/{entry['rounds']}, epoch "
                           f"{entry['epoch']}/{entry['epochs']}: train loss "
                           + (f"{loss:.4f}" if isinstance(loss, float) else "-") + f", {self._elapsed()}")


def simulator_phases(path: Path) -> dict | None:
    """Where the simulator's time went (seconds), from the watchdog's ``simulator.json``:
    ``start_up`` (process start to the first local epoch a site finished), ``federation`` (from
    there to the server's ``done.json``), ``shutdown`` (from there until every process was gone),
    and the CPU seconds each process used (``simulator``, ``site-N``)."""
    try:
        t = json.loads(path.read_text())
        first = t.get("first_progress", t["done"])
        return {"start_up": round(first - t["started"], 2), "federation": round(t["done"] - first, 2),
                "shutdown": round(t["ended"] - t["done"], 2), "attempts": t["attempts"],
                "cpu_seconds": t.get("cpu_seconds")}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def nest_tasks(flat: dict) -> dict:
    """Flat multi-task scalars (``"<task>.rmse"``) gathered under ``per_task`` again."""
    out, per = {}, {}
    for key, value in flat.items():
        if "." in key:
            name, metric = key.rsplit(".", 1)
            per.setdefault(name, {})[metric] = value
        else:
            out[key] = value
    if per:
        out["per_task"] = per
    return out


def _split_scores(metrics: dict, part: str) -> dict | None:
    """``{"test_accuracy": .., "test_hard_accuracy": ..}`` -> the scores of one part."""
    other = "test_hard_" if part == "test" else None
    out = {k[len(part) + 1:]: v for k, v in metrics.items()
           if k.startswith(part + "_") and not (other and k.startswith(other))}
    if not out:
        return None
    if "n" in out:
        out["n"] = int(out["n"])
    return nest_tasks(out)


def _deliver(learner, history: dict, task: TaskData, run_dir: Path) -> tuple[dict, dict | None]:
    """Save the selected global model to ``RUN/model`` and score it on the common test sets
    (here, where the benchmark lives: no site is involved), keeping per-record predictions."""
    _save_model(learner, history, run_dir)
    test = score_and_keep(learner, task.test, run_dir / "test_predictions.csv")
    hard = (score_and_keep(learner, task.test_hard, run_dir / "test_hard_predictions.csv")
            if task.test_hard else None)
    return test, hard


def _site_test_scores(history: dict, part: str = "test") -> dict | None:
    """Private heads: the common test set scored by each site's own model (global trunk + its
    head, after the last round) on its own tasks, merged per task (``combine_task_scores``)."""
    from fedbio.training.metrics import combine_task_scores

    rows = []
    prefix = f"local_{part}_"
    for info in history["rounds"][-1]["sites"].values():
        flat = {k[len(prefix):]: v for k, v in info.get("metrics", {}).items() if k.startswith(prefix)}
        nested = nest_tasks(flat)
        if "per_task" in nested:
            rows.append({"per_task": nested["per_task"], "mse_std": nested.get("mse_std", float("nan"))})
    if not rows:
        return None
    out = combine_task_scores(rows)
    out["scored_by"] = "each site, with its own model (global trunk + private head), on its own tasks"
    return out


def _save_model(learner, history: dict, run_dir: Path) -> None:
    import torch
    from safetensors.torch import load_file


    shared = history.get("shared", {})
    if "feature_mean" in shared:
        learner.model.mean.copy_(torch.tensor(shared["feature_mean"]))
        learner.model.std.copy_(torch.tensor(shared["feature_std"]))
    if "label_mean" in shared:
        learner.codec.set_scale(shared["label_mean"], shared["label_std"])
    learner.load_trainable_state(load_file(str(run_dir / "federation" / "server" / "global.safetensors")))
    learner.save(run_dir / "model")


def _write_tensorboard(history: dict, run_dir: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run_dir / "tb" / "server")) as writer:
        for row in history["rounds"]:
            for key, value in (row.get("global_valid") or {}).items():
                if key != "n":
                    writer.add_scalar(f"global/valid_{key}", value, row["round"])
            if row["round"]:
                writer.add_scalar("sites/aggregated", len(row["ok"]), row["round"])
    for site in history["sites"]:
        with SummaryWriter(str(run_dir / "tb" / site)) as writer:
            epoch = 0
            for row in history["rounds"][1:]:
                info = row["sites"].get(site, {})
                for loss in info.get("curve", []):
                    epoch += 1
                    if loss is not None:
                        writer.add_scalar(f"{site}/train_loss", loss, epoch)
                for key, value in info.get("metrics", {}).items():
                    if key.startswith("valid_") and key != "valid_n":
                        writer.add_scalar(f"{site}/global_{key}", value, row["round"] - 1)
                if "bytes_up" in info:
                    writer.add_scalar(f"{site}/bytes_up", info["bytes_up"], row["round"])


def federated_metrics(cfg: RunConfig, fed: FedConfig, task: TaskData, history: dict,
                      test: dict, test_hard: dict | None, engine: str = "nvflare") -> dict:
    """``metrics.json`` content from the server's history (same schema as ``fedbio.training.run``)."""
    private = private_prefixes(fed.private_heads, task.task_type)
    last = history["rounds"][-1]
    per_site, failed_sites = {}, {}
    for site in history["sites"]:
        fails = {str(row["round"]): row["failed"][site] for row in history["rounds"][1:] if site in row["failed"]}
        if fails:
            failed_sites[site] = fails
        info = last["sites"].get(site, {})
        if "metrics" in info:
            local = {k[len("local_"):]: v for k, v in info["metrics"].items() if k.startswith("local_")}
            per_site[site] = {part: _split_scores(local, part) for part in ("valid", "test", "test_hard")}
            per_site[site]["model"] = f"the site's own model after round {last['round']}"
        else:
            per_site[site] = {"failed": info.get("failed", "no result"), "model": None}
    rounds = []
    for row in history["rounds"]:
        entry = {"round": row["round"], "global_valid": row.get("global_valid")}
        if row["round"]:
            entry.update(ok=row["ok"], failed=row["failed"], update_norm=row.get("update_norm"), sites={
                s: {k: v for k, v in info.items() if k != "curve"} for s, info in row["sites"].items()})
        rounds.append(entry)
    bytes_per_round = [{"round": row["round"],
                        "down": {s: i.get("bytes_down", 0) for s, i in row["sites"].items()},
                        "up": {s: i.get("bytes_up", 0) for s, i in row["sites"].items()}}
                       for row in history["rounds"][1:]]
    curves = {"global": [{"round": r["round"], **{f"valid_{k}": v for k, v in (r.get("global_valid") or {}).items()
                                                 if k != "n"}} for r in history["rounds"]]}
    for site in history["sites"]:
        curves[site], epoch = [], 0
        for row in history["rounds"][1:]:
            for loss in row["sites"].get(site, {}).get("curve", []):
                epoch += 1
                curves[site].append({"round": row["round"], "epoch": epoch, "train_loss": loss})
    return {
        **metrics_head(cfg, task, fed.algorithm),
        "per_site": per_site,
        "test": test, "test_hard": test_hard,
        "curves": curves,
        "federation": {
            "algorithm": fed.algorithm, "rounds": fed.rounds,
            "epochs_per_round": cfg.train.epochs / fed.rounds, "sites": history["sites"],
            "min_clients": history["needed"], "selected_round": history["selected_round"],
            "selection": "best sample-weighted mean over sites of the global model's validation score",
            "test_scored_by": ("each site's own model on its own tasks (heads are private)" if private
                               else "the coordinator, on the common test sets (no site involved)"),
            "private": list(private),
            "engine": engine,
            "exchanged": history["exchanged"],
            "shared_statistics": {"names": sorted(history.get("shared", {})),
                                  "bytes_up": history.get("stats", {}).get("bytes_up", {})},
            "failed_sites": failed_sites,
            "simulator_seconds": history.get("simulator"),
        },
        "rounds": rounds,
        "bytes_per_round": bytes_per_round,
    }


def run_federated(cfg: RunConfig, fed: FedConfig | None = None, out: str | Path | None = None,
                  overwrite: bool = False, progress: bool = True, engine: str = "nvflare",
                  announce: Callable[[], None] | None = None) -> dict:
    """Run ``cfg`` (``mode`` fedavg | fedprox | fedopt) federated into ``out``; return its metrics.

    ``fed`` defaults to ``FedConfig()``; ``cfg.mode`` names the algorithm. ``engine="loop"`` runs
    the same sites and server in this process without NVFlare (a reference and a timing
    baseline). Options and inputs are checked first; then the run lives in ``OUT.running/``,
    becomes ``OUT`` when it succeeds, and moves to ``OUT.failed/`` (with every log) when it
    fails or is interrupted (``fedbio.outputs``). ``announce`` is called once all is checked.
    """
    if cfg.mode not in ALGORITHMS:
        raise FedbioError(f"unknown federated --mode {cfg.mode!r}; choose {', '.join(ALGORITHMS)}")
    if out is None:
        raise FedbioError("run_federated needs out= (the run folder to write)")
    fed = replace(fed or FedConfig(), algorithm=cfg.mode)
    # NVFlare runs each site in its own working folder: hand it absolute paths only.
    if cfg.data.split:
        cfg = replace(cfg, data=replace(cfg.data, split=os.path.abspath(cfg.data.split)))
    check_run(cfg)
    check_federation(cfg, fed)
    if engine == "nvflare":
        check_simulator_paths(out)
    inputs = read_inputs(cfg)
    fed.validate(inputs.n_sites)
    start = time.time()
    with output_dir(out, overwrite=overwrite, inputs=run_inputs(cfg), kind="run") as tmp:
        if announce:
            announce()
        task = prepare_task(cfg, tmp, inputs)
        config = {**to_dict(cfg), "federation": to_dict(fed)}
        (tmp / "config.json").write_text(json.dumps(config, indent=1) + "\n")
        (tmp / "manifest.json").write_text(json.dumps(manifest(task.checksums), indent=1) + "\n")
        learner = _initial_model(cfg, fed, task, tmp)
        history = federate(cfg, fed, task, tmp, progress, engine)
        if private_prefixes(fed.private_heads, task.task_type):  # no global head to score with
            test, hard = _site_test_scores(history), _site_test_scores(history, "test_hard")
        else:
            test, hard = _deliver(learner, history, task, tmp)
        _write_tensorboard(history, tmp)
        metrics = federated_metrics(cfg, fed, task, history, test, hard, engine)
        metrics["wall_seconds"] = round(time.time() - start, 2)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics
