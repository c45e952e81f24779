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

Here: the checks, the first global model, the federation itself (``federate``: the NVFlare
simulator, or ``engine="loop"``) and the delivered model. ``metrics.json`` and the curves are
assembled in ``fedbio.federation.results``; the progress lines and the simulator's timings come
from ``fedbio.federation.progress``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from fedbio.config import cores, to_dict
from fedbio.data.tasks import TaskData, task_type_of
from fedbio.errors import FedbioError
from fedbio.federation.audit import private_prefixes, split_private
from fedbio.federation.config import ALGORITHMS, FedConfig
from fedbio.federation.encrypted import check_he, he_block, take_delivered
from fedbio.federation.fluid.config import FluidConfig
from fedbio.federation.fluid.run import (
    check_fluid,
    fluid_metrics,
    fluid_settings,
    public_set,
    score_studies,
    site_fluid,
    write_job_public,
)
from fedbio.federation.loop import simulate_in_loop
from fedbio.federation.progress import FederationProgress, simulator_phases
from fedbio.federation.results import deliver, federated_metrics, site_test_scores
from fedbio.federation.server import RunStopped, ServerSettings
from fedbio.federation.site import COMMON_CACHE
from fedbio.outputs import output_dir
from fedbio.privacy.config import PrivacyConfig
from fedbio.privacy.fedavg import (
    check_accountable,
    check_private_federation,
    privacy_block,
    run_settings,
    sgd_settings,
    site_records,
)
from fedbio.privacy.sgd import plan_sites
from fedbio.privacy.updates import fixed_composition_scaling
from fedbio.reporting.manifest import manifest
from fedbio.training.learner import Learner
from fedbio.training.metrics import key_metric
from fedbio.training.run import (
    RunConfig,
    check_run,
    prepare_task,
    read_inputs,
    run_inputs,
)


def site_spec(cfg: RunConfig, fed: FedConfig, task: TaskData, run_dir: Path,
              dp: dict | None = None, update_filter: dict | None = None, fluid: dict | None = None) -> dict:
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
        "epochs_per_round": cfg.train.epochs / fed.rounds, "rounds": fed.rounds,
        "threads": cfg.train.threads or max(1, cores() // len(task.sites)),
        "faults": {"fail": list(fed.fail_sites), "slow": list(fed.slow_sites),
                   "slow_seconds": fed.slow_seconds, "die": list(fed.die_sites)},
        "private": list(private_prefixes(fed.private_heads, task.task_type)),
        "stream": bool(fed.stream_metrics),
        "privacy": dp,
        "update_filter": update_filter,
        **({"fluid": fluid["site"]} if fluid else {}),
    }


SHELL_CHARACTERS = set("'\"\\$`;&|<>*?[](){}!#~")   # and whitespace


def check_simulator_paths(out: str | Path) -> None:
    """NVFlare's simulator joins its worker command lines into one string and splits it again
    (at spaces, honouring quotes), so a run folder (or a Python) whose path holds whitespace,
    a quote or another shell character breaks every site; refused here."""
    for path, what in ((os.path.abspath(out), f"--out {out}"), (sys.executable, f"python {sys.executable}")):
        bad = sorted({c for c in str(path) if c.isspace() or c in SHELL_CHARACTERS})
        if bad:
            shown = " ".join(repr(c) for c in bad)
            raise FedbioError(f"{what}: NVFlare's simulator rebuilds its command lines from one "
                              f"string, splitting them at spaces and reading quotes and shell "
                              f"characters, so a federated run cannot use a path holding {shown}; "
                              "choose a path of letters, digits and . _ - / only")


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


def check_engine(update_filter: dict | None, engine: str) -> None:
    """SVT is NVFlare's filter: another engine would send the update unfiltered."""
    if (update_filter or {}).get("kind") == "svt" and engine not in ("nvflare", "deployment"):
        raise FedbioError("--svt runs NVFlare's SVTPrivacy filter, which only NVFlare applies; "
                          "run it with engine='nvflare' or on a deployment")


def check_share(privacy: PrivacyConfig, run_dir: Path) -> None:
    """Selective sharing must keep at least one entry of the model's update."""
    if privacy.share_fraction is None:
        return
    from safetensors.numpy import load_file

    from fedbio.privacy.sharing import allowed, values

    entries = values(load_file(str(run_dir / "federation" / "initial.safetensors")))
    if allowed(entries, "share", privacy.share_fraction) == 0:
        raise FedbioError(f"--share-fraction {privacy.share_fraction:g} keeps none of the "
                          f"{entries} entries of each update (it keeps floor(F x {entries})); give "
                          f"at least {1 / entries:.3g}")


def server_settings(cfg: RunConfig, fed: FedConfig, task: TaskData, run_dir: Path,
                    dp: dict | None = None, update_filter: dict | None = None,
                    fluid: dict | None = None) -> ServerSettings:
    metric, sign = key_metric(task.task_type)
    return ServerSettings(
        run_dir=str(run_dir), algorithm=cfg.mode, num_rounds=fed.rounds, min_sites=fed.min_sites,
        mu=fed.mu if cfg.mode == "fedprox" else 0.0, server_optimizer=fed.server_optimizer,
        server_lr=fed.server_lr, server_momentum=fed.server_momentum, server_betas=tuple(fed.server_betas),
        server_eps=fed.server_eps, key_metric=metric, higher_is_better=sign > 0,
        task_timeout=fed.task_timeout, feature_stats=cfg.model.is_composition and not (dp or fed.he), dp=dp,
        he={"shared": fixed_composition_scaling() if cfg.model.is_composition else {}} if fed.he else None,
        weighted=fed.weighted, update_filter=update_filter, sites=sorted(task.sites),
        fluid=fluid["server"] if fluid else None,
        # one scaler for labels that feed shared heads; private heads keep their site's own
        label_stats=task.task_type == "regression" or (
            task.task_type == "multitask" and not private_prefixes(fed.private_heads, task.task_type)))


def federate(cfg: RunConfig, fed: FedConfig, task: TaskData, run_dir: Path, progress: bool = True,
             engine: str = "nvflare", dp: dict | None = None, update_filter: dict | None = None,
             deployment: str | Path | None = None, submitter: str | None = None,
             fluid: dict | None = None) -> dict:
    """Run the federation in ``run_dir`` (``engine``: the NVFlare simulator, ``deployment``: a
    job on the deployment in the folder ``deployment``, or ``loop``: the same Site/Server code in
    this process); return the server's history (``history.json``).
    ``update_filter``: ``PrivacyConfig.update_filter()`` (selective sharing or SVT); ``fluid``:
    FLuID's ``{"site": ..., "server": ...}`` settings (``fedbio.federation.fluid.run``)."""
    sites = list(task.sites)
    spec = run_dir / "federation" / "sites.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    site_config = site_spec(cfg, fed, task, run_dir, dp, update_filter, fluid)
    if engine == "deployment":   # no path of this machine in the job: each site has its own kit
        site_config = {**site_config, "deployment": True, "data": {**site_config["data"], "split": None}}
        del site_config["split"], site_config["run_dir"]
    spec.write_text(json.dumps(site_config, indent=1) + "\n")
    settings = server_settings(cfg, fed, task, run_dir, dp, update_filter, fluid)
    check_engine(update_filter, engine)
    if engine == "deployment":
        from fedbio.deployment.jobs import run_job
        from fedbio.federation.nvflare.job import FedbioRecipe

        recipe = FedbioRecipe(settings, fed, spec, private_prefixes(fed.private_heads, task.task_type),
                              deployment=True)
        info = run_job(recipe, run_dir, deployment, fed.min_sites,
                       say=(lambda line: print(line, flush=True)) if progress else (lambda line: None),
                       submitter=submitter)
        if not (spec.parent / "server" / "done.json").is_file():
            raise FedbioError(f"job {info['job_id']} ended ({info.get('status')}) without the server's "
                              "records; see nvflare/logs/ in the run folder")
        history = json.loads((spec.parent / "server" / "history.json").read_text())
        history["deployment"] = info
    elif engine == "loop":
        try:
            history = simulate_in_loop(settings, str(spec), sites, cfg.train.threads or None)
        except RunStopped as err:
            raise FedbioError(f"federated run stopped: {err}") from None
    elif engine == "nvflare":
        from fedbio.federation.nvflare.job import FedbioRecipe, simulator
        from fedbio.federation.nvflare.watch import log_tails

        if progress:
            what = ("distilling (FLuID) from" if fluid else "federating") + f" {len(sites)} sites" + \
                ("" if fluid else f" x {fed.rounds} rounds ({cfg.mode})")
            print(f"{what} in the NVFlare simulator; complete site logs go to nvflare/ in the run folder",
                  flush=True)
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



def run_federated(cfg: RunConfig, fed: FedConfig | None = None, out: str | Path | None = None,
                  overwrite: bool = False, progress: bool = True, engine: str = "nvflare",
                  announce: Callable[[], None] | None = None,
                  privacy: PrivacyConfig | None = None, deployment: str | Path | None = None,
                  submitter: str | None = None, fluid: FluidConfig | None = None) -> dict:
    """Run ``cfg`` (``mode`` fedavg | fedprox | fedopt | fluid) federated into ``out``; return its metrics.

    ``fed`` defaults to ``FedConfig()``; ``cfg.mode`` names the algorithm. ``engine="loop"`` runs
    the same sites and server in this process without NVFlare (a reference and a timing
    baseline). Options and inputs are checked first; then the run lives in ``OUT.running/``,
    becomes ``OUT`` when it succeeds, and moves to ``OUT.failed/`` (with every log) when it
    fails or is interrupted (``fedbio.outputs``). ``announce`` is called once all is checked.
    ``privacy`` (``fedbio.privacy.PrivacyConfig``) makes it site-level DP-FedAvg. ``deployment``
    (a ``fedbio deploy`` workspace) runs it as a job there instead of in the simulator, submitted
    as ``submitter`` (a user of the deployment; default its admin). ``--mode fluid`` distils
    instead (``fluid``: its ``FluidConfig``; ``fedbio.federation.fluid``).
    """
    if cfg.mode not in (*ALGORITHMS, "fluid"):
        raise FedbioError(f"unknown federated --mode {cfg.mode!r}; choose {', '.join(ALGORITHMS)} or fluid")
    fluid = (fluid or FluidConfig()) if cfg.mode == "fluid" else None
    if out is None:
        raise FedbioError("run_federated needs out= (the run folder to write)")
    fed = fed or FedConfig()
    if deployment is not None:
        engine = "deployment"
    # NVFlare runs each site in its own working folder: hand it absolute paths only.
    if cfg.data.split:
        cfg = replace(cfg, data=replace(cfg.data, split=os.path.abspath(cfg.data.split)))
    check_run(cfg)
    if fluid:   # first: FLuID's own refusals say what applies to it
        check_fluid(cfg, fed, fluid, privacy or PrivacyConfig(), engine)
    check_federation(cfg, fed)
    if engine == "nvflare":
        check_simulator_paths(out)
    privacy = (privacy or PrivacyConfig()).validate()
    z = None
    privacy.check_run(task_type_of(cfg.task), cfg.mode, cfg.model)
    check_engine(privacy.update_filter(), engine)
    if not fluid:
        check_he(fed, cfg.mode, task_type_of(cfg.task), privacy, engine)
    if privacy.enabled:
        check_private_federation(privacy, fed.min_sites, fed.stream_metrics)
    if privacy.site_level:
        z = privacy.noise_multiplier(fed.rounds)   # a target epsilon is solved here, before output
        check_accountable(z, fed.rounds, privacy.delta)
    inputs = read_inputs(cfg, 0.0 if fluid and fluid.public is not None else None)  # --public: sites keep the pool
    fed.validate(inputs.n_sites)
    public = public_set(cfg, fluid, inputs) if fluid else None
    if deployment is not None:
        from fedbio.deployment.jobs import check_deployment

        check_deployment(deployment, list(inputs.task.sites if inputs.task else inputs.split.sites),
                         fed.min_sites, submitter)
        if fed.he:
            from fedbio.deployment.kits import check_he_contexts

            check_he_contexts(deployment, list(inputs.task.sites if inputs.task else inputs.split.sites))
    if privacy.site_level and privacy.delta >= 1 / inputs.n_sites:
        raise FedbioError(f"--dp-delta {privacy.delta:g} is not below 1 / {inputs.n_sites}, one over "
                          "the number of sites (site-level DP protects a whole site); give e.g. "
                          "1e-5")
    if privacy.record_level:   # each site plans its own; checked here, before any output
        plan_sites(sgd_settings(privacy), inputs.train_counts, cfg.train.batch_size,
                   cfg.train.epochs, fed.rounds)
    fed = replace(fed, stream_metrics=not privacy.enabled if fed.stream_metrics is None
                  else fed.stream_metrics)   # unset: on, except under DP
    start = time.time()
    inputs_read = [*run_inputs(cfg), *([deployment] if deployment is not None else []),
                   *([fluid.public] if fluid and fluid.public is not None else [])]
    with output_dir(out, overwrite=overwrite, inputs=inputs_read, kind="run") as tmp:
        if announce:
            announce()
        task = prepare_task(cfg, tmp, inputs)
        config = {**to_dict(cfg), "federation": to_dict(fed), "privacy": to_dict(privacy),
                  **({"fluid": to_dict(fluid)} if fluid else {})}
        dp = (run_settings(privacy, z, list(task.sites), cfg.model.is_composition)
              if privacy.enabled else None)
        (tmp / "config.json").write_text(json.dumps(config, indent=1) + "\n")
        (tmp / "manifest.json").write_text(json.dumps(manifest(task.checksums), indent=1) + "\n")
        learner = _initial_model(cfg, fed, task, tmp)
        check_share(privacy, tmp)
        if fluid:
            write_job_public(public[0], tmp / "federation")
            plan = {"site": site_fluid(fluid), "server": fluid_settings(fluid, public[0], len(task.classes), cfg.seed)}
        history = federate(cfg, fed, task, tmp, progress, engine, dp, privacy.update_filter(), deployment,
                           submitter, plan if fluid else None)
        homes = {site: tmp for site in task.sites}   # where each site kept its records
        if "deployment" in history:   # in its own kit (readable here: one machine)
            from fedbio.deployment.jobs import site_folders

            homes = site_folders(deployment, list(task.sites), history["deployment"]["job_id"])
        if fed.he:   # the sites decrypted the last model; the server never could
            delivery = take_delivered(homes, list(task.sites), tmp, history["he"]["delivered_by"])
        if private_prefixes(fed.private_heads, task.task_type):  # no global head to score with
            test, hard = site_test_scores(history), site_test_scores(history, "test_hard")
        else:
            test, hard = deliver(learner, history, task, tmp)
        if fluid:
            metrics = fluid_metrics(cfg, fed, fluid, task, history, test, hard, engine,
                                    score_studies(learner, history, task, tmp), public[1])
        else:
            metrics = federated_metrics(cfg, fed, task, history, test, hard, engine)
        if "deployment" in history:
            metrics["deployment"] = {**history["deployment"], "site_records": homes}
        if fed.he:
            metrics["he"] = he_block(history, delivery)
        if dp:
            records = ({s: r for s, home in homes.items() for r in site_records(home, [s]).values()}
                       if privacy.record_level else None)
            metrics["privacy"] = privacy_block(dp, privacy, fed.rounds, cfg.model.is_composition, records)
        if privacy.filters_update:
            from fedbio.federation.audit import read_audit
            from fedbio.privacy.sharing import filter_block

            audit = {s: lines for s, home in homes.items()
                     for name, lines in read_audit(Path(home) / "federation" / "audit").items() if name == s}
            metrics["privacy"] = {"update_filter": filter_block(privacy.update_filter(), history, audit)}
        metrics["wall_seconds"] = round(time.time() - start, 2)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics
