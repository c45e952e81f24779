"""The sweeps ``make demo`` and the notebooks run: local, central and federated runs of one model
over seeds or over splits, each run cached under a root folder (``cached_run``), and their
tables.

    from fedbio.experiments import compare, seed_summary, skew_sweep
    runs = compare("composition", "quick", "runs/cache", seeds=(0, 1, 2))
    seed_summary(runs)                  # test accuracy (%): mean, sd and each seed, per mode
    skew_sweep(["composition"], {0.1: split_a, 100.0: split_b}, "quick", "runs/cache")
    runs, folders = fluid_compare("composition", "quick", "runs/cache", "runs/split")  # + FLuID
    rows = defence_sweep({"none": ("fedavg", None), "share 10%": ("fedavg", PrivacyConfig(share_fraction=0.1))},
                         "quick", "runs/cache", seeds=(0, 1, 2))
    defence_table(rows)                 # accuracy and membership AUC per defence, mean ± sd
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from fedbio.federation import FedConfig
from fedbio.privacy.config import PrivacyConfig
from fedbio.training.run import cached_run, plan, run_folder

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
    as mean, sd over seeds (NaN for one seed) and each seed's value, rounded to 0.1 (0.001 for
    scores in [-1, 1] such as MCC)."""
    import numpy as np
    import pandas as pd

    scale = 100.0 if metric in ("accuracy", "macro_f1") else 1.0
    modes = next(iter(runs.values())).keys()
    rows = {}
    for mode in modes:
        values = [scale * runs[seed][mode]["test"][metric] for seed in runs]
        rows[mode] = {"mean": np.mean(values), "sd": np.std(values, ddof=1) if len(values) > 1 else np.nan,
                      **{f"seed {seed}": v for seed, v in zip(runs, values, strict=True)}}
    return pd.DataFrame(rows).T.round(1 if scale == 100.0 else 3)


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


def defence_sweep(defences: Mapping[str, tuple[str, PrivacyConfig | None]], profile: str,
                  root: str | Path, seeds: Sequence[int] = (0,), model: str | None = "composition",
                  rounds: int = 4, split: str | Path | None = None, attack=None):
    """One row per (defence, seed): each defence (``name: (mode, PrivacyConfig or None)``) is
    run on the same split and seeds (cached under ``root``), then attacked with ``fedbio attack
    membership`` (``attack``: an ``AttackConfig``; the attack is cached in the run folder too).
    Columns: accuracy (%) of the delivered model (local runs: the sites' mean), membership AUC
    and TPR at 1 % FPR, epsilon (DP-FedAvg, the largest DP-SGD, or SVT's), the cosine between
    what a site sent and its true update (filters), and the run folder."""
    import json

    import pandas as pd

    from fedbio.federation import run_federated
    from fedbio.federation.config import ALGORITHMS
    from fedbio.privacy.attack import RESULT, AttackConfig, attack_run
    from fedbio.training.run import run

    rows = []
    for seed in seeds:
        for name, (mode, privacy) in defences.items():
            cfg = plan(mode=mode, model=model, profile=profile, seed=seed,
                       split=str(split) if split else None)
            kwargs = {"privacy": privacy} if privacy is not None else {}
            if mode in ALGORITHMS:
                kwargs["fed"] = FedConfig(rounds=rounds)
            cached_run(cfg, root, progress=False, runner=run_federated if mode in ALGORITHMS else run,
                       **kwargs)
            folder = run_folder(cfg, root, **kwargs)
            done = folder / "attack" / RESULT
            wanted = (attack or AttackConfig()).validate().to_dict()
            if not done.is_file() or json.loads(done.read_text()).get("config") != wanted:
                attack_run(folder, attack, overwrite=done.is_file(), progress=False)
            rows.append({"defence": name, "seed": seed,
                         **defence_row(json.loads((folder / "metrics.json").read_text())),
                         "run": str(folder)})
    return pd.DataFrame(rows)


def defence_row(m: dict) -> dict:
    """The numbers ``defence_sweep`` tables from one attacked run's ``metrics.json``."""
    p = m.get("privacy") or {}
    filt = p.get("update_filter") or {}
    epsilon, of = None, ""
    if p.get("clip") is not None:
        epsilon, of = p.get("epsilon"), "site-level DP-FedAvg"
    if (p.get("dp_sgd") or {}).get("epsilon_max") is not None:
        epsilon, of = p["dp_sgd"]["epsilon_max"], "DP-SGD (per record, largest site's)"
    if filt.get("epsilon_total") is not None:
        epsilon, of = filt["epsilon_total"], "SVT (NVFlare's ledger, summed over rounds)"
    return {"accuracy (%)": 100 * m["test"]["accuracy"], "membership AUC": p.get("membership_auc"),
            "TPR at 1% FPR": p.get("tpr_at_1pct_fpr"), "epsilon": epsilon, "epsilon of": of,
            "cosine": filt.get("cosine_mean")}


def defence_table(rows):
    """``defence_sweep``'s rows as one row per defence (in the order given): mean and sd over
    seeds of accuracy and membership AUC, mean TPR at 1 % FPR, epsilon and cosine."""
    import pandas as pd

    if len(rows) == 0 or "defence" not in rows:
        raise ValueError("defence_table needs defence_sweep's rows (a 'defence' column, one row or more)")
    order = list(dict.fromkeys(rows["defence"]))
    grouped = rows.groupby("defence", sort=False)
    out = pd.DataFrame({
        "accuracy (%)": grouped["accuracy (%)"].mean(), "accuracy (%) sd": grouped["accuracy (%)"].std(),
        "membership AUC": grouped["membership AUC"].mean(),
        "membership AUC sd": grouped["membership AUC"].std(),
        "TPR at 1% FPR": grouped["TPR at 1% FPR"].mean(), "epsilon": grouped["epsilon"].mean(),
        "epsilon of": grouped["epsilon of"].first(),
        "cosine": grouped["cosine"].mean(), "seeds": grouped["seed"].count()})
    return out.loc[order]


def fluid_plans(model: str | None, profile: str, split: str | Path, seeds: Sequence[int] = (0,),
                fluid=None, rounds: int = 4):
    """``(seed, mode, cfg, runner, kwargs)`` of ``fluid_compare``'s runs: local, central, FedAvg
    (``rounds``) and FLuID (``fluid``: a ``FluidConfig``; default with hybrids and studies)."""
    from fedbio.federation import run_federated
    from fedbio.federation.fluid import FluidConfig
    from fedbio.training.run import run

    fluid = fluid or FluidConfig(hybrid=True, studies=True)
    for seed in seeds:
        given = dict(model=model, profile=profile, seed=seed, split=str(split))
        for mode in BASELINES:
            yield seed, mode, plan(mode=mode, **given), run, {}
        yield seed, "fedavg", plan(mode="fedavg", **given), run_federated, {"fed": FedConfig(rounds=rounds)}
        yield seed, "fluid", plan(mode="fluid", **given), run_federated, {"fed": FedConfig(), "fluid": fluid}


def fluid_compare(model: str | None, profile: str, root: str | Path, split: str | Path,
                  seeds: Sequence[int] = (0,), fluid=None, rounds: int = 4,
                  progress: bool = False) -> tuple[dict[int, dict[str, dict]], list[Path]]:
    """``({seed: {mode: metrics}}, run folders)`` on one split with a public set: local,
    central, FedAvg and FLuID (``fluid_plans``), each run cached under ``root``."""
    runs: dict[int, dict[str, dict]] = {}
    folders = []
    for seed, mode, cfg, runner, kwargs in fluid_plans(model, profile, split, seeds, fluid, rounds):
        runs.setdefault(seed, {})[mode] = cached_run(cfg, root, progress=progress, runner=runner, **kwargs)
        folders.append(run_folder(cfg, root, **kwargs))
    return runs, folders


def fluid_means(runs: Mapping[int, Mapping[str, dict]], metric: str = "mcc") -> dict[str, float]:
    """Mean over seeds of ``fluid_compare``'s test ``metric``: ``local``, ``central``, ``fedavg``,
    ``student`` (FLuID's), ``hybrid`` (its hybrids' mean over sites) and each study as
    ``"<kind>=<value>"`` (``teachers=1``: the mean over single-teacher students, …)."""
    import numpy as np

    values: dict[str, list[float]] = {}
    for modes in runs.values():
        for mode in ("local", "central", "fedavg"):
            values.setdefault(mode, []).append(modes[mode]["test"][metric])
        fluid = modes["fluid"]
        values.setdefault("student", []).append(fluid["test"][metric])
        if fluid["fluid"].get("hybrid_mean"):
            values.setdefault("hybrid", []).append(fluid["fluid"]["hybrid_mean"]["test"][metric])
        for study in fluid["fluid"].get("studies") or []:
            values.setdefault(f"{study['kind']}={study['value']}", []).append(study["test"][metric])
    return {key: float(np.mean(v)) for key, v in values.items()}
