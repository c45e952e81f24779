"""A finished federation's results, from the server's history: ``metrics.json``, curves, test scores.

    metrics = federated_metrics(cfg, fed, task, history, test, test_hard, engine)  # metrics.json
    test = site_test_scores(history)             # private heads: each site's own test scores

``history`` is what the server wrote (``RUN/federation/server/history.json``, plus
``simulator``: ``fedbio.federation.progress.simulator_phases``). ``fedbio.federation.runner``
calls these once the federation has ended (``deliver``: the delivered model, saved and scored);
the schema is ``fedbio.training.run``'s plus
``rounds``, ``bytes_per_round`` and ``federation``. Nothing here imports NVFlare.
"""

from __future__ import annotations

from pathlib import Path

from fedbio.data.tasks import TaskData
from fedbio.federation.audit import private_prefixes
from fedbio.federation.config import FedConfig
from fedbio.training.metrics import combine_task_scores
from fedbio.training.run import RunConfig, metrics_head, score_and_keep


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


def split_scores(metrics: dict, part: str) -> dict | None:
    """``{"test_accuracy": .., "test_hard_accuracy": ..}`` -> the scores of one part."""
    other = "test_hard_" if part == "test" else None
    out = {k[len(part) + 1:]: v for k, v in metrics.items()
           if k.startswith(part + "_") and not (other and k.startswith(other))}
    if not out:
        return None
    if "n" in out:
        out["n"] = int(out["n"])
    return nest_tasks(out)


def site_test_scores(history: dict, part: str = "test") -> dict | None:
    """Private heads: the common test set scored by each site's own model (global trunk + its
    head, after the last round) on its own tasks, merged per task (``combine_task_scores``)."""
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
            per_site[site] = {part: split_scores(local, part) for part in ("valid", "test", "test_hard")}
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
        **metrics_head(cfg, task, cfg.mode),
        "per_site": per_site,
        "test": test, "test_hard": test_hard,
        "curves": curves,
        "federation": {
            "algorithm": cfg.mode, "rounds": fed.rounds,
            "epochs_per_round": cfg.train.epochs / fed.rounds, "sites": history["sites"],
            "min_sites": history["needed"], "selected_round": history["selected_round"],
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


def round_costs(history: dict) -> dict:
    """Mean seconds per round (sending the model to the aggregate, the server's clock) and mean
    bytes a site sent per round, from the server's history."""
    rows = history["rounds"][1:]
    sent = [i["bytes_up"] for row in rows for i in row["sites"].values() if "bytes_up" in i]
    return {"round_s": sum(r.get("seconds", 0.0) for r in rows) / max(len(rows), 1),
            "bytes_up": sum(sent) / max(len(sent), 1)}


def deliver(learner, history: dict, task: TaskData, run_dir: Path) -> tuple[dict, dict | None]:
    """Save the selected global model to ``RUN/model`` and score it on the common test sets
    (here, where the benchmark lives: no site is involved), keeping per-record predictions."""
    save_model(learner, history, run_dir)
    test = score_and_keep(learner, task.test, run_dir / "test_predictions.csv")
    hard = (score_and_keep(learner, task.test_hard, run_dir / "test_hard_predictions.csv")
            if task.test_hard else None)
    return test, hard


def save_model(learner, history: dict, run_dir: Path) -> None:
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
