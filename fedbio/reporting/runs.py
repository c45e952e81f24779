"""The runs a report tables, read and checked: every problem is one line naming the file.

    from fedbio.reporting.runs import collect
    groups = collect(["runs/local", "runs/fedavg"])     # {"composition · local": [(dir, metrics)], …}

Every RUN must be a finished run folder whose ``metrics.json`` can be read; a report folder, a
split, an unfinished (``*.running``) or failed (``*.failed``) run, a file, or the same run twice
is refused with one line saying what it is. The runs must be of one task type and comparable:
same class list (tasks), same sites, and runs of the same seed made from the same split files
(``manifest.json``'s ``data_md5``; other seeds legitimately draw other splits); runs grouped as
seeds of one run (same model and mode) share its settings (``config.json``). ``allow_mixed``
tables runs that differ in these anyway and returns what differs; a seed twice in one group is
always refused.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from fedbio.config import TASK_TYPES
from fedbio.errors import FedbioError

MIN_BOOT, MAX_BOOT = 100, 100_000
# What every run's metrics.json holds, with the type it must have (the report reads all of it).
REQUIRED = {"task_type": str, "mode": str, "seed": int, "model": str, "n_train": dict,
            "per_site": dict, "test": dict}
KIND = {str: "a string", int: "an integer", dict: "an object"}

Groups = dict[str, list[tuple[Path, dict]]]


def load_metrics(run_dir: str | Path) -> dict:
    """A run's ``metrics.json``, checked: a FedbioError names the file if it cannot be used."""
    path = Path(run_dir) / "metrics.json"
    metrics = _read_json(path)
    _check_metrics(metrics, path)
    return metrics


# -- reading runs: every problem is one line naming the file -----------------------------------

def _read_json(path: Path) -> dict:
    """A JSON object from ``path``, or a FedbioError saying what is wrong with the file."""
    redo = "rerun that run or leave it out"
    if path.is_dir():
        raise FedbioError(f"{path}: a folder, not a file; {redo}")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FedbioError(f"{path}: missing; the run is incomplete: {redo}") from None
    except OSError as err:
        raise FedbioError(f"{path}: cannot be read ({err.strerror}); check its permissions") from None
    except UnicodeDecodeError:
        raise FedbioError(f"{path}: not a text file; {redo}") from None
    if not text.strip():
        raise FedbioError(f"{path}: empty (the run stopped while writing it?); {redo}")
    try:
        data = json.loads(text)
    except ValueError as err:
        raise FedbioError(f"{path}: not valid JSON (line {err.lineno}: {err.msg}; cut off while it "
                          f"was written?); {redo}") from None
    if not isinstance(data, dict):
        raise FedbioError(f"{path}: holds a JSON {type(data).__name__}, not a run's record (an "
                          f"object); {redo}")
    return data


def _check_metrics(m: dict, path: Path) -> None:
    """The entries the report reads, with the right types."""
    for key, kind in REQUIRED.items():
        if key not in m:
            raise FedbioError(f"{path}: no {key!r} entry (not written by fedbio run/federate, or "
                              "cut short); rerun that run or leave it out")
        if not isinstance(m[key], kind) or (kind is int and isinstance(m[key], bool)):
            raise FedbioError(f"{path}: {key!r} is {json.dumps(m[key])[:40]}, not {KIND[kind]}; "
                              "the file was edited or damaged: rerun that run")
    if m["task_type"] not in TASK_TYPES:
        raise FedbioError(f"{path}: unknown task_type {m['task_type']!r} (expected one of "
                          f"{', '.join(TASK_TYPES)}); rerun that run or leave it out")
    if not m["n_train"] or not all(_is_int(n) and n >= 0 for n in m["n_train"].values()):
        raise FedbioError(f"{path}: 'n_train' is not a count of training records per site; "
                          "the file was edited or damaged: rerun that run")
    classes = m.get("classes")
    if m["task_type"] != "regression" and not (
            isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise FedbioError(f"{path}: no 'classes' list (needed for a {m['task_type']} run); "
                          "rerun that run or leave it out")
    if m["task_type"] == "multitask":
        _check_task_scores(m["test"].get("per_task"), path)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_task_scores(per_task, path: Path) -> None:
    """A multi-task run's per-task test scores: ``{task: {"rmse": number, …}}``."""
    if not isinstance(per_task, dict) or not per_task:
        raise FedbioError(f"{path}: no per-task test scores ('test' has no 'per_task'); rerun that run")
    for task, scores in per_task.items():
        if not isinstance(scores, dict) or not all(
                isinstance(v, (int, float)) or v is None for k, v in scores.items() if k != "models"):
            raise FedbioError(f"{path}: the test scores of task {task!r} are not numbers; the file "
                              "was edited or damaged: rerun that run")


_FAILED = re.compile(r"\.failed(-\d+)?$")


def _not_a_run(d: Path) -> str | None:
    """Why ``d`` is not a finished run folder (one line, with what to do), or None if it is one."""
    if d.name.endswith(".running"):
        return (f"{d}: an unfinished run (being written, or stopped before it finished); wait for "
                "it or rerun it, and leave it out")
    if _FAILED.search(d.name):
        return f"{d}: a failed run (its error is in {d / 'error.txt'}); rerun it and leave this one out"
    if d.name.endswith(".lock"):
        return f"{d}: the lock file of a fedbio command still writing {d.name[:-5]}; leave it out"
    if d.name.startswith(".") and ".replaced" in d.name:
        return f"{d}: an old output being replaced by a newer one; leave it out"
    if not d.exists():
        return f"{d}: no such run folder"
    if not d.is_dir():
        if d.name == "metrics.json":
            return f"{d}: give the run folder ({d.parent}), not its metrics.json"
        return f"{d}: a file, not a run folder; give folders written by fedbio run or federate"
    if (d / "metrics.json").exists():
        return None
    return _what_else(d)


def _what_else(d: Path) -> str:
    """A folder without metrics.json: say what it looks like, so a glob's catch is plain."""
    if (d / "results.md").exists():
        return (f"{d}: a fedbio report, not a run; leave it out (a glob such as "
                f"{d.parent / '*'} matches it)")
    if (d / "summary.json").exists() or (d / "tasks.json").exists():
        return f"{d}: a split folder, not a run; give the runs made from it"
    if (d / "config.json").exists():
        return (f"{d}: a run that never finished (no metrics.json); rerun it with --overwrite "
                "or leave it out")
    for inner in (d, d / "runs"):  # `fedbio report runs` for `runs/*`, or a demo folder
        held = sorted(p.parent.name for p in inner.glob("*/metrics.json")) if inner.is_dir() else []
        if held:
            more = ", …" if len(held) > 3 else ""
            return f"{d}: holds runs ({', '.join(held[:3])}{more}) but is not one; give them: {inner / '*'}"
    return f"{d}: not a finished run (no metrics.json); give folders written by fedbio run or federate"


def group_name(m: dict) -> str:
    """What a run is (``model · mode``, and ``DP z=…`` under DP): seeds of the same run group
    together."""
    model = "composition" if m["model"] == "composition" else Path(m["model"]).name
    privacy = m.get("privacy") if isinstance(m.get("privacy"), dict) else {}
    dp = (f" · DP z={privacy.get('noise_multiplier') or 0:.3g} S={privacy.get('clip'):g} "
          f"δ={privacy.get('delta', 0):g} {privacy.get('where', '')}"
          if privacy.get("clip") is not None else "")
    sgd = privacy.get("dp_sgd") if isinstance(privacy.get("dp_sgd"), dict) else None
    if sgd:
        noise = (f"Z={sgd['noise_multiplier']:.3g}" if sgd.get("noise_multiplier") is not None
                 else f"ε≤{sgd.get('target_epsilon') or 0:g}")
        dp += f" · DP-SGD {noise} C={sgd.get('clip') or 0:g} δ={privacy.get('delta', 0):g}"
    filt = privacy.get("update_filter") if isinstance(privacy.get("update_filter"), dict) else None
    if filt and filt.get("kind") == "share":
        dp += f" · share F={filt.get('fraction'):g}" + (f" G={filt['clip']:g}" if filt.get("clip") else "")
    elif filt:
        from fedbio.privacy.config import PrivacyConfig

        d = PrivacyConfig()
        dp += f" · SVT F={filt.get('fraction'):g} γ={filt.get('gamma'):g} ε={filt.get('epsilon'):g}"
        for key, label, default in (("release_epsilon", "release ε", None), ("noise_var", "noise_var",
                                    d.svt_noise_var), ("tau", "τ", d.svt_tau)):
            if filt.get(key) != default:
                dp += f" {label}={filt.get(key):g}"
    fluid = m.get("fluid") if m["mode"] == "fluid" and isinstance(m.get("fluid"), dict) else {}
    for key, usual in (("weighting", "domain"), ("selection", "balanced")):  # FLuID's other students
        dp += f" · {fluid[key]} {key}" if fluid.get(key, usual) != usual else ""
    return f"{model} · {m['mode']}{dp}"


def epsilon_cell(runs: list[tuple[Path, dict]]) -> str:
    """A group's epsilon as the report shows it: ``4.16 (δ 1e-05)``, ``∞`` for z = 0, ``—``
    for runs without DP; different epsilons in one group are all shown."""
    cells = []
    for _, m in runs:
        p = m.get("privacy") if isinstance(m.get("privacy"), dict) else None
        if p is None or p.get("clip") is None:
            cells.append("—")
        else:
            eps = p.get("epsilon")
            cells.append(("∞" if eps is None else f"{eps:.3g}") + f" (δ {p.get('delta', 0):g})")
    return " / ".join(dict.fromkeys(cells))


def record_epsilon_cell(runs: list[tuple[Path, dict]]) -> str:
    """A group's DP-SGD epsilon, the largest of its sites' (or models'): ``—`` without DP-SGD."""
    cells = []
    for _, m in runs:
        p = m.get("privacy") if isinstance(m.get("privacy"), dict) else {}
        sgd = p.get("dp_sgd") if isinstance(p.get("dp_sgd"), dict) else None
        if sgd is None:
            cells.append("—")
        else:
            eps = sgd.get("epsilon_max")
            cells.append(("∞" if eps is None else f"{eps:.3g}") + f" (δ {p.get('delta', 0):g})")
    return " / ".join(dict.fromkeys(cells))


def load_runs(run_dirs: Sequence[str | Path]) -> list[tuple[Path, dict]]:
    """Each run folder and its checked metrics; refuses non-runs and a run given twice."""
    if not run_dirs:
        raise FedbioError("no run folders given; give the folders written by fedbio run or federate")
    runs, seen = [], {}
    for d in map(Path, run_dirs):
        reason = _not_a_run(d)
        if reason:
            raise FedbioError(reason)
        real = os.path.realpath(d)
        if real in seen:
            same = "is given twice" if str(seen[real]) == str(d) else f"and {seen[real]} are the same folder"
            raise FedbioError(f"{d} {same}; give each run once")
        seen[real] = d
        runs.append((d, load_metrics(d)))
    return runs


def _check_seeds(runs: list[tuple[Path, dict]]) -> None:
    """Two runs of one kind with one seed (a copy, or a rerun) would count that seed twice."""
    first: dict[tuple[str, int], Path] = {}
    for d, m in runs:
        key = (group_name(m), m["seed"])
        if key in first:
            raise FedbioError(f"{first[key]} and {d} are both '{key[0]}' runs with seed {key[1]}: the "
                              "mean over seeds would count that seed twice; leave one out")
        first[key] = d


def collect(run_dirs: Sequence[str | Path], allow_mixed: bool = False) -> Groups:
    """Group run folders by what they are (``model · mode``); seeds of the same run group together.

    Every run is checked (see the module docstring); runs that are not comparable are refused
    unless ``allow_mixed``.
    """
    runs = load_runs(run_dirs)
    check_comparable(runs, allow_mixed)
    return group_runs(runs)


def group_runs(runs: list[tuple[Path, dict]]) -> Groups:
    groups: Groups = {}
    for d, m in runs:
        groups.setdefault(group_name(m), []).append((d, m))
    return groups


# -- are the runs comparable? ------------------------------------------------------------------

def _data_md5(d: Path) -> dict | None:
    """The split files' checksums the run recorded (None: no manifest.json to tell)."""
    path = d / "manifest.json"
    if not path.exists():
        return None
    md5 = _read_json(path).get("data_md5")
    return md5 if isinstance(md5, dict) else None


def _differ_classes(a: dict, b: dict) -> str | None:
    ca, cb = a.get("classes") or [], b.get("classes") or []
    if set(ca) == set(cb):
        return None
    only_a, only_b = sorted(set(ca) - set(cb)), sorted(set(cb) - set(ca))
    what = "tasks" if a["task_type"] == "multitask" else "class lists"
    parts = [f"only the first has {', '.join(only_a[:3])}" if only_a else "",
             f"only the second has {', '.join(only_b[:3])}" if only_b else ""]
    return f"differ in {what} ({'; '.join(p for p in parts if p)})"


def _differ_sites(a: dict, b: dict) -> str | None:
    sa, sb = list(a["n_train"]), list(b["n_train"])
    if set(sa) == set(sb):
        return None
    return f"differ in sites ({', '.join(sa)} vs {', '.join(sb)})"


def _differ_data(a: Path, b: Path, seed: int, md5: dict[Path, dict | None]) -> str | None:
    missing = [d for d in (a, b) if md5[d] is None]
    if missing:
        return (f"both have seed {seed}, but {missing[0] / 'manifest.json'} holds no data checksums "
                "to show they used the same split")
    changed = sorted(k for k in set(md5[a]) | set(md5[b]) if md5[a].get(k) != md5[b].get(k))
    if not changed:
        return None
    more = ", …" if len(changed) > 3 else ""
    return (f"both have seed {seed} but were made from different split files "
            f"({', '.join(changed[:3])}{more} differ)")


# The settings that make a run what it is (config.json): seeds grouped as one run share them.
# Not compared: seeds, where the split and weights lie, threads, device, and simulator knobs.
SETTINGS = {"model": ("name", "backend", "tuning", "head_hidden", "dropout", "lora_r", "lora_alpha",
                      "lora_dropout"),
            "data": ("task", "max_length", "crop", "setup", "source"),
            "train": ("epochs", "lr", "batch_size", "weight_decay", "warmup_frac", "grad_clip"),
            "federation": ("algorithm", "rounds", "mu", "server_optimizer", "server_lr",
                           "server_momentum", "private_heads"),
            "fluid": ("public", "weighting", "selection", "neighbours", "domain_fraction")}


def _settings(d: Path) -> dict[str, object] | None:
    """``section.key -> value`` of ``SETTINGS`` from the run's config.json (None: no config.json)."""
    path = d / "config.json"
    if not path.exists():
        return None
    config = _read_json(path)
    return {f"{part}.{key}": (config.get(part) or {}).get(key)
            for part, keys in SETTINGS.items() for key in keys}


def _differ_settings(a: dict | None, b: dict | None, group: str) -> str | None:
    if a is None or b is None:
        return None
    changed = [k for k in a if a[k] != b[k]]
    if not changed:
        return None
    shown = ", ".join(f"{k} {a[k]} vs {b[k]}" for k in changed[:2])
    return f"are both '{group}' runs but differ in settings ({shown}); seeds of one run share its settings"


def _differences(runs: list[tuple[Path, dict]]):
    """(run, other run, what differs): each run against the first run, against the first run of
    its seed (same seed, same split files), and against the first run of its group (same
    settings)."""
    d0, m0 = runs[0]
    md5 = {d: _data_md5(d) for d, _ in runs}  # every manifest read: a broken one is always said
    settings = {d: _settings(d) for d, _ in runs}
    first_of_seed: dict[int, Path] = {}
    first_of_group: dict[str, Path] = {}
    for d, m in runs:
        if d is not d0:
            for why in (_differ_classes(m0, m), _differ_sites(m0, m)):
                if why:
                    yield d0, d, why
        ref = first_of_seed.setdefault(m["seed"], d)
        why = _differ_data(ref, d, m["seed"], md5) if ref is not d else None
        if why:
            yield ref, d, why
        ref = first_of_group.setdefault(group_name(m), d)
        why = _differ_settings(settings[ref], settings[d], group_name(m)) if ref is not d else None
        if why:
            yield ref, d, why


def check_comparable(runs: list[tuple[Path, dict]], allow_mixed: bool = False) -> list[str]:
    """Refuse runs that are not like for like; with ``allow_mixed``, return what differs instead.

    A task type never mixes, nor does a seed appear twice in one group. Class lists and sites
    must match the first run's; runs of the same seed must come from the same split files (other
    seeds legitimately draw other splits); the seeds of one group must share its settings.
    """
    d0, m0 = runs[0]
    for d, m in runs[1:]:
        if m["task_type"] != m0["task_type"]:
            raise FedbioError(f"{d0} is a {m0['task_type']} run but {d} a {m['task_type']} run; a "
                              "report tables runs of one task type: report them separately")
    notes = []
    for a, b, why in _differences(runs):
        if not allow_mixed:
            raise FedbioError(f"{a} and {b} {why}; their scores are not comparable: report them "
                              "separately, or pass --allow-mixed to table them anyway")
        notes.append(f"{a} and {b} {why}")
    _check_seeds(runs)  # after: two runs of one seed on different splits are told as such
    return notes


def check_n_boot(n_boot: int) -> None:
    """Fewer than ``MIN_BOOT`` resamples make a 95 % interval's ends noise; more than
    ``MAX_BOOT`` only cost time."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or not MIN_BOOT <= n_boot <= MAX_BOOT:
        raise FedbioError(f"--n-boot {n_boot}: give {MIN_BOOT} to {MAX_BOOT} bootstrap resamples "
                          "(1000 is the default)")
