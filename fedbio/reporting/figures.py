"""The README's figures (``make figures``): each one drawn from runs made here, written as a PNG
beside a CSV of the numbers it shows, into ``docs/img/``.

    python -m fedbio.reporting.figures docs/img --runs runs/figures --overwrite

    label_mix   the sites' label mixes at alpha 0.1, 1 and 100 (the shipped data, seed 0)
    per_site    each site's local model against FedAvg and central (composition model)
    rounds      learning curves: the FedAvg global model round by round, local and central by epoch
    privacy     utility against measured membership leakage, per defence

The runs are the quick profile's composition model, seed 0, FedAvg with four rounds through
the NVFlare simulator, each cached under ``--runs`` (``fedbio.experiments``). A test makes the
CSVs again and compares them with the committed ones: numbers, not PNG bytes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd

from fedbio.errors import FedbioError, Parser

SEED = 0
ROUNDS = 4
ALPHAS = (0.1, 1.0, 100.0)
DPI = 110


def _runs(root: Path) -> dict[str, dict]:
    from fedbio.experiments import compare
    from fedbio.federation import FedConfig

    return compare("composition", "quick", root, (SEED,), {"fedavg": FedConfig(rounds=ROUNDS)})[SEED]


def label_mix_data(root: Path) -> pd.DataFrame:
    """One row per (alpha, site, class): training records, and the split's JS divergence."""
    from fedbio.data.split import SplitConfig, make_split
    from fedbio.paths import shipped

    rows = []
    for alpha in ALPHAS:
        summary = make_split(shipped("scl/deeploc_valtest.fasta"), SplitConfig(alpha=alpha, seed=SEED),
                             hard=shipped("scl/deeploc_setHARD.fasta")).summary()
        rows += [{"alpha": alpha, "site": site, "class": c, "records": n,
                  "js_divergence": summary["js_divergence"]}
                 for site, part in summary["sites"].items() for c, n in part["class_counts"].items()]
    return pd.DataFrame(rows)


def label_mix_draw(df: pd.DataFrame):
    from fedbio.reporting.plots import plot_site_grid

    summaries = {}
    for alpha, part in df.groupby("alpha", sort=False):
        summaries[f"alpha={alpha:g}"] = {
            "classes": list(dict.fromkeys(part["class"])),
            "js_divergence": float(part["js_divergence"].iloc[0]),
            "sites": {site: {"class_counts": dict(zip(p["class"], p["records"], strict=True))}
                      for site, p in part.groupby("site", sort=False)}}
    return plot_site_grid(summaries)


def per_site_data(root: Path) -> pd.DataFrame:
    """Test accuracy (%) of each site's local model, and of the FedAvg and central models."""
    runs = _runs(root)
    rows = [{"model": "local", "site": site, "accuracy": 100 * s["test"]["accuracy"]}
            for site, s in runs["local"]["per_site"].items()]
    rows += [{"model": mode, "site": "all", "accuracy": 100 * runs[mode]["test"]["accuracy"]}
             for mode in ("fedavg", "central")]
    return pd.DataFrame(rows).round(4)


def per_site_draw(df: pd.DataFrame):
    import matplotlib.pyplot as plt

    local = df[df["model"] == "local"]
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    ax.bar(local["site"], local["accuracy"], color="C0", width=0.6, label="the site's own model (local)")
    for mode, label, style in (("fedavg", "FedAvg global model", "-"), ("central", "central (pooled data)", "--")):
        value = df.loc[df["model"] == mode, "accuracy"].item()
        ax.axhline(value, color="C1" if mode == "fedavg" else "grey", ls=style, label=f"{label}: {value:.1f} %")
    ax.set(ylabel="test accuracy (%)", title="composition model, DeepLoc test set, seed 0")
    ax.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def rounds_data(root: Path) -> pd.DataFrame:
    """Validation accuracy (%) while training, against epochs: each site's local model (its own
    validation records), the central model and the FedAvg global model after each round (the
    sites' validation records pooled), a round being ``E / R`` epochs."""
    runs = _runs(root)
    fed = runs["fedavg"]
    per_round = runs["central"]["curves"]["central"][-1]["epoch"] / len(fed["rounds"][1:])
    rows = [{"series": "FedAvg global model", "epoch": r["round"] * per_round,
             "accuracy": 100 * r["global_valid"]["accuracy"]} for r in fed["rounds"]]
    for name, curve in (("central", runs["central"]["curves"]["central"]),
                        *((f"local {site}", c) for site, c in runs["local"]["curves"].items())):
        rows += [{"series": name, "epoch": float(e["epoch"]), "accuracy": 100 * e["valid_accuracy"]}
                 for e in curve]
    return pd.DataFrame(rows).round(4)


def rounds_draw(df: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    for i, (name, part) in enumerate(df.groupby("series", sort=False)):
        if name == "FedAvg global model":
            ax.plot(part["epoch"], part["accuracy"], "o-", color="C1", lw=2, label=f"{name}, per round", zorder=3)
        elif name == "central":
            ax.plot(part["epoch"], part["accuracy"], "--", color="k", lw=1.2, label="central (pooled data)")
        else:
            ax.plot(part["epoch"], part["accuracy"], "-", color=f"C{i + 1}", lw=0.9, alpha=0.7,
                    label=f"{name} (its own validation)")
    ax.set(xlabel="epochs of training", ylabel="validation accuracy (%)",
           title="composition model: learning curves, FedAvg round by round")
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def privacy_data(root: Path) -> pd.DataFrame:
    """``fedbio.experiments.defence_table`` for plain training and three defences: accuracy (%)
    against the membership attack's AUC. The DP-SGD runs seed their noise (``noise_seed``) so
    that the figure can be made again and tested; a seeded noise can be removed by whoever knows
    the seed, so their ``metrics.json`` says they are not private (a real run never seeds it)."""
    from fedbio.experiments import defence_sweep, defence_table
    from fedbio.privacy.attack import AttackConfig
    from fedbio.privacy.config import PrivacyConfig

    defences = {"local": ("local", None), "central": ("central", None), "FedAvg": ("fedavg", None),
                "FedAvg + DP-SGD ε=8": ("fedavg", PrivacyConfig(sgd_clip=1.0, sgd_epsilon=8.0, noise_seed=SEED)),
                "FedAvg + DP-SGD ε=1": ("fedavg", PrivacyConfig(sgd_clip=1.0, sgd_epsilon=1.0, noise_seed=SEED)),
                "FedAvg, share 10 %": ("fedavg", PrivacyConfig(share_fraction=0.1))}
    rows = defence_sweep(defences, "quick", root, seeds=(SEED,), rounds=ROUNDS, attack=AttackConfig(n_boot=200))
    table = defence_table(rows)[["accuracy (%)", "membership AUC"]]
    return table.rename_axis("defence").reset_index().round(4)


def privacy_draw(df: pd.DataFrame):
    from fedbio.reporting.privacy_plots import plot_privacy_utility

    fig = plot_privacy_utility(df.set_index("defence"))
    fig.axes[0].set_title("composition model: utility against measured leakage", fontsize=9)
    fig.tight_layout()
    return fig


FIGURES = {
    "label_mix": (label_mix_data, label_mix_draw),
    "per_site": (per_site_data, per_site_draw),
    "rounds": (rounds_data, rounds_draw),
    "privacy": (privacy_data, privacy_draw),
}


def make_figures(out: str | Path, root: str | Path, names=tuple(FIGURES), overwrite: bool = False,
                 say=print) -> list[Path]:
    """Each figure in ``names`` as ``out/NAME.png`` and ``out/NAME.csv`` (runs cached under
    ``root``). Refuses to replace an existing file unless ``overwrite``."""
    import matplotlib
    import matplotlib.pyplot as plt

    out, root = Path(out), Path(root)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise FedbioError(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    targets = [out / f"{n}.{ext}" for n in names for ext in ("png", "csv")]
    present = [str(p) for p in targets if p.exists()]
    if present and not overwrite:
        raise FedbioError(f"{present[0]}: exists; add --overwrite to replace the figures")
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if existing.is_dir() and not os.access(existing, os.W_OK):
        raise FedbioError(f"{existing}: cannot be written; choose another OUT")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FedbioError(f"{out}: cannot be made a folder ({exc.strerror}); choose another OUT") from None
    matplotlib.use("Agg")
    written = []
    for name in dict.fromkeys(names):
        data, draw = FIGURES[name]
        df = data(root)
        fig = draw(df)
        try:
            df.to_csv(out / f"{name}.csv", index=False)
            fig.savefig(out / f"{name}.png", dpi=DPI, bbox_inches="tight")
        except OSError as exc:
            raise FedbioError(f"{out / name}: cannot be written ({exc.strerror}); choose another OUT") from None
        finally:
            plt.close(fig)
        written += [out / f"{name}.png", out / f"{name}.csv"]
        say(f"{out / name}.png and .csv written")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m fedbio.reporting.figures",
                                     description="Draw the README's figures from runs made here.")
    parser.add_argument("out", type=Path, help="the folder for NAME.png and NAME.csv (docs/img)")
    parser.add_argument("--runs", type=Path, default=Path("runs/figures"), help="the run cache")
    parser.add_argument("--only", nargs="+", default=list(FIGURES), choices=list(FIGURES))
    parser.add_argument("--overwrite", action="store_true", help="replace existing figures")
    args = parser.parse_args(argv)
    try:
        make_figures(args.out, args.runs, args.only, args.overwrite)
    except FedbioError as exc:
        print(f"fedbio: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
