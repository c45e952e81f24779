"""A FLuID run's own parts of ``run_federated``: checks, the public set, its settings, ``metrics.json``.

``fedbio.federation.runner.run_federated`` runs ``--mode fluid`` through the same checks, output
rule, NVFlare job (simulator or deployment) and delivery as FedAvg; what differs lives here:

    check_fluid(cfg, fed, fluid, privacy)         refuse what FLuID cannot do, before any output
    public = public_set(cfg, fluid, inputs)       the public records (--public, SPLIT/public.csv,
                                                  or the default split's), checked against the tests
    settings = fluid_settings(fluid, public, ...) what the server's workflow and the sites read
    metrics = fluid_metrics(...)                  metrics.json: the student's scores in test /
                                                  test_hard, the teachers' and hybrids' in fluid

The student is delivered as a FedAvg run's global model is (``RUN/model``, scored by the
coordinator on the common test sets); the teachers and hybrids are scored by their sites.
"""

from __future__ import annotations

from pathlib import Path

from fedbio.data.public import (
    DEFAULT_PUBLIC_FRACTION,
    check_public,
    read_public,
    split_public,
    write_public,
)
from fedbio.data.tasks import task_type_of
from fedbio.errors import FedbioError
from fedbio.federation.fluid.config import FluidConfig
from fedbio.federation.fluid.site import public_digest

PUBLIC_IN_JOB = "public.csv"   # the job's copy, beside the sites' spec (RUN/federation/)


def check_fluid(cfg, fed, fluid: FluidConfig, privacy, engine: str) -> None:
    """Refuse, in one line each, what a FLuID run cannot do."""
    from fedbio.backends.bionemo.backend import model_backend

    fluid.validate()
    if task_type_of(cfg.task) != "classification":
        raise FedbioError(f"--mode fluid distils class probabilities; --task {cfg.task} is not a "
                          "classification task (use --task scl or classification, or FedAvg)")
    if privacy.enabled or privacy.filters_update:
        raise FedbioError("--mode fluid shares no model update, so DP-FedAvg / DP-SGD / selective "
                          "sharing do not apply; drop the privacy options, or use --mode fedavg")
    if fed.he:
        raise FedbioError("--he encrypts model updates, and --mode fluid sends none; drop --he")
    if model_backend(cfg.model) != "hf":
        raise FedbioError("--mode fluid runs the hf backend (its teachers' embeddings measure the "
                          "applicability domain); drop --backend bionemo")


def public_set(cfg, fluid: FluidConfig, inputs) -> tuple[list, Path | str]:
    """(public records, where they came from), checked against the run's test sets."""
    split = inputs.task or inputs.split
    base = Path(inputs.task.split_dir) if inputs.task is not None else Path("split")
    tests = [(base / "test.csv", split.test)] + ([(base / "test_hard.csv", split.test_hard)]
                                                 if split.test_hard else [])
    if fluid.public is not None:   # "" too: read_public says what is wrong with it
        path = Path(fluid.public)
        records = read_public(path)
    elif inputs.task is not None:
        path = split_public(inputs.task.split_dir)
        if path is None:
            raise FedbioError(f"--split {inputs.task.split_dir} has no public.csv for --mode fluid; make "
                              f"the split with fedbio split --public-fraction {DEFAULT_PUBLIC_FRACTION:g}, "
                              "or give --public FILE (FASTA or CSV, labels ignored)")
        records = read_public(path)
    else:
        records, path = inputs.split.public, "split/public.csv"
        if not records:
            raise FedbioError("the default split has no public set; give --split with public.csv, or --public FILE")
    own = [(base / site / f"{part}.csv", parts[part]) for site, parts in split.sites.items()
           for part in ("train", "valid")]
    check_public(records, path, tests, own)
    return records, path


def write_job_public(records, fed_dir: Path) -> None:
    """The job's copy of the public set (``id,sequence``), which travels with the sites' spec."""
    fed_dir.mkdir(parents=True, exist_ok=True)
    write_public(fed_dir / PUBLIC_IN_JOB, records)


def site_fluid(fluid: FluidConfig) -> dict:
    """The spec's ``fluid`` entry (what every site reads)."""
    return {"public": PUBLIC_IN_JOB, "neighbours": fluid.neighbours, "domain_fraction": fluid.domain_fraction}


def fluid_settings(fluid: FluidConfig, public: list, n_classes: int, seed: int) -> dict:
    """``ServerSettings.fluid``: what the server's workflow reads."""
    return {"public": PUBLIC_IN_JOB, "n_public": len(public), "n_classes": n_classes,
            "public_digest": public_digest(public), "weighting": fluid.weighting,
            "selection": fluid.selection, "hybrid": fluid.hybrid, "studies": fluid.studies, "seed": seed}


def _means(models: dict) -> dict:
    """The unweighted mean over sites of each test set's scores (``mean_scores``)."""
    from fedbio.training.run import mean_scores

    out = {}
    for part in ("test", "test_hard"):
        rows = [m[part] for m in models.values() if m.get(part)]
        out[part] = mean_scores(rows) if rows else None
    return out


def model_scores(history: dict, model: str) -> dict:
    """Each site's ``model`` (teacher | hybrid) scores, from the evaluate step's scalars."""
    from fedbio.federation.results import split_scores

    evaluated = history["steps"].get("evaluate", {}).get("metrics", {})
    own = {site: {k[len(model) + 1:]: v for k, v in m.items() if k.startswith(model + "_")}
           for site, m in sorted(evaluated.items())}
    return {site: {part: split_scores(m, part) for part in ("valid", "test", "test_hard")}
            for site, m in own.items() if m}


def score_studies(learner, history: dict, task, run_dir: Path) -> list[dict]:
    """The studies' students (``RUN/federation/server/studies/``), scored on the common tests."""
    import torch
    from safetensors.torch import load_file

    from fedbio.training.trainer import scores_of

    out = []
    for study in history.get("studies", []):
        state = load_file(str(run_dir / "federation" / "server" / study["file"]))
        if "feature_mean" in study["shared"]:
            learner.model.mean.copy_(torch.tensor(study["shared"]["feature_mean"]))
            learner.model.std.copy_(torch.tensor(study["shared"]["feature_std"]))
        learner.load_trainable_state(state)
        row = {k: study[k] for k in ("kind", "value", "teachers", "weighting", "public_share", "selection", "rows", "file")}
        for part, records in (("test", task.test), ("test_hard", task.test_hard)):
            if records:
                data = learner.inputs(records)
                row[part] = scores_of(data.y.numpy(), learner.outputs(data), "classification")
        out.append(row)
    return out


def fluid_metrics(cfg, fed, fluid: FluidConfig, task, history: dict, test: dict, hard: dict | None,
                  engine: str, studies: list[dict], source: str | Path) -> dict:
    """``metrics.json`` of a FLuID run (the schema of ``fedbio.training.run`` plus ``fluid``)."""
    from fedbio.training.run import metrics_head

    teachers, hybrids = model_scores(history, "teacher"), model_scores(history, "hybrid")
    steps = history["steps"]
    sent = {}
    for name, info in steps.items():
        for site, size in info.get("bytes_up", {}).items():
            sent.setdefault(site, {})[name] = size
    failed = {s: {name: reason for name, info in steps.items() if s in info.get("failed", {})
                  for reason in [info["failed"][s]]} for s in history["sites"]}
    per_site = {s: {**(teachers.get(s) or {"failed": failed.get(s) or "no result"}),
                    "model": "the site's teacher (trained on its own records only)"} for s in history["sites"]}
    return {
        **metrics_head(cfg, task, "fluid"),
        "per_site": per_site,
        "test": test, "test_hard": hard,
        "curves": {},
        "federation": {"algorithm": "fluid", "sites": history["sites"], "min_sites": history["needed"],
                       "engine": engine, "failed_sites": {s: f for s, f in failed.items() if f},
                       "test_scored_by": "the coordinator, on the common test sets (no site involved)",
                       "simulator_seconds": history.get("simulator")},
        "fluid": {
            "public": {"n": int(history["n_public"]), "source": str(source)},
            "teachers": sorted(history.get("teachers", [])),
            "n_teachers": len(history.get("teachers", [])),
            "weighting": fluid.weighting, "selection": fluid.selection,
            "student": {**history["student"], "test": test, "test_hard": hard,
                        "trained_by": "the server, on the public set labelled by the teachers' combination"},
            "teacher_scores": teachers,
            "teacher_mean": _means(teachers),
            "hybrid_scores": hybrids or None,
            "hybrid_mean": _means(hybrids) if hybrids else None,
            "bytes_sent": sent,
            "shapes_sent": {name: info["shapes"] for name, info in steps.items()   # the steps that sent arrays
                            if any(info.get("shapes", {}).values())},
            "steps": {name: {k: v for k, v in info.items() if k in ("ok", "failed", "seconds", "range")}
                      for name, info in steps.items()},
            "studies": studies or None,
        },
    }
