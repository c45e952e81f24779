"""Figures shared by the CLI, the reports and the notebooks (matplotlib, no seaborn)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

PALETTE = plt.get_cmap("tab10")


def plot_site_classes(summary: dict, ax=None, title: str | None = None):
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
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left", frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return fig if fig is not None else ax.figure
