"""Figures shared by the CLI, the reports and the notebooks (matplotlib, no seaborn).

Functions that take ``ax`` draw on it when given one; all return the figure. The
data-exploration figures take the tables of :mod:`fedbio.data.explore`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np

if TYPE_CHECKING:  # pandas only for hints: the CLI's split command imports this module
    import pandas as pd

PALETTE = plt.get_cmap("tab10")


def plot_site_classes(summary: dict, ax=None, title: str | None = None, legend: bool = True):
    """Per-site stacked bars of training records per class, from a split ``summary``."""
    classes = summary["classes"]
    sites = list(summary["sites"])
    counts = np.array([[summary["sites"][s]["class_counts"][c] for c in classes] for s in sites])
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(sites), 3.6))
    bottom = np.zeros(len(sites))
    for j, c in enumerate(classes):
        ax.bar(sites, counts[:, j], bottom=bottom, label=c, color=PALETTE(j % 10), width=0.7)
        bottom += counts[:, j]
    ax.set_ylabel("training records")
    ax.set_title(title or f"{summary['partition']} alpha={summary['alpha']}  "
                 f"JS={summary['js_divergence']:.3f}", fontsize=10)
    if legend:
        ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left", frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return fig if fig is not None else ax.figure


def plot_site_grid(summaries: Mapping[str, dict], sharey: bool = True):
    """Several split summaries side by side (one axis each, ``plot_site_classes``), one legend."""
    fig, axes = plt.subplots(1, len(summaries), figsize=(3.1 * len(summaries) + 1.8, 3.6),
                             sharey=sharey, squeeze=False)
    for ax, (title, summary) in zip(axes[0], summaries.items(), strict=True):
        plot_site_classes(summary, ax=ax, title=f"{title}\nJS={summary['js_divergence']:.3f}",
                          legend=False)
        if ax is not axes[0, 0]:
            ax.set_ylabel("")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5),
               frameon=False)
    fig.tight_layout()
    return fig


def plot_class_counts(table: pd.DataFrame, ax=None, share: bool = True):
    """Grouped horizontal bars per class for each column of ``explore.class_table``.

    With ``share=True`` each group is shown as percent of its own records, so groups of
    different size can be compared.
    """
    table = table.drop(index="total", errors="ignore")
    values = 100 * table / table.sum() if share else table
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 0.42 * len(table) + 1.0))
    height = 0.8 / len(values.columns)
    y = np.arange(len(values))
    for j, col in enumerate(values.columns):
        ax.barh(y + (j - (len(values.columns) - 1) / 2) * height, values[col], height=height,
                label=f"{col} (n={int(table[col].sum()):,})", color=PALETTE(j % 10))
    ax.set_yticks(y, values.index, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("% of records" if share else "records")
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    return fig if fig is not None else ax.figure


def plot_lengths(groups: Mapping[str, Sequence], limit: int = 512, ax=None, bins: int = 60):
    """Histogram of sequence lengths per group on a log-x axis, with ``limit`` marked.

    ``groups`` maps a name to records (anything with a ``.sequence``); the line at ``limit``
    shows what a drop-longer-sequences policy would throw away.
    """
    lengths = {name: np.array([len(r.sequence) for r in recs]) for name, recs in groups.items()}
    every = np.concatenate(list(lengths.values()))
    edges = np.geomspace(every.min(), every.max() + 1, bins + 1)
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for j, (name, values) in enumerate(lengths.items()):
        longer = 100 * (values > limit).mean()
        ax.hist(values, bins=edges, histtype="step", linewidth=1.5, color=PALETTE(j % 10),
                label=f"{name} (n={len(values):,}; {longer:.0f} % > {limit})")
    ax.set_xscale("log")
    ax.axvline(limit, color="black", linestyle="--", linewidth=1)
    ax.set_ylim(top=ax.get_ylim()[1] * 1.35)   # room for the legend above the histograms
    ax.text(limit / 1.08, 0.97, f"{limit} residues", transform=ax.get_xaxis_transform(),
            va="top", ha="right", fontsize=8)
    ax.set_xlabel("sequence length (residues, log scale)")
    ax.set_ylabel("records")
    ax.legend(fontsize=8, frameon=False, loc="upper right")
    ax.spines[["top", "right"]].set_visible(False)
    return fig if fig is not None else ax.figure


def plot_alpha_sweep(df: pd.DataFrame, ax=None):
    """JS divergence against alpha (log x): one dot per seed, the mean over seeds as a line.

    ``df`` is the table from ``explore.alpha_sweep`` (columns ``alpha``, ``seed``,
    ``js_divergence``).
    """
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 3.0))
    mean = df.groupby("alpha")["js_divergence"].mean()
    ax.plot(mean.index, mean.values, color="black", linewidth=1.5, marker="o", label="mean")
    for j, (seed, part) in enumerate(df.groupby("seed")):
        ax.scatter(part["alpha"], part["js_divergence"], s=18, alpha=0.7,
                   color=PALETTE((j + 1) % 10), label=f"seed {seed}")
    ax.set_xscale("log")
    ax.set_xlabel("Dirichlet alpha (log scale)")
    ax.set_ylabel("mean pairwise JS divergence")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return fig if fig is not None else ax.figure
