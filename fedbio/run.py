"""Local and centralized baselines: ``fedbio run --mode local|central``.

    fedbio run --task scl --mode central --profile quick --seed 0 --out runs/central

``local``: each site trains alone on its own data (E epochs) and selects on its own validation
split. ``central``: one model on all sites' data pooled (E epochs), the upper reference a
federation tries to reach. Both write ``config.json``, ``manifest.json``, ``metrics.json``,
models (safetensors) and TensorBoard logs into the run folder. The federated modes live in
``fedbio.federation`` and write the same files.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from fedbio.config import DataConfig, ModelConfig, TrainConfig, to_dict
from fedbio.errors import FedbioError
from fedbio.manifest import manifest
from fedbio.metrics import combine_task_scores
from fedbio.paths import atomic_dir, shipped
from fedbio.profiles import Profile, composition_train, resolve_profile
from fedbio.tasks import TaskData, load_task, majority_rate, own_tests

SCHEMA_VERSION = 1
MODES = ("local", "central")


@dataclass
class RunConfig:
    """Everything a run needs; written to ``RUN/config.json``."""

    task: str = "scl"
    mode: str = "central"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    profile: str = "quick"
    profile_reason: str = ""


ANTIBODY_MAX_LENGTH = 300  # VH + (G4S)3 + VL of every shipped antibody fits: no cropping


def plan(task: str = "scl", mode: str = "central", profile: str | None = None, seed: int = 0,
         split: str | None = None, model: str | None = None, tuning: str | None = None,
         epochs: float | None = None, weights_dir: str | None = None, setup: str | None = None,
         source: str | None = None, backend: str | None = None, device: str | None = None,
         precision: str | None = None, trust_remote_code: bool | None = None) -> RunConfig:
    """Resolve the profile and the user's overrides into one ``RunConfig``.

    ``task="antibody"`` (multi-task regression on antibody developability) keeps whole
    sequences (``max_length`` 300) and defaults to ``amplify-tiny``; ``setup`` and ``source``
    choose how its tasks are spread over sites and which table they come from. ``backend``,
    ``device``, ``precision`` and ``trust_remote_code`` override the profile's (None keeps them).
    """
    prof: Profile = resolve_profile(profile, weights_dir)
    model_cfg, train_cfg = prof.model, prof.train
    if model:
        model_cfg = replace(model_cfg, name=model)
    if model_cfg.is_composition:
        train_cfg = composition_train(seed)
    if tuning:
        model_cfg = replace(model_cfg, tuning=tuning)
    if weights_dir:
        model_cfg = replace(model_cfg, weights_dir=weights_dir)
    if backend is not None:
        model_cfg = replace(model_cfg, backend=backend)
    if trust_remote_code is not None:
        model_cfg = replace(model_cfg, trust_remote_code=bool(trust_remote_code))
    train_cfg = replace(train_cfg, seed=seed, epochs=epochs if epochs is not None else train_cfg.epochs)
    if device is not None:
        train_cfg = replace(train_cfg, device=device)
    if precision is not None:
        train_cfg = replace(train_cfg, precision=precision)
    data_cfg = replace(prof.data, task=task, split=split)
    if task == "antibody":
        from fedbio.config import SETUPS

        if setup is not None and setup not in SETUPS:
            raise FedbioError(f"unknown --setup {setup!r}; choose {', '.join(SETUPS)}")
        data_cfg = replace(data_cfg, max_length=max(data_cfg.max_length, ANTIBODY_MAX_LENGTH),
                           setup=setup or data_cfg.setup, source=source or data_cfg.source)
        if not model and not prof.model.is_composition and prof.name == "quick":
            model_cfg = replace(model_cfg, name="amplify-tiny")
        if not tuning and model_cfg.tuning == "head":
            # private heads on a frozen encoder would leave nothing to federate; every mode
            # uses the same tuning so that local, central and federated runs compare
            model_cfg = replace(model_cfg, tuning="lora")
    return RunConfig(task, mode, seed, model_cfg, data_cfg, train_cfg, prof.name, prof.reason)


def default_split(folder: Path, seed: int) -> Path:
    """The shipped data split over 3 sites (original pool, Dirichlet alpha 1.0, the run's seed)."""
    from fedbio.split import SplitConfig, make_split, write_split

    split = make_split(shipped("scl/deeploc_valtest.fasta"), SplitConfig(seed=seed),
                       hard=shipped("scl/deeploc_setHARD.fasta"))
    return write_split(split, folder, plot=False)


def prepare_task(cfg: RunConfig, run_dir: Path) -> TaskData:
    if cfg.data.split:
        return load_task(cfg.data.split, cfg.task)
    if cfg.task == "antibody":
        from fedbio.antibody import make_antibody_split

        split = make_antibody_split(run_dir / "split", setup=cfg.data.setup, source=cfg.data.source,
                                    seed=cfg.seed)
        return load_task(split, cfg.task)
    if cfg.task != "scl":
        raise FedbioError(f"--task {cfg.task} needs --split DIR (a folder in the split layout)")
    return load_task(default_split(run_dir / "split", cfg.seed), cfg.task)


def _mean_scores(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if isinstance(rows[0][k], float)]
    out = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    out["n"] = rows[0].get("n")
    out["aggregate"] = "unweighted mean over sites"
    return out


def score_and_keep(learner, records, path: Path) -> dict:
    """Score ``records`` and keep the per-record predictions (reports bootstrap from them)."""
    from fedbio.predict import write_predictions
    from fedbio.trainer import scores_of

    data = learner.inputs(records)
    outputs = learner.outputs(data)
    write_predictions(path, records, outputs, learner.codec, truth=True)
    return scores_of(data.y.numpy(), outputs, learner.codec.task_type, learner.codec, ci=True)


def cropped_counts(task: TaskData, data: DataConfig) -> dict:
    """How many sequences the crop shortens, per part (none is ever dropped)."""
    parts = {"train": task.pooled("train"), "valid": task.pooled("valid"), "test": task.test}
    if task.test_hard:
        parts["test_hard"] = task.test_hard
    out = {k: {"cropped": sum(len(r.sequence) > data.max_length for r in v), "of": len(v)}
           for k, v in parts.items()}
    return {"max_length": data.max_length, "policy": data.crop, **out}


def train_and_score(cfg: RunConfig, task: TaskData, run_dir: Path, progress: bool = True) -> dict:
    """Train the run's models and return ``metrics.json`` content."""
    from torch.utils.tensorboard import SummaryWriter

    from fedbio.learner import Learner
    from fedbio.trainer import set_threads

    set_threads(cfg.train)
    cache = run_dir / "cache"
    groups = ({"central": (task.pooled("train"), task.pooled("valid"))} if cfg.mode == "central"
              else {name: (s["train"], s["valid"]) for name, s in task.sites.items()})
    results, curves = {}, {}
    for name, (train_recs, valid_recs) in groups.items():
        codec = task.codec(train_recs)
        learner = Learner.build(cfg.model, cfg.data, cfg.train, codec, cache, progress)
        train = learner.inputs(train_recs, fit_scaler=True)
        valid = learner.inputs(valid_recs)
        with SummaryWriter(str(run_dir / "tb" / name)) as writer:
            curves[name] = learner.fit(train, valid, cfg.train.epochs, writer=writer, tag=name)
        where = run_dir if cfg.mode == "central" else run_dir / name
        test_recs = own_tests(task.test, train_recs) if cfg.mode != "central" else task.test
        scores = {"valid": learner.score(valid),
                  "test": score_and_keep(learner, test_recs, where / "test_predictions.csv")}
        if task.test_hard:
            scores["test_hard"] = score_and_keep(learner, task.test_hard,
                                                 where / "test_hard_predictions.csv")
        results[name] = scores
        learner.save(where / "model")
    if cfg.mode == "central":
        per_site = {site: dict(results["central"], model="central") for site in task.sites}
        test, hard = results["central"]["test"], results["central"].get("test_hard")
    else:
        per_site = results
        test = (combine_task_scores([r["test"] for r in results.values()]) if task.task_type == "multitask"
                else _mean_scores([r["test"] for r in results.values()]))
        hard = _mean_scores([r["test_hard"] for r in results.values()]) if task.test_hard else None
    return {**metrics_head(cfg, task, cfg.mode), "per_site": per_site, "test": test,
            "test_hard": hard, "curves": curves}


def metrics_head(cfg: RunConfig, task: TaskData, mode: str) -> dict:
    """The part of ``metrics.json`` every run shares: what ran, on which data, under which profile."""
    return {
        "schema_version": SCHEMA_VERSION,
        "task": cfg.task, "task_type": task.task_type, "mode": mode, "seed": cfg.seed,
        "model": cfg.model.name, "tuning": None if cfg.model.is_composition else cfg.model.tuning,
        "profile": cfg.profile, "profile_reason": cfg.profile_reason,
        "classes": task.classes,
        "n_train": {site: len(s["train"]) for site, s in task.sites.items()},
        "majority_rate": majority_rate(task),
        "cropped": cropped_counts(task, cfg.data) if not cfg.model.is_composition else None,
    }


def run(cfg: RunConfig, out: str | Path, overwrite: bool = False, progress: bool = True) -> dict:
    """Run ``cfg`` into ``out`` (written all at once; a failure leaves nothing half-written)."""
    if cfg.mode not in MODES:
        raise FedbioError(f"unknown --mode {cfg.mode!r} for a baseline run; choose {', '.join(MODES)}")
    start = time.time()
    with atomic_dir(out, overwrite) as tmp:
        task = prepare_task(cfg, tmp)
        (tmp / "config.json").write_text(json.dumps(to_dict(cfg), indent=1) + "\n")
        (tmp / "manifest.json").write_text(json.dumps(manifest(task.checksums), indent=1) + "\n")
        metrics = train_and_score(cfg, task, tmp, progress)
        metrics["wall_seconds"] = round(time.time() - start, 2)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics


_NEW_MODEL_DEFAULTS = {"trust_remote_code": False}
_NEW_TRAIN_DEFAULTS = {"device": "auto", "precision": "auto"}


def run_key(cfg: RunConfig, extra: dict | None = None) -> str:
    """A short hash of everything that decides a run's result (configuration, seed, shipped data)."""
    import hashlib
    from dataclasses import is_dataclass

    extra = {k: to_dict(v) if is_dataclass(v) else v for k, v in (extra or {}).items()}
    payload = {"config": to_dict(cfg), "extra": extra}
    if not cfg.data.split:
        files = (("antibody/wittrup2017.csv", "antibody/marks2021humanization_immunogenicity.csv",
                  "antibody/tap.tab") if cfg.task == "antibody"
                 else ("scl/deeploc_valtest.fasta", "scl/deeploc_setHARD.fasta"))
        payload["data"] = [hashlib.md5(shipped(f).read_bytes()).hexdigest() for f in files]
    else:
        split = Path(cfg.data.split)
        payload["data"] = {p.relative_to(split).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
                           for p in sorted(split.rglob("*.csv"))}
    payload["config"].pop("profile_reason", None)
    # Settings added later are left out while at their defaults, so earlier runs keep their key.
    for part, defaults in (("model", _NEW_MODEL_DEFAULTS), ("train", _NEW_TRAIN_DEFAULTS)):
        for key, value in defaults.items():
            if payload["config"][part].get(key) == value:
                payload["config"][part].pop(key)
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha1(blob).hexdigest()[:10]


def run_folder(cfg: RunConfig, root: str | Path, **kwargs) -> Path:
    """The folder ``cached_run`` uses for ``cfg`` (and the runner's keyword arguments)."""
    model = Path(cfg.model.name).name if not cfg.model.is_composition else "composition"
    task = "" if cfg.task == "scl" else f"{cfg.task}-"
    return Path(root) / f"{task}{cfg.mode}-{model}-seed{cfg.seed}-{run_key(cfg, kwargs or None)}"


def cached_run(cfg: RunConfig, root: str | Path, progress: bool = True, runner=None, **kwargs) -> dict:
    """Run ``cfg`` under ``root`` unless an identical run already finished there; return metrics.

    The folder is named ``<mode>-<model>-seed<k>-<hash>``, so notebooks never train the same
    thing twice and a changed setting gives a new folder.
    """
    out = run_folder(cfg, root, **kwargs)
    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    runner = runner or run
    return runner(cfg, out=out, overwrite=True, progress=progress, **kwargs)
