"""``make demo``: the subcellular-location story on the shipped data, printed as tables.

    fedbio demo --out runs/demo [--profile quick|laptop|reference|auto]

Split the shipped DeepLoc data over 3 sites, then train local and central baselines and FedAvg
(NVFlare simulator) for the composition model and the profile's transformer, and print the
results table. Runs are cached
under ``--out``, so a second demo only prints; another non-empty folder is refused. Two demos
writing the same ``--out`` at once: the second stops at once (``OUT.lock``).
"""

from __future__ import annotations

from pathlib import Path

from fedbio.outputs import check_output, hold
from fedbio.paths import data_dir, shipped

ROUNDS = 4   # FedAvg: 4 rounds x E/4 local epochs, the same budget as local and central


def _table(runs: dict[str, dict[str, dict]]) -> str:
    import pandas as pd

    from fedbio.reporting.report import results_table

    parts = {name: results_table(r, digits=None) for name, r in runs.items()}  # rounded once, below
    first = next(iter(parts.values()))
    table = pd.concat({name: t.drop(columns="# samples") for name, t in parts.items()}, axis=1)
    table.insert(0, "# samples", [f"{v:.0f}" if v == v else "" for v in first["# samples"]])
    return table.to_string(float_format=lambda v: f"{v:.1f}")


def run_demo(out: str | Path, overwrite: bool = False, profile: str | None = None) -> int:
    """Split, train, print the table; ``out`` holds the split and the cached runs."""
    from fedbio.training.profiles import resolve_profile

    out = Path(out)
    if not (out / "split" / "summary.json").is_file():  # else an earlier demo: its runs are reused
        check_output(out, overwrite=overwrite, inputs=[data_dir()], kind="demo")
    prof = resolve_profile(profile)
    with hold(out):
        return _demo(out, prof)


def _demo(out: Path, prof) -> int:
    from fedbio.data.split import SplitConfig, make_split, split_table, write_split
    from fedbio.experiments import compare
    from fedbio.federation import FedConfig

    print(f"profile: {prof.name} ({prof.reason})")
    print("\n== 1. Split the shipped DeepLoc data over 3 sites (Dirichlet label skew, alpha 1.0)")
    split = make_split(shipped("scl/deeploc_valtest.fasta"), SplitConfig(sites=3, alpha=1.0, seed=0),
                       hard=shipped("scl/deeploc_setHARD.fasta"))
    if not (out / "split" / "summary.json").is_file():  # an earlier demo wrote the same split
        write_split(split, out / "split")
    print(split_table(split.summary()))

    runs: dict[str, dict[str, dict]] = {}
    models = {"composition": "composition", prof.model.name: None}
    for step, (label, model) in enumerate(models.items(), start=2):
        print(f"\n== {step}. {label}: local (each site alone), central (all data pooled), "
              f"FedAvg ({ROUNDS} rounds in the NVFlare simulator)")
        by_mode = compare(model, prof.name, out / "runs", federated={"fedavg": FedConfig(rounds=ROUNDS)},
                          progress=True)[0]
        runs[label] = {"local": by_mode["local"], "central": by_mode["central"], "FedAvg": by_mode["fedavg"]}
    majority = runs["composition"]["central"]["majority_rate"]
    print("\n== Results: test accuracy (%) of the model each site ends with "
          f"(DeepLoc test set, 2,768 proteins; majority class {100 * majority:.1f} %)")
    print(_table(runs))
    if prof.name == "quick":
        print("\nquick profile: the transformer is a tiny randomly initialised ESM-2, a stand-in for "
              "the mechanics.\nWith real weights (profile reference, ESM-2 650M) the reference "
              "reports local 78.8 % and FedAvg 81.7 %.")
    print(f"\nrun folders (metrics.json, models, TensorBoard logs): {out / 'runs'}/\n"
          f"full report with intervals and plots: fedbio report {out / 'runs'}/* --out {out / 'report'}")
    return 0
