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
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from fedbio.config import (
    TASKS,
    TUNING_MODES,
    DataConfig,
    ModelConfig,
    TrainConfig,
    check_number,
    to_dict,
)
from fedbio.data.digests import file_md5
from fedbio.data.tasks import TaskData, load_task, majority_rate, own_tests, trained_tasks
from fedbio.errors import FedbioError
from fedbio.outputs import output_dir
from fedbio.paths import data_dir, shipped
from fedbio.reporting.manifest import manifest
from fedbio.training.metrics import combine_task_scores
from fedbio.training.profiles import Profile, composition_train, resolve_profile

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
MAX_EPOCHS_ENV = "FEDBIO_TEST_MAX_EPOCHS"  # a test-only cap on epochs (the README test uses it)


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
    cap = os.environ.get(MAX_EPOCHS_ENV)
    if cap and isinstance(train_cfg.epochs, (int, float)):  # tests only: README commands, quickly
        train_cfg = replace(train_cfg, epochs=min(train_cfg.epochs, float(cap)))
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


def check_run(cfg: RunConfig) -> None:
    """Refuse options that cannot run, before anything is read or written (FedbioError)."""
    if cfg.task not in TASKS:
        raise FedbioError(f"unknown --task {cfg.task!r}; choose {', '.join(TASKS)}")
    if not cfg.model.is_composition and cfg.model.tuning not in TUNING_MODES:
        raise FedbioError(f"unknown --tuning {cfg.model.tuning!r}; choose {', '.join(TUNING_MODES)}")
    if cfg.seed != cfg.train.seed:
        raise FedbioError(f"the run's seed {cfg.seed} differs from its training seed {cfg.train.seed}")
    cfg.train.validate()
    check_number("max_length", cfg.data.max_length, low=1, integer=True)
    check_model_name(cfg.model)
    from fedbio.backends.bionemo.backend import model_backend
    from fedbio.training.device import placement

    model_backend(cfg.model)  # --backend bionemo outside its container, or for a model it lacks
    placement(cfg.train)  # --device / --precision this machine cannot honour
    for option, folder in (("--split", cfg.data.split), ("--weights-dir", cfg.model.weights_dir)):
        if folder is not None and not Path(folder).is_dir():
            raise FedbioError(f"{option} {folder}: no such folder")


def check_model_name(model: ModelConfig) -> None:
    """``--model``: ``composition``, a preset, a local folder, or a hub id (``org/name``)."""
    from fedbio.models.backbone_loading import HUB_ID
    from fedbio.models.presets import PRESETS

    name = model.name
    if model.is_composition or name in PRESETS:
        return
    folder = Path(name).expanduser()
    if folder.is_dir():
        if (folder / "metrics.json").is_file() or (folder / "fedbio_task.json").is_file():
            raise FedbioError(f"--model {name} is a fedbio run or model folder, not a pretrained "
                              "checkpoint to fine-tune; give a checkpoint saved with save_pretrained "
                              f"or a preset ({', '.join(PRESETS)}); to score with a trained model, "
                              "use fedbio predict --model RUN/model")
        if not (folder / "config.json").is_file():
            raise FedbioError(f"--model {name}: the folder has no config.json; give a checkpoint "
                              "saved with save_pretrained, or a preset "
                              f"({', '.join(PRESETS)})")
        from fedbio.models.backbone_loading import folder_family

        folder_family(folder, model.trust_remote_code)  # an unknown model_type fails here
        return
    if folder.exists():
        raise FedbioError(f"--model {name} is a file; give a checkpoint folder or a preset")
    if HUB_ID.match(name) and not name.startswith((".", "/", "~")):
        return  # a Hugging Face hub id: fetched (cache first) when the model is built
    raise FedbioError(f"--model {name}: no such folder, and not a preset ({', '.join(PRESETS)}) "
                      "or composition")


def run_inputs(cfg: RunConfig) -> list:
    """What a run reads (an output must never replace or lie inside these)."""
    inputs = [cfg.data.split, cfg.model.weights_dir, data_dir()]
    if not cfg.model.is_composition and Path(cfg.model.name).expanduser().is_dir():
        inputs.append(Path(cfg.model.name).expanduser())
    return inputs


@dataclass
class RunInputs:
    """What a run trains on, read and checked before anything is written: the user's split
    (``task``) or the shipped data split in memory (``split``), written into ``RUN/split``."""

    task: TaskData | None = None
    split: object | None = None  # fedbio.data.split.Split or fedbio.data.antibody.AntibodySplit

    @property
    def n_sites(self) -> int:
        return len(self.task.sites if self.task is not None else self.split.sites)

    @property
    def train_counts(self) -> dict[str, int]:
        """Training records per site."""
        sites = self.task.sites if self.task is not None else self.split.sites
        return {name: len(parts["train"]) for name, parts in sites.items()}


def read_inputs(cfg: RunConfig, public_fraction: float | None = None) -> RunInputs:
    """The run's data, read and validated; nothing is written. ``public_fraction``: the public
    share of the shipped data's split (None: FLuID's default for ``--mode fluid``, else 0)."""
    if cfg.data.split:
        return RunInputs(task=load_task(cfg.data.split, cfg.task))
    if cfg.task == "antibody":
        from fedbio.data.antibody import build_antibody_split

        return RunInputs(split=build_antibody_split(cfg.data.setup, cfg.data.source, cfg.seed))
    if cfg.task != "scl":
        raise FedbioError(f"--task {cfg.task} needs --split DIR (a folder in the split layout)")
    from fedbio.data.public import DEFAULT_PUBLIC_FRACTION
    from fedbio.data.split import SplitConfig, make_split

    if public_fraction is None:   # distillation needs a public set
        public_fraction = DEFAULT_PUBLIC_FRACTION if cfg.mode == "fluid" else 0.0
    return RunInputs(split=make_split(shipped("scl/deeploc_valtest.fasta"),
                                      SplitConfig(seed=cfg.seed, public_fraction=public_fraction),
                                      hard=shipped("scl/deeploc_setHARD.fasta")))


def prepare_task(cfg: RunConfig, run_dir: Path, inputs: RunInputs | None = None) -> TaskData:
    """The run's ``TaskData``: the user's split, or the shipped data's split written into
    ``run_dir/split`` (the folder every site reads)."""
    inputs = inputs or read_inputs(cfg)
    if inputs.task is not None:
        return inputs.task
    if cfg.task == "antibody":
        from fedbio.data.antibody import save_antibody_split

        return load_task(save_antibody_split(inputs.split, run_dir / "split"), cfg.task)
    from fedbio.data.split import save_split

    return load_task(save_split(inputs.split, run_dir / "split", plot=False), cfg.task)


def mean_scores(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if isinstance(rows[0][k], float)]
    out = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    out["n"] = rows[0].get("n")
    out["aggregate"] = "unweighted mean over sites"
    return out


def score_and_keep(learner, records, path: Path) -> dict:
    """Score ``records`` and keep the per-record predictions (reports bootstrap from them)."""
    from fedbio.training.predict import write_predictions
    from fedbio.training.trainer import scores_of

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


def train_and_score(cfg: RunConfig, task: TaskData, run_dir: Path, progress: bool = True,
                    on_epoch: Callable[[str, dict], None] | None = None,
                    dp_sgd: dict | None = None) -> dict:
    """Train the run's models and return ``metrics.json`` content; ``on_epoch(name, row)`` sees
    each epoch of each model (``name``: a site, or ``central``) as it ends. ``dp_sgd``: each
    model's ``fedbio.privacy.sgd.RecordPrivacy`` (``plan_sites``), by name: DP-SGD training,
    and a composition model scaled without data."""
    from fedbio.training.learner import Learner
    from fedbio.training.tensorboard import run_writer
    from fedbio.training.trainer import set_threads

    set_threads(cfg.train)
    cache = run_dir / "cache"
    groups = ({"central": (task.pooled("train"), task.pooled("valid"))} if cfg.mode == "central"
              else {name: (s["train"], s["valid"]) for name, s in task.sites.items()})
    results, curves = {}, {}
    for name, (train_recs, valid_recs) in groups.items():
        codec = task.codec(train_recs)
        learner = Learner.build(cfg.model, cfg.data, cfg.train, codec, cache, progress)
        train = learner.inputs(train_recs, fit_scaler=dp_sgd is None)
        if dp_sgd is not None and cfg.model.is_composition:
            from fedbio.privacy.updates import use_fixed_scaling

            use_fixed_scaling(learner.model)
        valid = learner.inputs(valid_recs)
        hook = None if on_epoch is None else (lambda row, name=name: on_epoch(name, row))
        with run_writer(run_dir, name) as writer:
            curves[name] = learner.fit(train, valid, cfg.train.epochs, writer=writer, tag=name,
                                       on_epoch=hook, dp_sgd=dp_sgd[name] if dp_sgd else None)
        where = run_dir if cfg.mode == "central" else run_dir / name
        test_recs = own_tests(task.test, train_recs) if cfg.mode != "central" else task.test
        scores = {"valid": learner.score(valid),
                  "test": score_and_keep(learner, test_recs, where / "test_predictions.csv")}
        if task.test_hard:
            scores["test_hard"] = score_and_keep(learner, task.test_hard,
                                                 where / "test_hard_predictions.csv")
        results[name] = scores
        learner.save(where / "model", trained_tasks(train_recs) if cfg.mode != "central" else None)
    if cfg.mode == "central":
        per_site = {site: dict(results["central"], model="central") for site in task.sites}
        test, hard = results["central"]["test"], results["central"].get("test_hard")
    else:
        per_site = results
        test = (combine_task_scores([r["test"] for r in results.values()]) if task.task_type == "multitask"
                else mean_scores([r["test"] for r in results.values()]))
        hard = mean_scores([r["test_hard"] for r in results.values()]) if task.test_hard else None
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


def run(cfg: RunConfig, out: str | Path, overwrite: bool = False, progress: bool = True,
        announce: Callable[[], None] | None = None,
        on_epoch: Callable[[str, dict], None] | None = None, privacy=None) -> dict:
    """Run ``cfg`` into ``out`` by the output rule of ``fedbio.outputs``: options and inputs are
    checked first, then the run lives in ``OUT.running/`` (its TensorBoard curves in
    ``OUT.running/tb/``, as they are trained) and becomes ``OUT`` when it succeeds (a failure
    moves it to ``OUT.failed/``). ``announce`` is called once everything is checked,
    ``on_epoch(name, row)`` after every epoch of every model. ``privacy``
    (``fedbio.privacy.PrivacyConfig``): record-level DP-SGD for every model trained."""
    from fedbio.data.tasks import task_type_of
    from fedbio.privacy.config import PrivacyConfig
    from fedbio.privacy.sgd import plan_models

    if cfg.mode not in MODES:
        raise FedbioError(f"unknown --mode {cfg.mode!r} for a baseline run; choose {', '.join(MODES)}")
    check_run(cfg)
    privacy = (privacy or PrivacyConfig()).validate()
    privacy.check_run(task_type_of(cfg.task), cfg.mode, cfg.model)
    inputs = read_inputs(cfg)

    plans = plan_models(privacy, inputs.train_counts, cfg.mode == "central", cfg.train)
    start = time.time()
    with output_dir(out, overwrite=overwrite, inputs=run_inputs(cfg), kind="run") as tmp:
        if announce:
            announce()
        task = prepare_task(cfg, tmp, inputs)
        config = {**to_dict(cfg), **({"privacy": to_dict(privacy)} if privacy.enabled else {})}
        (tmp / "config.json").write_text(json.dumps(config, indent=1) + "\n")
        (tmp / "manifest.json").write_text(json.dumps(manifest(task.checksums), indent=1) + "\n")
        metrics = train_and_score(cfg, task, tmp, progress, on_epoch, plans)
        if plans is not None:
            from fedbio.privacy.fedavg import privacy_block

            metrics["privacy"] = privacy_block(None, privacy, None, cfg.model.is_composition,
                                               {name: p.record() for name, p in plans.items()})
        metrics["wall_seconds"] = round(time.time() - start, 2)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics


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
        payload["data"] = [file_md5(shipped(f)) for f in files]
    else:
        split = Path(cfg.data.split)
        payload["data"] = {p.relative_to(split).as_posix(): file_md5(p)
                           for p in sorted(split.rglob("*.csv"))}
    payload["config"].pop("profile_reason", None)  # says why, decides nothing
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
