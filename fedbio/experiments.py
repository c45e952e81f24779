"""The sweeps ``make demo`` and the notebooks run: local, central and federated runs of one model
over seeds or over splits, each run cached under a root folder (``cached_run``), and their
tables.

    from fedbio.experiments import compare, seed_summary, skew_sweep
    runs = compare("composition", "quick", "runs/cache", seeds=(0, 1, 2))
    seed_summary(runs)                  # test accuracy (%): mean, sd and each seed, per mode
    skew_sweep(["composition"], {0.1: split_a, 100.0: split_b}, "quick", "runs/cache")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from fedbio.federation import FedConfig
from fedbio.training.run import cached_run, plan

BASELINES = ("local", "central")


def compare(model: str | None, profile: str, root: str | Path, seeds: Sequence[int] = (0,),
            federated: Mapping[str, FedConfig] | None = None, split: str | Path | None = None,
            progress: bool = False) -> dict[int, dict[str, dict]]:
    """``{seed: {mode: metrics}}``: the local and central baselines and each federated mode
    (``federated``: mode -> ``FedConfig``; default FedAvg with ``FedConfig()``) of ``model``
    (a preset, ``composition``, or None for the profile's), each run cached under ``root``."""
    from fedbio.federation import run_federated

    federated = {"fedavg": FedConfig()} if federated is None else federated
    out: dict[int, dict[str, dict]] = {}
    for seed in seeds:
        given = dict(model=model, profile=profile, seed=seed, split=str(split) if split else None)
        out[seed] = {mode: cached_run(plan(mode=mode, **given), root, progress=progress)
                     for mode in BASELINES}
        for mode, fed in federated.items():
            out[seed][mode] = cached_run(plan(mode=mode, **given), root, progress=progress,
                                         runner=run_federated, fed=fed)
    return out


def seed_summary(runs: Mapping[int, Mapping[str, dict]], metric: str = "accuracy"):
    """A DataFrame, one row per mode: the delivered model's test ``metric`` (x100 for accuracy)
    as mean, sd over seeds (NaN for one seed) and each seed's value, rounded to 0.1."""
    import numpy as np
    import pandas as pd

    scale = 100.0 if metric in ("accuracy", "macro_f1") else 1.0
    modes = next(iter(runs.values())).keys()
    rows = {}
    for mode in modes:
        values = [scale * runs[seed][mode]["test"][metric] for seed in runs]
        rows[mode] = {"mean": np.mean(values), "sd": np.std(values, ddof=1) if len(values) > 1 else np.nan,
                      **{f"seed {seed}": v for seed, v in zip(runs, values, strict=True)}}
    return pd.DataFrame(rows).T.round(1)


def skew_sweep(models: Sequence[str | None], splits: Mapping[float, str | Path], profile: str,
               root: str | Path, federated: Mapping[str, FedConfig] | None = None, seed: int = 0,
               model_names: Mapping[str | None, str] | None = None):
    """One row per (model, alpha): the split's label skew (``summary.json``'s JS divergence) and
    the test accuracy (%) of local, central and each federated mode, plus FedAvg's gain over the
    mean local model (and FedProx's over FedAvg when both ran)."""
    import json

    import pandas as pd

    rows = []
    for model in models:
        for alpha, folder in splits.items():
            res = compare(model, profile, root, (seed,), federated, folder)[seed]
            js = json.loads((Path(folder) / "summary.json").read_text())["js_divergence"]
            name = (model_names or {}).get(model, model)
            rows.append({"model": name, "alpha": alpha, "JS divergence": js,
                         **{mode: 100 * r["test"]["accuracy"] for mode, r in res.items()}})
    table = pd.DataFrame(rows)
    if "fedavg" in table:
        table["FedAvg gain over local"] = table["fedavg"] - table["local"]
    if {"fedavg", "fedprox"} <= set(table):
        table["FedProx - FedAvg"] = table["fedprox"] - table["fedavg"]
    return table
