"""What a report writes: ``Report`` (text files and figures, computed before the output folder
exists, then written into it), the Markdown of a table, and the note on mixed runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


class Report:
    """What a report writes: text files and figures, all computed before the output exists."""

    def __init__(self, texts: dict[str, str], figures: dict[str, Callable], summary: str):
        self.texts, self.figures, self.summary = texts, figures, summary

    def write(self, folder: Path) -> list[str]:
        import matplotlib.pyplot as plt

        for name, text in self.texts.items():
            (folder / name).write_text(text)
        for name, draw in self.figures.items():
            fig = draw()
            fig.savefig(folder / name, dpi=110, bbox_inches="tight")
            plt.close(fig)
        return [*self.texts, *self.figures]


def mixed_lines(notes: list[str]) -> list[str]:
    """The results.md paragraph that says the columns are not like for like (--allow-mixed)."""
    if not notes:
        return []
    return ["**Mixed runs (--allow-mixed):** these runs come from different splits, sites or "
            "class lists, so their columns do not compare like for like:", "",
            *(f"- {n}" for n in notes), ""]


def markdown(table) -> str:
    return table.to_markdown() if _has_tabulate() else table.to_string()


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True
