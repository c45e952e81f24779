"""Privacy figures: a membership attack's ROC curves, and utility against measured leakage.

    plot_roc({"loss": (member_scores, nonmember_scores)}, "RUN/attack/roc.png")
    plot_privacy_utility(table)            # one point per defence: accuracy vs membership AUC

ROC curves are drawn on log-log axes, as membership-inference papers draw them: what matters is
the left edge (a low false-positive rate), which a linear plot squeezes into a corner.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from fedbio.privacy.membership import roc_auc, roc_curve


def plot_roc(curves: dict, path: str | Path | None = None, title: str = "membership inference"):
    """One ROC curve per attack (``{name: (member scores, non-member scores)}``), log-log,
    with chance as a dashed diagonal; saved to ``path`` when given."""
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    floor = 1.0
    for name, (members, nonmembers) in curves.items():
        fpr, tpr = roc_curve(members, nonmembers)
        floor = min(floor, 1 / max(len(nonmembers), 1), 1 / max(len(members), 1))
        ax.plot(np.maximum(fpr, floor / 2), np.maximum(tpr, floor / 2),
                label=f"{name} (AUC {roc_auc(members, nonmembers):.3f})")
    ax.plot([floor / 2, 1], [floor / 2, 1], "k--", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig


def plot_privacy_utility(table, ax=None, x: str = "membership AUC", y: str = "accuracy (%)"):
    """One point per row of ``table`` (a DataFrame with ``x``, ``y`` and optional ``x sd``,
    ``y sd`` columns, indexed by defence): utility against measured leakage, with error bars."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for i, (name, row) in enumerate(table.iterrows()):
        ax.errorbar(row[x], row[y], xerr=row.get(f"{x} sd", np.nan) if f"{x} sd" in table else None,
                    yerr=row.get(f"{y} sd", np.nan) if f"{y} sd" in table else None, fmt="o",
                    color=plt.get_cmap("tab10")(i % 10), capsize=3, label=str(name))
    ax.axvline(0.5, color="k", ls="--", lw=0.8)
    ax.set_xlabel(f"{x} (0.5: no leakage measured)")
    ax.set_ylabel(y)
    ax.legend(fontsize=7, frameon=False, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.spines[["top", "right"]].set_visible(False)
    if fig is not None:
        fig.tight_layout()
    return fig if fig is not None else ax.figure
