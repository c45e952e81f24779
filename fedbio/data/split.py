"""Spreading a data set over N sites: pools, label-skew / iid / quantity partitions, split folders.

    fedbio split --fasta data/scl/deeploc_valtest.fasta --hard data/scl/deeploc_setHARD.fasta \
        --sites 3 --alpha 1.0 --seed 0 --out runs/split

Label skew draws each class's own Dirichlet(alpha) proportions over the sites from one seeded
``numpy.random.Generator``, so small alpha gives sites truly different class mixes.
``--public-fraction`` keeps a share of the training pool as unlabelled public.csv (data.public).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from fedbio.data.csvfile import SPLIT_COLUMNS, write_csv, write_split_files
from fedbio.data.digests import file_md5
from fedbio.data.public import PUBLIC_FILE, draw_public, or_public, write_public
from fedbio.data.records import Record, class_list, label_counts, read_records
from fedbio.errors import DataError, FedbioError
from fedbio.outputs import output_dir

POOLS = ("original", "random")
PARTITIONS = ("dirichlet", "iid", "quantity")
RANDOM_POOL_NOTE = (
    "pool 'random' re-splits all records at random: homologous proteins can straddle train and "
    "test, so test scores read higher than on DeepLoc's homology-separated folds (pool 'original')."
)


@dataclass
class SplitConfig:
    sites: int = 3               # number of sites (hospitals, companies, labs)
    alpha: float = 1.0           # Dirichlet concentration: 0.1 = strong skew, 100 = nearly iid
    seed: int = 0
    pool: str = "original"       # original: the file's SET labels; random: re-split everything
    partition: str = "dirichlet"  # dirichlet (label skew) | iid | quantity (size skew only)
    valid_fraction: float = 0.1  # each site's own validation slice, taken from its training data
    test_fraction: float = 0.2   # only for pool 'random'
    min_site_size: int = 20      # every site keeps at least this many training records (after
                                 # its validation slice is taken)
    max_tries: int = 100         # redraws before giving up on min_site_size
    public_fraction: float = 0.0  # of the training pool, kept as unlabelled public.csv (FLuID)

    def check(self) -> None:
        """Refuse settings no split can be made with: one clear FedbioError naming the option."""
        from fedbio.config import check_number, check_seed  # here: the imports above are shared

        _check_whole("--sites", self.sites, low=1)
        check_number("--alpha", self.alpha, low=0, strict=True)
        check_seed(self.seed)
        if self.pool not in POOLS:
            raise FedbioError(f"--pool must be one of {', '.join(POOLS)}, not {self.pool!r}")
        if self.partition not in PARTITIONS:
            raise FedbioError(f"--partition must be one of {', '.join(PARTITIONS)}, "
                              f"not {self.partition!r}")
        # 0 is refused: it writes empty valid.csv files, and run selects each site's model on them
        _check_fraction("--valid-fraction", self.valid_fraction, strict=True,
                        why=" (every site needs validation records: training keeps the epoch that "
                        "scores best on them)")
        _check_fraction("test fraction", self.test_fraction, strict=True)
        _check_whole("--min-site-size", self.min_site_size, low=0)
        _check_whole("max tries", self.max_tries, low=1)
        _check_fraction("--public-fraction", self.public_fraction, strict=False)


def _check_fraction(option: str, value: object, strict: bool, why: str = "") -> None:
    """A finite number from 0 (excluded with ``strict``) up to, not including, 1: a fraction of 1
    would leave nothing on the other side. ``why`` is added to the message."""
    from fedbio.config import check_number

    try:
        check_number(option, value, low=0, high=1, strict=strict)
        ok = value != 1
    except FedbioError:
        ok = False
    if not ok:
        raise FedbioError(f"{option} must be a finite number {'>' if strict else '>='} 0 and < 1, "
                          f"not {value!r}{why}")


def _check_whole(option: str, value: object, low: int) -> None:
    """A whole number (an int, not 3.0: it counts sites or records) of at least ``low``."""
    from fedbio.config import check_number

    check_number(option, value, low=low, integer=True)
    if not isinstance(value, int):
        raise FedbioError(f"{option} must be a whole number >= {low}, not {value!r}")


@dataclass
class Split:
    """A finished split, in memory: what ``write_split`` puts on disk."""

    config: SplitConfig
    classes: list[str]
    sites: dict[str, dict[str, list[Record]]]   # site -> {"train": [...], "valid": [...]}
    test: list[Record]
    test_hard: list[Record] | None
    source: dict[str, str]
    public: list[Record] | None = None   # unlabelled transfer set (--public-fraction), file order

    def summary(self) -> dict:
        cfg = self.config
        sites = {
            name: {
                "n_train": len(parts["train"]),
                "n_valid": len(parts["valid"]),
                "class_counts": label_counts(parts["train"], self.classes),
            }
            for name, parts in self.sites.items()
        }
        dists = [list(s["class_counts"].values()) for s in sites.values()]
        out = {
            "pool": cfg.pool,
            "partition": cfg.partition,
            "alpha": None if cfg.partition == "iid" else cfg.alpha,
            "seed": cfg.seed,
            "valid_fraction": cfg.valid_fraction,
            "validation": validation_note(cfg.valid_fraction),
            "classes": self.classes,
            "sites": sites,
            "n_test": len(self.test),
            "n_test_hard": None if self.test_hard is None else len(self.test_hard),
            "js_divergence": round(mean_js_divergence(dists), 6),
            "source": self.source,
        }
        if self.public is not None:   # absent without one: such a summary.json is as it was
            out.update(n_public=len(self.public), public_fraction=cfg.public_fraction)
        if cfg.pool == "random":
            out["note"] = RANDOM_POOL_NOTE
        return out


def validation_note(valid_fraction: float) -> str:
    """How each site's validation records were chosen, for summary.json: biotrainer's
    VALIDATION= flag is read and checked, but fedbio draws the slice itself (in the shipped file
    every training record carries VALIDATION=True, so the flag cannot choose one)."""
    return (f"a random {100 * valid_fraction:g}% of each site's training records "
            "(--valid-fraction); the file's VALIDATION flags are not used")


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (not its square root), base 2: 0 = same mix, 1 = disjoint."""
    p = np.asarray(p, float) / np.sum(p)
    q = np.asarray(q, float) / np.sum(q)
    m = (p + q) / 2

    def kl(a, b):
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / b[nz])))

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def mean_js_divergence(counts: list[list[int]]) -> float:
    """Mean pairwise JS divergence between the sites' label distributions."""
    pairs = [(a, b) for a, b in combinations(counts, 2) if sum(a) and sum(b)]
    if not pairs:
        return 0.0
    return float(np.mean([js_divergence(np.array(a), np.array(b)) for a, b in pairs]))


def _stable(records: list[Record], idx: np.ndarray) -> list[Record]:
    return [records[i] for i in sorted(idx)]


TRAIN_SETS = ("train", "val")   # biotrainer: SET=val (older form) is part of the training pool


def train_pool(records: list[Record]) -> list[Record]:
    """The records a file marks for training (``SET=train`` or ``SET=val``)."""
    return [r for r in records if r.set in TRAIN_SETS]


def _pools(records: list[Record], cfg: SplitConfig, classes: list[str],
           rng: np.random.Generator, fasta: Path) -> tuple[list[Record], list[Record]]:
    if cfg.pool == "original":
        train = train_pool(records)
        test = [r for r in records if r.set == "test"]
        if not train or not test:
            raise DataError(fasta, "pool 'original' needs records with SET=train and SET=test in "
                            f"the file (found {len(train)} train, {len(test)} test); give the "
                            "records SET= fields, or use --pool random to re-split")
        return train, test
    labels = np.array([classes.index(str(r.label)) for r in records])
    test_idx = []
    for c in range(len(classes)):      # stratified: each class keeps its share in the test set
        idx = rng.permutation(np.flatnonzero(labels == c))
        test_idx.extend(idx[: int(round(cfg.test_fraction * len(idx)))])
    in_test = np.zeros(len(records), bool)
    in_test[test_idx] = True
    return _stable(records, np.flatnonzero(~in_test)), _stable(records, np.flatnonzero(in_test))


def cuts(n: int, proportions: np.ndarray) -> np.ndarray:
    """Cut points that split n items by the given proportions (largest-remainder rounding)."""
    raw = proportions * n
    sizes = np.floor(raw).astype(int)
    short = n - sizes.sum()
    sizes[np.argsort(-(raw - sizes), kind="stable")[:short]] += 1
    return np.cumsum(sizes)[:-1]


def n_valid(n: int, valid_fraction: float) -> int:
    """How many of a site's ``n`` records its validation slice takes: ``valid_fraction`` of them,
    rounded, at least one and leaving at least one for training (where ``n`` allows)."""
    count = int(round(valid_fraction * n))
    if valid_fraction > 0:
        count = min(max(count, 1), n - 1)
    return max(count, 0)


def smallest_site(min_train: int, valid_fraction: float) -> int:
    """The fewest records a site may get so that ``min_train`` stay for training once its
    validation slice is taken (``n - n_valid(n)`` never falls as ``n`` grows: bisection)."""
    low, high = min_train, int(np.ceil((min_train + 1) / (1 - valid_fraction))) + 2
    while low < high:
        mid = (low + high) // 2
        if mid - n_valid(mid, valid_fraction) >= min_train:
            high = mid
        else:
            low = mid + 1
    return low


def partition(labels: np.ndarray, n_classes: int, cfg: SplitConfig,
              rng: np.random.Generator) -> list[np.ndarray]:
    """Indices of each site's share of the train pool, by ``cfg.partition``; every share is big
    enough to keep ``cfg.min_site_size`` training records after its validation slice."""
    n, k = len(labels), cfg.sites
    least = smallest_site(cfg.min_site_size, cfg.valid_fraction)
    if least * k > n:
        raise FedbioError(
            f"{n} training records cannot give {k} sites at least {cfg.min_site_size} training "
            f"records each once --valid-fraction {cfg.valid_fraction} takes each site's "
            f"validation slice (a site needs {least} records); lower --valid-fraction or "
            f"--min-site-size{or_public(cfg.public_fraction)}, or use fewer sites")
    for _ in range(cfg.max_tries):
        parts: list[list[int]] = [[] for _ in range(k)]
        if cfg.partition == "dirichlet":
            for c in range(n_classes):   # each class draws its own proportions: real label skew
                idx = rng.permutation(np.flatnonzero(labels == c))
                for site, chunk in enumerate(np.split(idx, cuts(len(idx), rng.dirichlet([cfg.alpha] * k)))):
                    parts[site].extend(chunk.tolist())
        else:
            props = np.full(k, 1 / k) if cfg.partition == "iid" else rng.dirichlet([cfg.alpha] * k)
            idx = rng.permutation(n)
            for site, chunk in enumerate(np.split(idx, cuts(n, props))):
                parts[site].extend(chunk.tolist())
        if min(len(p) for p in parts) >= least:
            return [np.array(sorted(p), dtype=int) for p in parts]
        if cfg.partition == "iid":
            break
    raise FedbioError(
        f"no {cfg.partition} partition with alpha={cfg.alpha} gave every one of {k} sites at least "
        f"{cfg.min_site_size} training records (after its validation slice) in {cfg.max_tries} "
        "draws; raise --alpha, lower --min-site-size or --valid-fraction"
        f"{or_public(cfg.public_fraction)}, or use fewer sites")


def _check_sites(sites: dict[str, dict[str, list[Record]]], cfg: SplitConfig) -> None:
    """Every site trains and validates on something: ``run`` refuses a split with an empty
    train.csv or valid.csv."""
    for name, parts in sites.items():
        if not parts["train"] or not parts["valid"]:
            n = len(parts["train"]) + len(parts["valid"])
            raise FedbioError(f"{name} gets {n} record(s), too few for a training and a validation "
                              "part; raise --min-site-size (at least 2) or --alpha, or use fewer "
                              "sites")


def _check_classes_held(classes: list[str], records: list[Record], fasta: str | Path,
                        hard: str | Path | None) -> None:
    """A class list given to ``make_split`` may hold only classes some record carries:
    ``load_task`` refuses a classes.json class that no record of the split carries."""
    held = {str(r.label) for r in records}
    unheld = [c for c in classes if c not in held]
    if unheld:
        also = f" (nor of {hard})" if hard is not None else ""
        raise DataError(fasta, f"class {unheld[0]!r} of the class list is carried by no record "
                        f"of this file{also}; drop it from the class list")


def make_split(fasta: str | Path, cfg: SplitConfig, hard: str | Path | None = None,
               classes: list[str] | None = None) -> Split:
    """Read, validate and split; nothing is written. The same seed always gives the same split."""
    from fedbio.data.records import (  # here: the imports above are shared
        check_disjoint,
        check_learnable,
    )

    cfg.check()
    records = read_records(fasta, classes=classes)
    if classes is None:
        classes = class_list(records)
    hard_records = read_records(hard, classes=classes) if hard is not None else None
    rng = np.random.default_rng(cfg.seed)
    train_pool, test = _pools(records, cfg, classes, rng, Path(fasta))
    tests = [(Path(fasta), test)] + ([(Path(hard), hard_records)] if hard is not None else [])
    check_learnable(train_pool, tests, "give it training records (SET=train) or drop its records")
    check_disjoint(train_pool, fasta, tests)
    _check_classes_held(classes, records + (hard_records or []), fasta, hard)
    public, train_pool = draw_public(train_pool, classes, cfg.public_fraction, cfg.seed)
    labels = np.array([classes.index(str(r.label)) for r in train_pool])
    sites = {}
    for number, idx in enumerate(partition(labels, len(classes), cfg, rng), start=1):
        order = rng.permutation(idx)
        cut = n_valid(len(idx), cfg.valid_fraction)
        sites[f"site-{number}"] = {"train": _stable(train_pool, order[cut:]),
                                   "valid": _stable(train_pool, order[:cut])}
    _check_sites(sites, cfg)
    source = {"fasta": Path(fasta).name, "fasta_md5": file_md5(Path(fasta))}
    if hard is not None:
        source.update(hard=Path(hard).name, hard_md5=file_md5(Path(hard)))
    return Split(cfg, classes, sites, test, hard_records, source, public)


def restore_classes(split: Split, full_train: dict[str, list[Record]]) -> Split:
    """After cutting each site's ``train`` down (a test-sized subset), give back, for every class
    the cut left without a training record, that class's first record in ``full_train`` (the
    sites' training records before the cut) at the first site that had one: a class seen only
    in the test set is refused (``fedbio.data.records.check_learnable``)."""
    for cls in split.classes:
        if any(str(r.label) == cls for parts in split.sites.values() for r in parts["train"]):
            continue
        for name, records in full_train.items():
            first = next((r for r in records if str(r.label) == cls), None)
            if first is not None:
                split.sites[name]["train"].append(first)
                break
    return split


def _row(record: Record) -> tuple:
    return record.id, record.sequence, record.label


def save_split(split: Split, folder: Path, plot: bool = True) -> Path:
    """Write the split's files into ``folder`` (created if needed; a run's own ``split/``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_split_files(folder, split.sites, split.test, SPLIT_COLUMNS, _row)
    if split.test_hard is not None:
        write_csv(folder / "test_hard.csv", split.test_hard, SPLIT_COLUMNS, _row)
    if split.public is not None:   # id,sequence only: the labels are not written
        write_public(folder / PUBLIC_FILE, split.public)
    (folder / "classes.json").write_text(json.dumps(split.classes, indent=1) + "\n")
    summary = split.summary()
    (folder / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    if plot:
        import matplotlib.pyplot as plt

        from fedbio.reporting.plots import plot_site_classes

        fig = plot_site_classes(summary)
        fig.savefig(folder / "split.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
    return folder


def write_split(split: Split, out: str | Path, overwrite: bool = False, plot: bool = True,
                inputs=()) -> Path:
    """Write the split folder ``out`` by the output rule of ``fedbio.outputs`` (``OUT.running/``
    while writing; an existing ``out`` replaced only with ``overwrite``; ``inputs`` never touched)."""
    with output_dir(out, overwrite=overwrite, inputs=inputs, kind="split") as tmp:
        save_split(split, tmp, plot)
    return Path(out)


def split_table(summary: dict) -> str:
    """The per-site table as text: records per site and class."""
    classes = summary["classes"]
    width = max(len(c) for c in classes) + 2
    sites = list(summary["sites"])
    lines = [f"{'class':<{width}}" + "".join(f"{s:>9}" for s in sites)]
    for c in classes:
        lines.append(f"{c:<{width}}" + "".join(f"{summary['sites'][s]['class_counts'][c]:>9}"
                                               for s in sites))
    lines.append(f"{'train':<{width}}" + "".join(f"{summary['sites'][s]['n_train']:>9}" for s in sites))
    lines.append(f"{'valid':<{width}}" + "".join(f"{summary['sites'][s]['n_valid']:>9}" for s in sites))
    lines.append(f"test: {summary['n_test']} records"
                 + (f", setHARD: {summary['n_test_hard']}" if summary.get("n_test_hard") else ""))
    if "n_public" in summary:
        lines.append(f"public (unlabelled, for distillation): {summary['n_public']} records")
    lines.append(f"pool {summary['pool']}, partition {summary['partition']}, alpha {summary['alpha']}, "
                 f"seed {summary['seed']}: mean pairwise JS divergence {summary['js_divergence']:.3f}")
    return "\n".join(lines)


def warn_random_pool(cfg: SplitConfig) -> None:
    if cfg.pool == "random":
        print(f"note: {RANDOM_POOL_NOTE}", file=sys.stderr)

