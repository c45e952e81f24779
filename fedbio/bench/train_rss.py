"""Measure 4 of ``fedbio bench train``: peak RSS of a short quick-profile run, in a subprocess.

    bench_rss(sizes, work)      # fedbio run --profile quick --mode central, under work/rss
    peak_rss(cmd, log)          # any command: exit code, wall seconds, peak RSS in GB
    subset_split(folder, 240)   # a one-site split of about 240 shipped records

``fedbio.bench.train`` runs it after the in-process measures (``fedbio.bench.train_measures``,
where ``Sizes`` lives) and checks the peak against its goal.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

from fedbio.bench.common import SEED, rng
from fedbio.bench.train_measures import Sizes
from fedbio.errors import FedbioError
from fedbio.paths import shipped

# -- 4. peak RSS -------------------------------------------------------------------------------
# Runs the command as its only child and reads RUSAGE_CHILDREN. The extra small process matters:
# Linux keeps a process's ru_maxrss across exec, so a child forked straight from this (large)
# process would report at least this process's own peak.
_RSS_WRAPPER = """\
import json, resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as out:
    json.dump({"returncode": rc, "ru_maxrss": usage.ru_maxrss}, out)
"""


def peak_rss(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` to completion: exit code, wall time and peak RSS in GB (its largest process).

    Output goes to ``log``. ``cmd`` runs under a small Python wrapper that reads
    ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``, so this process's memory never counts.
    """
    report = log.with_name(log.name + ".rss.json")
    start = time.perf_counter()
    with open(log, "w") as handle:
        wrapper = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, str(report), *cmd],
                                 stdout=handle, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - start
    if wrapper.returncode != 0 or not report.is_file():
        return {"returncode": wrapper.returncode or 1, "seconds": seconds, "peak_rss_gb": math.nan}
    got = json.loads(report.read_text())
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {"returncode": got["returncode"], "seconds": seconds,
            "peak_rss_gb": got["ru_maxrss"] * scale / 1e9}


def subset_split(folder: Path, n_records: int, seed: int = SEED) -> Path:
    """A one-site split of about ``n_records`` shipped records (their own train/val/test labels),
    with a training record of every class added where the draw had none."""
    from fedbio.data.records import class_list, read_records
    from fedbio.data.split import SplitConfig, make_split, write_split

    source = shipped("scl/deeploc_valtest.fasta")
    blocks = source.read_text().split(">")[1:]
    records = read_records(source)  # one record per block, in order
    keep = set(rng(seed).choice(len(blocks), n_records, replace=False).tolist())
    trained = {str(records[i].label) for i in keep if records[i].set != "test"}
    for i, rec in enumerate(records):  # every class keeps a training record (no test-only class)
        if rec.set != "test" and str(rec.label) not in trained:
            keep.add(i)
            trained.add(str(rec.label))
    fasta = folder / "subset.fasta"
    fasta.write_text("".join(">" + blocks[i] for i in sorted(keep)))
    classes = class_list(records)
    split = make_split(fasta, SplitConfig(sites=1, seed=seed, min_site_size=1), classes=classes)
    parts = split.sites["site-1"]
    for cls in {str(r.label) for r in split.test} - {str(r.label) for r in parts["train"]}:
        moved = next(r for r in parts["valid"] if str(r.label) == cls)  # its only one drew valid
        parts["valid"].remove(moved)
        parts["train"].append(moved)
    return write_split(split, folder / "split", plot=False)


def bench_rss(sizes: Sizes, work: Path, seed: int = SEED) -> dict:
    """Measure 4: ``fedbio run --profile quick --mode central`` in a subprocess, under ``work``."""
    args = ["run", "--profile", "quick", "--mode", "central", "--epochs", f"{sizes.rss_epochs:g}",
            "--seed", str(seed), "--quiet"]
    shown = ["fedbio", *args, *(["--split", "SUBSET"] if sizes.rss_records else []), "--out", "OUT"]
    tmp = Path(work) / "rss"
    tmp.mkdir(parents=True)
    if sizes.rss_records:
        args += ["--split", str(subset_split(tmp, sizes.rss_records, seed))]
    cmd = [sys.executable, "-m", "fedbio", *args, "--out", str(tmp / "run")]
    out = peak_rss(cmd, tmp / "run.log")
    if out["returncode"] != 0:
        tail = (tmp / "run.log").read_text()[-2000:]
        raise FedbioError(f"the quick-profile run failed ({out['returncode']}):\n{tail}")
    return {"command": " ".join(shown), "records": sizes.rss_records or "default split", **out}
