"""Figures of an antibody split folder (``notebooks/05_amplify_multitask``), matplotlib only.

    from fedbio.reporting.antibody_plots import plot_task_distributions
    fig = plot_task_distributions("runs/ab-multitask")

The folder is read with :mod:`fedbio.data.antibody`; labels are drawn in original units. Kept
apart from :mod:`fedbio.reporting.plots`, which the CLI's split command imports without pandas.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from fedbio.data.antibody import read_antibody_split, read_split_meta


def plot_task_distributions(split_dir: str | Path, bins: int = 12):
    """One small histogram per task: training labels (all sites) against test labels."""
    meta = read_split_meta(split_dir)
    table = read_antibody_split(split_dir)
    tasks = list(meta["tasks"])
    cols = min(len(tasks), 5)
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.3 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        sub = table[table["task"] == task]
        train, test = sub.loc[sub["part"] == "train", "label"], sub.loc[sub["part"] == "test", "label"]
        edges = np.histogram_bin_edges(sub["label"], bins=bins)
        ax.hist(train, bins=edges, density=True, alpha=0.55, color="C0", label=f"train ({len(train)})")
        ax.hist(test, bins=edges, density=True, histtype="step", lw=1.6, color="C3",
                label=f"test ({len(test)})")
        ax.set_title(task, fontsize=9)
        ax.set_xlabel(meta["tasks"][task]["unit"], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, frameon=False)
        ax.spines[["top", "right"]].set_visible(False)
    for ax in list(axes.flat)[len(tasks):]:
        ax.set_visible(False)
    axes[0, 0].set_ylabel("density", fontsize=8)
    fig.suptitle(f"{meta['source']} / {meta['setup']}, seed {meta['seed']}", fontsize=9)
    fig.tight_layout()
    return fig
