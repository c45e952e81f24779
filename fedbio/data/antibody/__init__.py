"""Antibody developability: assay tables, one input string per antibody, and split folders.

    from fedbio.data.antibody import load_antibody_table, make_antibody_split, task_summary
    table = load_antibody_table("jain")           # one row per distinct (VH, VL) pair
    make_antibody_split("runs/ab-multitask", setup="multitask", seed=0)
    make_antibody_split("runs/ab-alltasks", setup="alltasks", sites=3, alpha=1.0, seed=0)
    task_summary("runs/ab-multitask")

The data side of multi-task federated regression on antibodies, after NVFlare's AMPLIFY example
(``multitask``: each site holds one assay; ``alltasks``: every site holds every assay, with label
skew). Plain Python, numpy and pandas; nothing here imports NVFlare or torch. The public names
are importable from here (``from fedbio.data import antibody as ab; ab.TASKS``); they live in:

- :mod:`~fedbio.data.antibody.catalogue`: the tasks and their files, the linker, antibody ids;
- :mod:`~fedbio.data.antibody.parsers`: the three source files into one table per source;
- :mod:`~fedbio.data.antibody.splits`: held-out antibodies, ``multitask`` and ``alltasks`` sites;
- :mod:`~fedbio.data.antibody.folder`: the split folder written, read back and summed up;
- :mod:`~fedbio.data.antibody.scaling`: per-task standardisation from training rows only.

The figure of a split's label distributions is
:func:`fedbio.reporting.antibody_plots.plot_task_distributions`.
"""

from __future__ import annotations

from fedbio.data.antibody.catalogue import (
    BINDING_NOTE,
    JAIN_FILE,
    LINKER,
    MARKS_FILE,
    SOURCES,
    TAP_FILE,
    TASKS,
    AssayTask,
    antibody_dir,
    antibody_id,
    join_chains,
    normalise_chain,
    tasks_for,
)
from fedbio.data.antibody.folder import (
    CSV_COLUMNS,
    make_antibody_split,
    read_antibody_split,
    read_split_meta,
    save_antibody_split,
    task_summary,
    write_antibody_split,
)
from fedbio.data.antibody.parsers import load_antibody_table
from fedbio.data.antibody.scaling import destandardise, standardise
from fedbio.data.antibody.splits import (
    PARTS,
    SETUPS,
    AntibodySplit,
    build_antibody_split,
    quantile_bins,
)

__all__ = [
    "BINDING_NOTE", "CSV_COLUMNS", "JAIN_FILE", "LINKER", "MARKS_FILE", "PARTS", "SETUPS",
    "SOURCES", "TAP_FILE", "TASKS", "AntibodySplit", "AssayTask", "antibody_dir", "antibody_id",
    "build_antibody_split", "destandardise", "join_chains", "load_antibody_table",
    "make_antibody_split", "normalise_chain", "quantile_bins", "read_antibody_split",
    "read_split_meta", "save_antibody_split", "standardise", "task_summary", "tasks_for",
    "write_antibody_split",
]
