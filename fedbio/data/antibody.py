"""Antibody developability: assay tables, one input string per antibody, and split folders.

    from fedbio.data.antibody import load_antibody_table, make_antibody_split, task_summary
    table = load_antibody_table("jain")           # one row per distinct (VH, VL) pair
    make_antibody_split("runs/ab-multitask", setup="multitask", seed=0)
    make_antibody_split("runs/ab-alltasks", setup="alltasks", sites=3, alpha=1.0, seed=0)
    task_summary("runs/ab-multitask")

The data side of multi-task federated regression on antibodies, after NVFlare's AMPLIFY example
(``multitask``: each site holds one assay; ``alltasks``: every site holds every assay, with label
skew). Plain Python, numpy and pandas; nothing here imports NVFlare or torch.

Tasks (``TASKS``; the files are in ``data/antibody/``, see its README for provenance and licences):

=================  ======================================  ================================  ==========
task               file                                    column                            unit
=================  ======================================  ================================  ==========
thermostability    wittrup2017.csv (Jain et al. 2017)      Fab Tm by DSF (°C)                °C
expression         wittrup2017.csv                         HEK Titer (mg/L)                  mg/L
aggregation        wittrup2017.csv                         HIC Retention Time (Min)a         min
polyreactivity     wittrup2017.csv                         PSR SMP Score (0-1)               score 0-1
immunogenicity     marks2021humanization_immunogenicity    %ADA response                     % patients
=================  ======================================  ================================  ==========

``source="jain"`` gives those five (137 clinical-stage antibodies from Jain et al. 2017, PNAS
114:944, plus 211 distinct antibodies with clinical anti-drug-antibody rates from Marks et al.
2021; 100 antibodies are in both, 248 distinct in all). ``source="tap"`` is the second option:
the 241 antibodies of the Therapeutic Antibody Profiler table (Raybould et al. 2019, PNAS
116:4025; TDC ``single_pred.Develop`` "TAP", as NVFlare ships it) with its five metrics
``cdr_length``, ``psh``, ``ppc``, ``pnc`` and ``sfvcsp`` as tasks. TAP values are *computed* from
modelled structures, not measured.

Aggregation is HIC retention time: hydrophobic-interaction chromatography retention is the
continuous read-out (135 distinct values of 137) of the surface hydrophobicity that drives
aggregation, and Jain et al. group it with SMAC and SGAC-SINS as the self-association /
aggregation-propensity assays. SGAC-SINS AS100 measures the same propensity but has only nine
levels in 100 mM steps, censored at both ends (21 antibodies at 0 mM, 14 at the 1000 mM
ceiling): a poor regression target. Two antibodies sit at 25.0 min, the end of the HIC gradient
(they did not elute); they are kept at 25.0.

FLAb's *binding* set (DMS Kd data, one of the six tasks of NVFlare's AMPLIFY example) is not
available here: no FLAb binding file was copied (see ``data/antibody/README.md``). The other FLAb
task folders are represented by the Jain assays they contain.

**Input.** A model reads one string per antibody: heavy chain, the (G4S)3 linker
``GGGGSGGGGSGGGGS`` (``LINKER``), light chain (``join_chains``), as in a single-chain Fv. ESM-2's
33-token vocabulary has no chain-separator token (its ``.`` and ``-`` are alignment symbols).
AMPLIFY's vocabulary does list a ``|`` token, and NVFlare's AMPLIFY example joins the chains with
it, but ESM-2's tokenizer reads ``|`` as ``<unk>`` and fedbio.data.records rejects it as a letter outside
the protein alphabet. A flexible peptide linker keeps the input in the protein alphabet, so both
models and every reader here take it unchanged.

**Identity.** An antibody is its (VH, VL) pair, after removing whitespace and upper-casing; its
id is ``ab-`` plus the first 10 hex digits of the SHA-1 of ``VH/VL`` (``antibody_id``), the same
in every file and task. Repeated pairs inside one task (Marks et al. has 6 pairs twice, with
different %ADA values) are merged by the mean; the table's ``attrs["notes"]`` and
``tasks.json`` say so.

**Held out by antibody across all tasks.** One seeded assignment sends every distinct antibody to
train, valid or test (stratified by which tasks it has values for, so every task gets about the
requested fractions). No antibody in any task's training or validation data appears in any
task's test data; ``make_antibody_split`` checks it before writing.

**Split folder** (``make_antibody_split``)::

    tasks.json                 setup, source, seed, linker, tasks{name: column, unit,
                               source_file, n_train, n_valid, n_test}, sites{site: [tasks]}, ...
    site-<name>/train.csv      id,sequence,label,task   (label in original units)
    site-<name>/valid.csv
    test.csv                   every task's test rows

``multitask``: one site per task, ``site-<task>``, holding that task's train and valid rows.
``alltasks``: ``site-1`` .. ``site-N``; each task's train and valid rows are spread over every
site with label skew: the task's labels are cut into ``n_bins`` quantile bins (tied values share a
bin, so zero-heavy PSR gets three bins) and each bin draws its own Dirichlet(alpha) proportions
over the sites from the one seeded generator, as :mod:`fedbio.data.split` does per class. Every site
gets at least ``min_site_rows`` training rows and one validation row of every task (redrawn up to
``max_tries`` times). An antibody's different assays may sit at different sites; none is in test.

Same seed, same bytes. Standardisation for training is the training code's job:
``standardise`` gives each task's mean and standard deviation from training rows only.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedbio.data.digests import file_md5
from fedbio.data.records import PROTEIN_ALPHABET
from fedbio.data.split import _cuts, mean_js_divergence
from fedbio.errors import DataError, FedbioError
from fedbio.outputs import output_dir
from fedbio.paths import data_dir

LINKER = "GGGGS" * 3   # (G4S)3, between the heavy and the light chain
SOURCES = ("jain", "tap")
SETUPS = ("multitask", "alltasks")
PARTS = ("train", "valid", "test")
CSV_COLUMNS = ("id", "sequence", "label", "task")

JAIN_FILE = "wittrup2017.csv"
MARKS_FILE = "marks2021humanization_immunogenicity.csv"
TAP_FILE = "tap.tab"


@dataclass(frozen=True)
class AssayTask:
    """One regression task: a single assay column of one source file."""

    source: str        # "jain" (Jain/FLAb + Marks) or "tap"
    source_file: str   # file name under data/antibody/
    column: str        # header of the value column in that file
    unit: str
    why: str


TASKS: dict[str, AssayTask] = {
    "thermostability": AssayTask(
        "jain", JAIN_FILE, "Fab Tm by DSF (°C)", "°C",
        "Fab melting temperature by differential scanning fluorimetry: the unfolding assay "
        "behind FLAb's thermostability task."),
    "expression": AssayTask(
        "jain", JAIN_FILE, "HEK Titer (mg/L)", "mg/L",
        "IgG titer after transient expression in HEK293 cells: FLAb's expression task "
        "(6.6-277 mg/L, right-skewed)."),
    "aggregation": AssayTask(
        "jain", JAIN_FILE, "HIC Retention Time (Min)a", "min",
        "Hydrophobic-interaction chromatography retention: a continuous read-out of the surface "
        "hydrophobicity that drives aggregation (SGAC-SINS has only 9 censored levels)."),
    "polyreactivity": AssayTask(
        "jain", JAIN_FILE, "Poly-Specificity Reagent (PSR) SMP Score (0-1)", "score (0-1)",
        "Binding to a soluble membrane-protein reagent: the standard polyreactivity assay "
        "(72 of 137 antibodies score 0)."),
    "immunogenicity": AssayTask(
        "jain", MARKS_FILE, "%ADA response", "% of patients",
        "Share of treated patients raising anti-drug antibodies (Marks et al. 2021; "
        "Prihoda et al.): FLAb's immunogenicity task, the only clinical read-out."),
    "cdr_length": AssayTask(
        "tap", TAP_FILE, "CDR_Length", "residues",
        "TAP metric 1: total length of the six CDRs; long CDRs flag developability risk."),
    "psh": AssayTask(
        "tap", TAP_FILE, "PSH", "score",
        "TAP metric 2: patches of surface hydrophobicity around the CDRs (aggregation risk)."),
    "ppc": AssayTask(
        "tap", TAP_FILE, "PPC", "score",
        "TAP metric 3: patches of positive charge around the CDRs (polyreactivity, clearance)."),
    "pnc": AssayTask(
        "tap", TAP_FILE, "PNC", "score",
        "TAP metric 4: patches of negative charge around the CDRs."),
    "sfvcsp": AssayTask(
        "tap", TAP_FILE, "SFvCSP", "e^2",
        "TAP metric 5: structural Fv charge symmetry, the product of VH and VL net charges "
        "(negative = opposite charges, a viscosity risk)."),
}

BINDING_NOTE = ("FLAb's binding set (DMS Kd data) is not available here: no FLAb binding file "
                "was copied, so there is no binding task.")


def tasks_for(source: str) -> list[str]:
    """Task names of one source, in ``TASKS`` order."""
    _check_source(source)
    return [name for name, task in TASKS.items() if task.source == source]


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise FedbioError(f"antibody source must be one of {', '.join(SOURCES)}, not {source!r}")


# ---------------------------------------------------------------------------------------------
# chains and identity


def normalise_chain(text: str) -> str:
    """A chain as compared and written: whitespace removed, upper case."""
    return "".join(str(text).split()).upper()


def join_chains(vh: str, vl: str) -> str:
    """The model input: heavy chain + (G4S)3 linker + light chain."""
    return normalise_chain(vh) + LINKER + normalise_chain(vl)


def antibody_id(vh: str, vl: str) -> str:
    """A stable id for the (VH, VL) pair: ``ab-`` + 10 hex digits of SHA-1 of ``VH/VL``."""
    key = f"{normalise_chain(vh)}/{normalise_chain(vl)}"
    return "ab-" + hashlib.sha1(key.encode("ascii")).hexdigest()[:10]


# ---------------------------------------------------------------------------------------------
# reading the source files (every problem: DataError with file and line)


@dataclass(frozen=True)
class _Measure:
    line: int
    name: str
    vh: str
    vl: str
    values: dict[str, float]


def _rows(path: Path, required: list[str], delimiter: str = ",") -> Iterator[tuple[int, dict]]:
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            try:
                header = next(reader)
            except StopIteration:
                raise DataError(path, "file is empty") from None
            names = [h.strip().lstrip("\ufeff") for h in header]
            missing = [c for c in required if c not in names]
            if missing:
                raise DataError(path, f"header lacks column(s) {missing}", 1)
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(names):
                    raise DataError(path, f"row has {len(row)} fields, the header has "
                                    f"{len(names)}", reader.line_num)
                yield reader.line_num, dict(zip(names, row, strict=True))
    except UnicodeDecodeError:
        raise DataError(path, "not UTF-8 text") from None
    except csv.Error as err:
        raise DataError(path, f"not a valid table ({err})") from None


def _chain(path: Path, line: int, what: str, text: str) -> str:
    seq = normalise_chain(text)
    if not seq:
        raise DataError(path, f"missing {what}", line)
    bad = sorted(set(seq) - PROTEIN_ALPHABET)
    if bad:
        shown = ", ".join(repr(c) for c in bad[:5])
        raise DataError(path, f"{what} has letters that are not amino acids ({shown})", line)
    return seq


def _value(path: Path, line: int, column: str, text: str) -> float:
    text = text.strip()
    if not text:
        raise DataError(path, f"missing value in column {column!r}", line)
    try:
        value = float(text)
    except ValueError:
        raise DataError(path, f"value {text!r} in column {column!r} is not a number", line) from None
    if not math.isfinite(value):
        raise DataError(path, f"value {text!r} in column {column!r} is not a finite number", line)
    return value


def _read_jain(path: Path) -> Iterator[_Measure]:
    tasks = [t for t in tasks_for("jain") if TASKS[t].source_file == JAIN_FILE]
    columns = [TASKS[t].column for t in tasks]
    for line, row in _rows(path, ["Name", "VH", "VL", *columns]):
        vh = _chain(path, line, "heavy chain (column 'VH')", row["VH"])
        vl = _chain(path, line, "light chain (column 'VL')", row["VL"])
        values = {t: _value(path, line, TASKS[t].column, row[TASKS[t].column]) for t in tasks}
        yield _Measure(line, row["Name"].strip(), vh, vl, values)


def _read_marks(path: Path) -> Iterator[_Measure]:
    column = TASKS["immunogenicity"].column
    for line, row in _rows(path, ["heavy", "light", column]):
        vh = _chain(path, line, "heavy chain (column 'heavy')", row["heavy"])
        vl = _chain(path, line, "light chain (column 'light')", row["light"])
        yield _Measure(line, "", vh, vl, {"immunogenicity": _value(path, line, column, row[column])})


# X holds a Python-list string: ['VH'\n 'VL'] (a literal backslash-n, then a space)
_TAP_CHAINS = re.compile(r"\[\s*'([^']*)'\s*(?:\\n)?\s*'([^']*)'\s*\]")


def _read_tap(path: Path) -> Iterator[_Measure]:
    tasks = tasks_for("tap")
    for line, row in _rows(path, ["X", "ID", *(TASKS[t].column for t in tasks)], delimiter="\t"):
        match = _TAP_CHAINS.fullmatch(row["X"].strip())
        if match is None:
            raise DataError(path, "column 'X' does not hold two chains as ['VH'\\n 'VL']", line)
        vh = _chain(path, line, "heavy chain (first in column 'X')", match.group(1))
        vl = _chain(path, line, "light chain (second in column 'X')", match.group(2))
        values = {t: _value(path, line, TASKS[t].column, row[TASKS[t].column]) for t in tasks}
        yield _Measure(line, row["ID"].strip(), vh, vl, values)


_READERS = {"jain": ((JAIN_FILE, _read_jain), (MARKS_FILE, _read_marks)),
            "tap": ((TAP_FILE, _read_tap),)}


def antibody_dir() -> Path:
    """The folder with the shipped antibody files (``data/antibody/``)."""
    return data_dir() / "antibody"



def load_antibody_table(source: str = "jain", root: str | Path | None = None) -> pd.DataFrame:
    """One row per distinct antibody: ``id, name, vh, vl, sequence`` and one column per task.

    ``root`` is the folder holding the source files (default ``data/antibody/``). A task's
    column is NaN where the antibody was not measured; repeated (VH, VL) pairs inside a task
    are merged by the mean. ``attrs``: ``notes`` (what was merged), ``files`` (md5 of each
    file read), ``rows`` (rows read per task). Raises :class:`DataError` naming the file and
    line on a missing chain, letters that are not amino acids, or a value that is not a number.
    """
    _check_source(source)
    root = Path(root) if root is not None else antibody_dir()
    tasks = tasks_for(source)
    names: dict[tuple[str, str], str] = {}
    values: dict[tuple[str, str], dict[str, list[float]]] = {}
    rows: dict[str, int] = defaultdict(int)
    files = {}
    for filename, reader in _READERS[source]:
        path = root / filename
        for m in reader(path):
            pair = (m.vh, m.vl)
            if m.name and not names.get(pair):
                names[pair] = m.name
            entry = values.setdefault(pair, defaultdict(list))
            for task, value in m.values.items():
                entry[task].append(value)
                rows[task] += 1
        files[filename] = file_md5(path)
    notes = []
    for task in tasks:
        repeated = [v[task] for v in values.values() if len(v.get(task, ())) > 1]
        if repeated:
            notes.append(
                f"{task}: {len(repeated)} (VH, VL) pairs appear more than once in "
                f"{TASKS[task].source_file} ({sum(len(r) for r in repeated)} rows); "
                "each pair's values are merged by the mean")
    records = []
    for (vh, vl), entry in values.items():
        row = {"id": antibody_id(vh, vl), "name": names.get((vh, vl), ""), "vh": vh, "vl": vl,
               "sequence": join_chains(vh, vl)}
        for task in tasks:
            row[task] = float(np.mean(entry[task])) if task in entry else np.nan
        records.append(row)
    table = pd.DataFrame.from_records(records, columns=["id", "name", "vh", "vl", "sequence",
                                                        *tasks])
    if table["id"].duplicated().any():   # a SHA-1 prefix collision: never seen, but never silent
        raise FedbioError("two different (VH, VL) pairs share an antibody id")
    table = table.sort_values("id", kind="stable").reset_index(drop=True)
    table.attrs.update(source=source, notes=notes, files=files, rows=dict(rows))
    return table


# ---------------------------------------------------------------------------------------------
# the split


def quantile_bins(values, n_bins: int = 4) -> np.ndarray:
    """Bin index (0..) of each value: equal-count bins by rank, tied values in one bin.

    A value's bin comes from the first rank its value holds, so a run of ties (72 zero PSR
    scores) stays in one bin and fewer than ``n_bins`` bins can come out. Indices are dense.
    """
    v = np.asarray(values, float)
    n = len(v)
    if n == 0:
        return np.zeros(0, int)
    order = np.argsort(v, kind="stable")
    ranked = v[order]
    first = np.searchsorted(ranked, ranked, side="left")
    _, dense = np.unique((first * n_bins) // n, return_inverse=True)
    bins = np.empty(n, int)
    bins[order] = dense
    return bins


@dataclass
class AntibodySplit:
    """A finished split in memory: what ``write_antibody_split`` puts on disk.

    Rows are ``(id, sequence, label, task)`` tuples, sorted by task (``TASKS`` order) and id.
    """

    meta: dict                                   # the content of tasks.json
    sites: dict[str, dict[str, list[tuple]]]     # site -> {"train": rows, "valid": rows}
    test: list[tuple]


def _assign(table: pd.DataFrame, tasks: list[str], rng: np.random.Generator,
            test_frac: float, valid_frac: float) -> dict[str, str]:
    """Antibody id -> train / valid / test, stratified by the set of tasks each antibody has."""
    present = table[tasks].notna().to_numpy()
    groups: dict[tuple, list[str]] = defaultdict(list)
    for aid, sig in zip(table["id"], map(tuple, present), strict=True):
        groups[sig].append(aid)
    parts = {}
    for sig in sorted(groups, reverse=True):
        ids = sorted(groups[sig])
        n = len(ids)
        n_test = int(round(test_frac * n))
        n_valid = min(int(round(valid_frac * n)), n - n_test)
        order = rng.permutation(n)
        for rank, i in enumerate(order):
            parts[ids[i]] = "test" if rank < n_test else "valid" if rank < n_test + n_valid else "train"
    return parts


def _skew(train: list[tuple], valid: list[tuple], k: int, alpha: float, n_bins: int,
          min_train: int, max_tries: int, rng: np.random.Generator, task: str):
    """Spread one task's train and valid rows over k sites, per-bin Dirichlet(alpha) proportions."""
    min_valid = min(1, len(valid) // k)
    if len(train) < k * min_train:
        raise FedbioError(f"task {task}: {len(train)} training rows cannot give {k} sites at least "
                          f"{min_train} each; lower min_site_rows or use fewer sites")
    bins = quantile_bins([r[2] for r in train + valid], n_bins)
    t_bins, v_bins = bins[: len(train)], bins[len(train):]
    n_found = int(bins.max()) + 1
    for _ in range(max_tries):
        t_parts: list[list[int]] = [[] for _ in range(k)]
        v_parts: list[list[int]] = [[] for _ in range(k)]
        for b in range(n_found):          # each bin draws its own proportions: real label skew
            props = rng.dirichlet([alpha] * k)
            for labels, parts in ((t_bins, t_parts), (v_bins, v_parts)):
                idx = rng.permutation(np.flatnonzero(labels == b))
                for site, chunk in enumerate(np.split(idx, _cuts(len(idx), props))):
                    parts[site].extend(chunk.tolist())
        if min(map(len, t_parts)) >= min_train and min(map(len, v_parts)) >= min_valid:
            counts = [np.bincount(t_bins[p], minlength=n_found).tolist() for p in t_parts]
            return ([sorted(train[i] for i in p) for p in t_parts],
                    [sorted(valid[i] for i in p) for p in v_parts], bins, counts)
    raise FedbioError(
        f"task {task}: no label-skew draw with alpha={alpha} gave every one of {k} sites at least "
        f"{min_train} training and {min_valid} validation rows in {max_tries} draws; raise alpha, "
        "lower min_site_rows or use fewer sites")


def build_antibody_split(setup: str = "multitask", source: str = "jain", seed: int = 0,
                         test_frac: float = 0.2, valid_frac: float = 0.15, sites: int = 3,
                         alpha: float = 1.0, *, n_bins: int = 4, min_site_rows: int = 3,
                         max_tries: int = 100, root: str | Path | None = None) -> AntibodySplit:
    """Read, validate and split; nothing is written. Arguments as in ``make_antibody_split``."""
    if setup not in SETUPS:
        raise FedbioError(f"setup must be one of {', '.join(SETUPS)}, not {setup!r}")
    _check_source(source)
    if not 0 < test_frac < 1 or not 0 <= valid_frac < 1 or test_frac + valid_frac >= 1:
        raise FedbioError(f"need 0 < test_frac, 0 <= valid_frac and test_frac + valid_frac < 1 "
                          f"(got {test_frac}, {valid_frac})")
    if setup == "alltasks" and (sites < 1 or not alpha > 0 or n_bins < 1):
        raise FedbioError(f"alltasks needs sites >= 1, alpha > 0, n_bins >= 1 "
                          f"(got {sites}, {alpha}, {n_bins})")
    table = load_antibody_table(source, root)
    tasks = tasks_for(source)
    rng = np.random.default_rng(seed)
    part_of = _assign(table, tasks, rng, test_frac, valid_frac)

    rows: dict[str, dict[str, list[tuple]]] = {}
    for task in tasks:
        sub = table[table[task].notna()]
        rows[task] = {p: [] for p in PARTS}
        for aid, seq, value in zip(sub["id"], sub["sequence"], sub[task], strict=True):
            rows[task][part_of[aid]].append((aid, seq, float(value), task))
        if not rows[task]["train"] or not rows[task]["test"] or (valid_frac > 0
                                                                 and not rows[task]["valid"]):
            raise FedbioError(f"task {task}: too few antibodies for test_frac={test_frac}, "
                              f"valid_frac={valid_frac}")

    site_rows: dict[str, dict[str, list[tuple]]] = {}
    skew = {}
    if setup == "multitask":
        for task in tasks:
            site_rows[f"site-{task}"] = {"train": rows[task]["train"], "valid": rows[task]["valid"]}
    else:
        names = [f"site-{i}" for i in range(1, sites + 1)]
        site_rows = {s: {"train": [], "valid": []} for s in names}
        for task in tasks:
            train, valid, bins, counts = _skew(rows[task]["train"], rows[task]["valid"], sites,
                                               alpha, n_bins, min_site_rows, max_tries, rng, task)
            for s, t_rows, v_rows in zip(names, train, valid, strict=True):
                site_rows[s]["train"].extend(t_rows)
                site_rows[s]["valid"].extend(v_rows)
            pool = np.array([r[2] for r in rows[task]["train"] + rows[task]["valid"]])
            lower = [float(pool[bins == b].min()) for b in range(int(bins.max()) + 1)]
            skew[task] = {"bin_lower_bounds": lower,
                          "train_bin_counts": dict(zip(names, counts, strict=True)),
                          "js_divergence": round(mean_js_divergence(counts), 6)}
    test = [r for task in tasks for r in rows[task]["test"]]

    # held out by antibody across all tasks: no test antibody anywhere in train or valid
    seen = {r[0] for parts in site_rows.values() for part in parts.values() for r in part}
    leaked = seen & {r[0] for r in test}
    if leaked:
        raise AssertionError(f"test antibodies in training data: {sorted(leaked)[:5]}")
    train_ids = {r[0] for parts in site_rows.values() for r in parts["train"]}
    valid_ids = {r[0] for parts in site_rows.values() for r in parts["valid"]}
    if train_ids & valid_ids:
        raise AssertionError("an antibody is in both train and valid")

    order = {t: i for i, t in enumerate(tasks)}
    for parts in site_rows.values():
        for part in parts:
            parts[part] = sorted(parts[part], key=lambda r: (order[r[3]], r[0]))
    table_notes = table.attrs["notes"]
    meta = {
        "setup": setup,
        "source": source,
        "seed": seed,
        "linker": LINKER,
        "tasks": {t: {"column": TASKS[t].column, "unit": TASKS[t].unit,
                      "source_file": TASKS[t].source_file,
                      "n_train": len(rows[t]["train"]), "n_valid": len(rows[t]["valid"]),
                      "n_test": len(rows[t]["test"])} for t in tasks},
        "sites": {s: sorted({r[3] for p in parts.values() for r in p}, key=order.get)
                  for s, parts in site_rows.items()},
        "site_counts": {s: {t: {"n_train": sum(r[3] == t for r in parts["train"]),
                                "n_valid": sum(r[3] == t for r in parts["valid"])}
                            for t in tasks if any(r[3] == t for p in parts.values() for r in p)}
                        for s, parts in site_rows.items()},
        "antibodies": {p: sum(v == p for v in part_of.values()) for p in PARTS},
        "test_frac": test_frac,
        "valid_frac": valid_frac,
        "alpha": alpha if setup == "alltasks" else None,
        "n_bins": n_bins if setup == "alltasks" else None,
        "min_site_rows": min_site_rows if setup == "alltasks" else None,
        "label_skew": skew or None,
        "source_md5": table.attrs["files"],
        "notes": [*table_notes,
                  "held out by antibody across all tasks: no antibody in any task's train or "
                  "valid rows is in any task's test rows",
                  "input = VH + linker + VL; labels in original units"]
                 + ([BINDING_NOTE] if source == "jain" else
                    ["TAP labels are computed from modelled structures, not measured"]),
    }
    return AntibodySplit(meta, site_rows, test)


def _write_rows(path: Path, rows: list[tuple]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows((a, s, repr(float(v)), t) for a, s, v, t in rows)


def save_antibody_split(split: AntibodySplit, folder: str | Path) -> Path:
    """Write the split's files into ``folder`` (created if needed; a run's own ``split/``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for site, parts in split.sites.items():
        (folder / site).mkdir()
        _write_rows(folder / site / "train.csv", parts["train"])
        _write_rows(folder / site / "valid.csv", parts["valid"])
    _write_rows(folder / "test.csv", split.test)
    (folder / "tasks.json").write_text(json.dumps(split.meta, indent=1, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    return folder


def write_antibody_split(split: AntibodySplit, out: str | Path, overwrite: bool = False) -> Path:
    """Write the split folder by the output rule of ``fedbio.outputs``; an existing folder is
    replaced only with ``overwrite=True``."""
    with output_dir(out, overwrite=overwrite, kind="split") as tmp:
        save_antibody_split(split, tmp)
    return Path(out)


def make_antibody_split(out: str | Path, setup: str = "multitask", source: str = "jain",
                        seed: int = 0, test_frac: float = 0.2, valid_frac: float = 0.15,
                        sites: int = 3, alpha: float = 1.0, *, n_bins: int = 4,
                        min_site_rows: int = 3, max_tries: int = 100, overwrite: bool = False,
                        root: str | Path | None = None) -> Path:
    """Split the antibody tasks and write the split folder ``out``; returns its path.

    ``setup``: ``multitask`` (one site per task, ``site-<task>``; ``sites``, ``alpha`` and
    ``n_bins`` are not used) or ``alltasks`` (``sites`` sites, each holding every task, with
    Dirichlet(``alpha``) label skew over ``n_bins`` quantile bins per task; every site gets at
    least ``min_site_rows`` training rows and one validation row of each task). ``source``:
    ``jain`` or ``tap``. ``test_frac`` / ``valid_frac``: shares of the distinct antibodies held out
    for test / validation, one assignment for all tasks. The same arguments give byte-identical
    files. Refuses a non-empty ``out`` unless ``overwrite=True``.
    """
    split = build_antibody_split(setup, source, seed, test_frac, valid_frac, sites, alpha,
                                 n_bins=n_bins, min_site_rows=min_site_rows, max_tries=max_tries,
                                 root=root)
    return write_antibody_split(split, out, overwrite)


# ---------------------------------------------------------------------------------------------
# reading a split folder back


def read_split_meta(split_dir: str | Path) -> dict:
    """The split folder's ``tasks.json``."""
    path = Path(split_dir) / "tasks.json"
    if not path.is_file():
        raise FedbioError(f"{split_dir} has no tasks.json (not an antibody split folder)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(path, f"not valid JSON ({err})") from None


def _read_rows(path: Path, tasks: Mapping) -> list[tuple]:
    out = []
    for line, row in _rows(path, list(CSV_COLUMNS)):
        task = row["task"].strip()
        if task not in tasks:
            raise DataError(path, f"unknown task {task!r}; tasks.json lists {list(tasks)}", line)
        seq = _chain(path, line, "sequence", row["sequence"])
        out.append((row["id"].strip(), seq, _value(path, line, "label", row["label"]), task))
    return out


def read_antibody_split(split_dir: str | Path) -> pd.DataFrame:
    """Every row of a split folder: ``site, part, id, sequence, label, task`` (test: site ``""``).

    Validated row by row (file and line on error). ``fedbio.data.records.read_records(path,
    kind="value")`` reads every file of the folder too: it keeps the ``task`` column on each
    record and checks ids per (task, id), since one antibody has one row per task.
    """
    split_dir = Path(split_dir)
    meta = read_split_meta(split_dir)
    frames = []
    for site in meta["sites"]:
        for part in ("train", "valid"):
            rows = _read_rows(split_dir / site / f"{part}.csv", meta["tasks"])
            frames.append(pd.DataFrame(rows, columns=CSV_COLUMNS).assign(site=site, part=part))
    rows = _read_rows(split_dir / "test.csv", meta["tasks"])
    frames.append(pd.DataFrame(rows, columns=CSV_COLUMNS).assign(site="", part="test"))
    table = pd.concat(frames, ignore_index=True)
    return table[["site", "part", *CSV_COLUMNS]]


# ---------------------------------------------------------------------------------------------
# standardisation, summaries, figures


def standardise(train_values):
    """Mean and standard deviation from TRAINING rows only, to standardise regression targets.

    ``train_values``: one task's training labels (array-like) -> ``(mean, std)``; or a mapping
    ``{task: values}`` or a DataFrame with ``task`` and ``label`` columns -> ``{task: (mean,
    std)}``. The standard deviation is the population one (ddof 0, as ``fedbio.data.tasks.LabelCodec``)
    and 1.0 when it is 0. Train on ``(y - mean) / std``; map predictions back with
    ``pred * std + mean`` and report every metric (RMSE, MAE, Spearman) in the original units
    listed in ``TASKS``, so the sites' and the setups' numbers compare directly. Never include
    validation or test rows: their statistics would leak into training.
    """
    if isinstance(train_values, pd.DataFrame):
        if not {"task", "label"} <= set(train_values.columns):
            raise FedbioError("standardise needs a DataFrame with 'task' and 'label' columns")
        return {t: standardise(g["label"]) for t, g in train_values.groupby("task", sort=False)}
    if isinstance(train_values, Mapping):
        return {t: standardise(v) for t, v in train_values.items()}
    values = np.asarray(train_values, float)
    if values.size == 0:
        raise FedbioError("standardise needs at least one training value")
    std = float(values.std())
    return float(values.mean()), (std if std > 0 and math.isfinite(std) else 1.0)


def destandardise(z, mean: float, std: float) -> np.ndarray:
    """Standardised outputs back in original units: ``z * std + mean``."""
    return np.asarray(z, float) * std + mean


def task_summary(split_dir: str | Path, by_site: bool = False) -> pd.DataFrame:
    """Per task and part (train / valid / test): n, mean, sd, min, max in original units.

    ``by_site=True`` adds a ``site`` column and one row per site and part (test has site "").
    """
    meta = read_split_meta(split_dir)
    table = read_antibody_split(split_dir)
    keys = ["task", "site", "part"] if by_site else ["task", "part"]
    out = (table.groupby(keys, sort=False)["label"]
           .agg(n="count", mean="mean", sd="std", min="min", max="max").reset_index())
    task_order = {t: i for i, t in enumerate(meta["tasks"])}
    site_order = {s: i for i, s in enumerate([*meta["sites"], ""])}
    part_order = {p: i for i, p in enumerate(PARTS)}
    sort = [out["task"].map(task_order)]
    if by_site:
        sort.append(out["site"].map(site_order))
    sort.append(out["part"].map(part_order))
    out = out.iloc[np.lexsort(sort[::-1])].reset_index(drop=True)
    out.insert(1, "unit", out["task"].map(lambda t: meta["tasks"][t]["unit"]))
    return out


def plot_task_distributions(split_dir: str | Path, bins: int = 12):
    """One small histogram per task: training labels (all sites) against test labels."""
    import matplotlib.pyplot as plt

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
