"""Training benchmarks on the shipped DeepLoc data: ``fedbio bench train [--full]``.

    fedbio bench train                      # small: what CI runs, < 1 min on 2 idle cores
    fedbio bench train --full               # `make bench`: bigger samples, a few minutes
    fedbio bench train --out bench.json     # also write the results as JSON
    fedbio bench train --threads 2          # torch threads (default: every usable core)

Every number comes from this one run, and both sides of each comparison are measured in it and
printed as a ratio. ``run_bench`` returns the results as a dict (``--out`` writes it as JSON,
the table's rows under ``checks``). What is measured:

1. padding: real (non-pad) tokens per second of a training-step loop (forward, backward, AdamW)
   and the padding fraction, length-bucketed vs unbucketed batches, on the quick profile's model
   (``esm2-tiny``, full tuning) at the quick profile's crop and at 512 residues;
2. head-mode cache: one head-mode epoch on cached embeddings vs one epoch that re-encodes every
   batch with the frozen encoder (what the reference does), with an esm2-8m-shaped random model;
   the time to build the cache is reported on its own;
3. encoding throughput of an esm2-8m-shaped random model at the laptop profile's crop (512):
   sequences/s and residues/s, eval mode, no gradients;
4. peak RSS of a short quick-profile central run (``fedbio run --profile quick``) in a subprocess;
5. encoder families at one shape: training tokens/s of ``amplify-tiny`` (plain PyTorch, fused
   ``scaled_dot_product_attention``) vs ``esm2-tiny`` (transformers' ESM) on the shipped antibodies
   (VH + linker + VL, about 245 residues, uncropped), both 4 x 128 with 4 heads, interleaved.

Models are randomly initialised (nothing is downloaded): speed and memory depend on the shape,
not on the weights. Timings are wall-clock and move with whatever else the machine is doing;
the two training loops of measure 1 take turns batch by batch and each batch counts its fastest
of a few passes, which keeps their ratio fair on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedbio.bench.common import (
    SEED,
    Shipped,
    finish,
    laptop_crop,
    load_shipped,
    random_model,
    ratio,
    rng,
    run_stages,
    setup,
    table,
    timed,
)

PAD_GOAL = 0.15        # bucketed padding fraction at 512 residues
CACHE_GOAL = 20.0      # cached head epoch at least this many times faster than re-encoding
RSS_GOAL_GB = 4.0      # peak RSS of a quick-profile run
LONG_CROP = 512        # "long" crop of the padding measure (the laptop/reference crop)


@dataclass(frozen=True)
class Sizes:
    """How much work each measure does; ``SMALL`` is the default, ``FULL`` is ``--full``."""

    name: str
    pad_seqs: int          # sequences timed per loop at the quick profile's crop
    pad_seqs_long: int     # sequences timed per loop at LONG_CROP
    pad_batch_long: int    # batch size of the LONG_CROP loop (the quick crop uses the profile's)
    pad_rounds: int        # passes over the timed batches; each batch counts its fastest pass
    cache_model: str       # preset whose shape the head-mode measure uses
    cache_crop: int
    cache_seqs: int
    encode_model: str      # preset whose shape the encoding measure uses
    encode_seqs: int
    rss_records: int | None  # records of a subset split for the RSS run; None: the default split
    rss_epochs: float
    family_seqs: int = 32  # antibodies per family loop (measure 5)


SMALL = Sizes("small", pad_seqs=96, pad_seqs_long=32, pad_batch_long=8, pad_rounds=3,
              cache_model="esm2-8m", cache_crop=128, cache_seqs=192,
              encode_model="esm2-8m", encode_seqs=32, rss_records=240, rss_epochs=1, family_seqs=32)
FULL = Sizes("full", pad_seqs=320, pad_seqs_long=160, pad_batch_long=32, pad_rounds=3,
             cache_model="esm2-8m", cache_crop=512, cache_seqs=256,
             encode_model="esm2-8m", encode_seqs=256, rss_records=None, rss_epochs=1, family_seqs=128)
FAMILIES = ("amplify-tiny", "esm2-tiny")


# -- 1. padding --------------------------------------------------------------------------------
MODES = ("bucketed", "unbucketed")


def _train_step(model, optimizer, criterion, ids, mask, y) -> float:
    """One forward/backward/AdamW step; its wall time in seconds."""
    start = time.perf_counter()
    loss = criterion(model(ids, mask), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def interleaved_steps(model, optimizer, plans: dict[str, list], pad_id: int,
                      rounds: int = 1) -> dict[str, dict]:
    """Train on every batch of every plan, ``rounds`` times; a batch's time is its fastest round.

    The plans' i-th batches are taken in turn, so both plans see the same machine load, and the
    fastest of several rounds drops most of the noise other processes add. Batches are padded
    before the clock starts.
    """
    import torch

    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    times = {name: [math.inf] * len(batches) for name, batches in plans.items()}
    for _ in range(rounds):
        for i in range(max(len(batches) for batches in plans.values())):
            for name, batches in plans.items():
                if i < len(batches):
                    (ids, mask), y, _ = batches[i]
                    took = _train_step(model, optimizer, criterion, ids, mask, y)
                    times[name][i] = min(times[name][i], took)
    out = {}
    for name, batches in plans.items():
        real = sum(int((ids != pad_id).sum()) for (ids, _), _, _ in batches)
        grid = sum(ids.numel() for (ids, _), _, _ in batches)
        seconds = sum(times[name])
        out[name] = {"steps": len(batches), "rounds": rounds, "seconds": seconds,
                     "real_tokens": real, "grid_tokens": grid, "padding_fraction": 1 - real / grid,
                     "real_tokens_per_s": real / seconds}
    return out


def padding_at(data: Shipped, model, max_length: int, n_seqs: int, batch_size: int,
               fraction_batch: int, rounds: int = 1, seed: int = SEED) -> dict:
    """Padding fractions over all records (batches of ``fraction_batch``), and interleaved
    training-step loops on ``n_seqs`` of them (batches of ``batch_size``), bucketed vs not."""
    import torch

    from fedbio.data.batching import batches, padding_fraction, tokenize

    every = tokenize(data.seqs, data.y, model.tokenizer, max_length)
    sample = data.subset(n_seqs, seed)
    tokens = tokenize(sample.seqs, sample.y, model.tokenizer, max_length)
    plans = {mode: list(batches(tokens, batch_size, rng(seed),
                                bucketed=mode == "bucketed")) for mode in MODES}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    warm_up = {"warm-up": plans["unbucketed"][:1]}  # first-call costs, untimed
    interleaved_steps(model, optimizer, warm_up, tokens.pad_id)
    timed = interleaved_steps(model, optimizer, plans, tokens.pad_id, rounds)
    return {
        "max_length": max_length, "all_records": len(every), "fraction_batch": fraction_batch,
        "padding_fraction": {mode: padding_fraction(every, fraction_batch, mode == "bucketed", seed)
                             for mode in MODES},
        "timed_seqs": len(tokens), "batch_size": batch_size, "timed": timed,
        "speedup": ratio(timed["bucketed"]["real_tokens_per_s"],
                          timed["unbucketed"]["real_tokens_per_s"]),
    }


def bench_padding(data: Shipped, sizes: Sizes, seed: int = SEED) -> dict:
    """Measure 1 on the quick profile's model, at its crop and at LONG_CROP."""
    from fedbio.training.profiles import resolve_profile

    quick = resolve_profile("quick")
    model = random_model(quick.model.name, len(data.classes), quick.model.tuning, seed)
    out = {"model": quick.model.name, "tuning": quick.model.tuning}
    bs = quick.train.batch_size
    out["quick_crop"] = padding_at(data, model, quick.data.max_length, sizes.pad_seqs, bs, bs,
                                   sizes.pad_rounds, seed)
    out["long_crop"] = padding_at(data, model, LONG_CROP, sizes.pad_seqs_long,
                                  sizes.pad_batch_long, bs, sizes.pad_rounds, seed)
    return out


# -- 2. head-mode cache ------------------------------------------------------------------------
def _head_step(head, optimizer, criterion, x, y) -> None:
    loss = criterion(head(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def cached_epoch(head, data, batch_size: int, seed: int) -> float:
    """Seconds for one epoch of head training on cached embeddings (``TensorData``)."""
    import torch

    from fedbio.data.batching import batches

    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()
    head.train()
    start = time.perf_counter()
    for (x,), y, _ in batches(data, batch_size, rng(seed)):
        _head_step(head, optimizer, criterion, x, y)
    return time.perf_counter() - start


def reencode_epoch(model, tokens, batch_size: int, seed: int) -> float:
    """Seconds for one head-mode epoch that runs the frozen encoder on every batch."""
    import torch

    from fedbio.data.batching import batches

    optimizer = torch.optim.AdamW(model.head.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()
    model.train()  # a head-mode SequenceModel keeps its encoder in eval mode
    start = time.perf_counter()
    for (ids, mask), y, _ in batches(tokens, batch_size, rng(seed)):
        with torch.no_grad():
            x = model.embed(ids, mask)
        _head_step(model.head, optimizer, criterion, x, y)
    return time.perf_counter() - start


def bench_cache(data: Shipped, sizes: Sizes, seed: int = SEED, batch_size: int = 32,
                min_seconds: float = 0.2) -> dict:
    """Measure 2: cached-embedding epoch vs re-encoding epoch; cache build timed separately."""
    from fedbio.data.batching import TensorData, tokenize
    from fedbio.training.learner import embed

    model = random_model(sizes.cache_model, len(data.classes), "head", seed)
    sample = data.subset(sizes.cache_seqs, seed)
    tokens = tokenize(sample.seqs, sample.y, model.tokenizer, sizes.cache_crop)
    embed(model, tokenize(sample.seqs[:2], sample.y[:2], model.tokenizer, 32), 2, False)  # warm-up
    build_s, emb = timed(lambda: embed(model, tokens, batch_size, progress=False))
    cached = TensorData(emb, sample.y)
    cached_epoch(model.head, cached, batch_size, seed)  # warm-up
    reps = []
    while sum(reps) < min_seconds and len(reps) < 200:
        reps.append(cached_epoch(model.head, cached, batch_size, seed + len(reps)))
    cached_s = statistics.median(reps)
    reencode_s = reencode_epoch(model, tokens, batch_size, seed)
    return {"model": f"{sizes.cache_model} shape, random init", "max_length": sizes.cache_crop,
            "seqs": len(tokens), "batch_size": batch_size, "cache_build_s": build_s,
            "cached_epoch_s": cached_s, "cached_epoch_reps": len(reps),
            "reencode_epoch_s": reencode_s, "speedup": ratio(reencode_s, cached_s)}


# -- 3. encoding throughput --------------------------------------------------------------------
def bench_encode(data: Shipped, sizes: Sizes, seed: int = SEED, batch_size: int = 32) -> dict:
    """Measure 3: eval-mode, no-grad encoding at the laptop crop (length-sorted batches)."""
    from fedbio.data.batching import tokenize
    from fedbio.training.learner import embed

    crop = laptop_crop()
    model = random_model(sizes.encode_model, len(data.classes), "head", seed)
    sample = data.subset(sizes.encode_seqs, seed + 1)
    tokens = tokenize(sample.seqs, sample.y, model.tokenizer, crop)
    embed(model, tokenize(sample.seqs[:2], sample.y[:2], model.tokenizer, 32), 2, False)  # warm-up
    seconds, _ = timed(lambda: embed(model, tokens, batch_size, progress=False))
    residues = int(tokens.lengths.sum()) - 2 * len(tokens)  # minus <cls> and <eos>
    return {"model": f"{sizes.encode_model} shape, random init", "max_length": crop,
            "seqs": len(tokens), "batch_size": batch_size, "residues": residues,
            "seconds": seconds, "seqs_per_s": len(tokens) / seconds,
            "residues_per_s": residues / seconds}


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
    from fedbio.paths import shipped

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
    from fedbio.errors import FedbioError

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


# -- all of it ---------------------------------------------------------------------------------
# -- 5. encoder families ----------------------------------------------------------------------
def bench_families(sizes: Sizes, seed: int = SEED, batch_size: int = 16) -> dict:
    """Measure 5: the same training steps on the same antibodies through AMPLIFY and ESM-2
    encoders of one shape, batch by batch in turn; each batch counts its fastest pass."""
    import torch

    from fedbio.data.antibody import load_antibody_table
    from fedbio.data.batching import batches, tokenize

    seqs = load_antibody_table("jain")["sequence"].tolist()[:sizes.family_seqs]
    y = torch.zeros(len(seqs), dtype=torch.long)
    models, plans, opts = {}, {}, {}
    for name in FAMILIES:
        models[name] = random_model(name, 2, "full", seed)
        tokens = tokenize(seqs, y, models[name].tokenizer, 300)
        plans[name] = list(batches(tokens, batch_size, rng(seed)))
        opts[name] = torch.optim.AdamW(models[name].parameters(), lr=1e-4)
    criterion = torch.nn.CrossEntropyLoss()
    times = {name: [math.inf] * len(plans[name]) for name in FAMILIES}
    for rnd in range(sizes.pad_rounds + 1):  # the first pass warms up, untimed
        for i in range(len(plans[FAMILIES[0]])):
            for name in FAMILIES:
                (ids, mask), target, _ = plans[name][i]
                took = _train_step(models[name].train(), opts[name], criterion, ids, mask, target)
                if rnd:
                    times[name][i] = min(times[name][i], took)
    out = {"seqs": len(seqs), "batch_size": batch_size, "rounds": sizes.pad_rounds,
           "median_length": int(statistics.median(len(s) for s in seqs))}
    for name in FAMILIES:
        real = sum(int(mask.sum()) for (_, mask), _, _ in plans[name])
        params = sum(p.numel() for p in models[name].backbone.parameters())
        out[name] = {"encoder_parameters": params, "seconds": sum(times[name]),
                     "real_tokens_per_s": real / sum(times[name])}
    out["speedup"] = ratio(out["amplify-tiny"]["real_tokens_per_s"], out["esm2-tiny"]["real_tokens_per_s"])
    return out


def run_bench(work: Path, sizes: Sizes = SMALL, threads: int | None = None, seed: int = SEED,
              log: Callable[[str], None] | None = None) -> dict:
    """Every measure, one after the other, in this process (RSS in a child); a JSON-ready dict.
    ``work``: an empty folder for the runs it makes (``fedbio.outputs.scratch_dir``)."""
    say = log or (lambda msg: print(f"bench: {msg}", file=sys.stderr, flush=True))
    start = time.perf_counter()
    n = setup(threads, seed)
    import torch

    say(f"{sizes.name}; {n} torch thread(s); loading the shipped data")
    data = load_shipped()
    result: dict[str, Any] = {"size": sizes.name, "sizes": asdict(sizes), "threads": n,
                              "seed": seed, "torch": torch.__version__,
                              "records": len(data.seqs)}
    stages = {"padding": ("1/5 padding: training steps, bucketed vs unbucketed",
                          lambda: bench_padding(data, sizes, seed)),
              "head_cache": ("2/5 head mode: cached embeddings vs re-encoding",
                             lambda: bench_cache(data, sizes, seed)),
              "encode": ("3/5 encoding throughput", lambda: bench_encode(data, sizes, seed)),
              "peak_rss": ("4/5 peak RSS of a quick-profile run (subprocess)",
                           lambda: bench_rss(sizes, work, seed)),
              "families": ("5/5 AMPLIFY vs ESM-2 encoder at one shape, antibody inputs",
                           lambda: bench_families(sizes, seed))}
    run_stages(result, stages, say)
    result["checks"] = checks(result)
    result["wall_seconds"] = time.perf_counter() - start
    return result


# -- the table ---------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def checks(result: dict) -> list[dict]:
    """Rows of the summary table: measure, value, goal, ok (None where there is no goal)."""
    rows = []
    pad = result["padding"]
    for key in ("quick_crop", "long_crop"):
        p = pad[key]
        frac = p["padding_fraction"]
        long = key == "long_crop"
        rows.append({"measure": f"padding @{p['max_length']}, bucketed / unbucketed",
                     "value": f"{_pct(frac['bucketed'])} / {_pct(frac['unbucketed'])}",
                     "goal": f"<= {_pct(PAD_GOAL)} bucketed" if long else "-",
                     "ok": frac["bucketed"] <= PAD_GOAL if long else None})
    for key in ("quick_crop", "long_crop"):
        p = pad[key]
        t = p["timed"]
        rows.append({"measure": f"train real tok/s @{p['max_length']} ({pad['model']}), "
                                "bucketed / unbucketed",
                     "value": f"{_rate(t['bucketed']['real_tokens_per_s'])} / "
                              f"{_rate(t['unbucketed']['real_tokens_per_s'])} "
                              f"({p['speedup']:.2f}x)",
                     "goal": "-", "ok": None})
    c = result["head_cache"]
    rows.append({"measure": f"head epoch @{c['max_length']}, {c['seqs']} seqs: cached vs re-encode",
                 "value": f"{c['cached_epoch_s'] * 1e3:.2f} ms vs {c['reencode_epoch_s']:.2f} s "
                          f"({c['speedup']:,.0f}x)",
                 "goal": f">= {CACHE_GOAL:g}x", "ok": c["speedup"] >= CACHE_GOAL})
    rows.append({"measure": "cache build (encode once)", "value": f"{c['cache_build_s']:.2f} s",
                 "goal": "-", "ok": None})
    e = result["encode"]
    rows.append({"measure": f"encode {e['model'].split()[0]} @{e['max_length']}, no grad",
                 "value": f"{e['seqs_per_s']:.2f} seq/s, {_rate(e['residues_per_s'])} res/s",
                 "goal": "-", "ok": None})
    r = result["peak_rss"]
    data = r["records"] if isinstance(r["records"], str) else f"{r['records']}-record subset"
    rows.append({"measure": f"peak RSS, quick run ({data})",
                 "value": f"{r['peak_rss_gb']:.2f} GB", "goal": f"< {RSS_GOAL_GB:g} GB",
                 "ok": r["peak_rss_gb"] < RSS_GOAL_GB})
    f = result.get("families")
    if f:
        rows.append({"measure": f"train real tok/s, antibodies (median {f['median_length']} res): "
                                "amplify-tiny / esm2-tiny",
                     "value": f"{_rate(f['amplify-tiny']['real_tokens_per_s'])} / "
                              f"{_rate(f['esm2-tiny']['real_tokens_per_s'])} ({f['speedup']:.2f}x)",
                     "goal": "-", "ok": None})
    return rows


# -- command line ------------------------------------------------------------------------------
def cmd_bench_train(args: argparse.Namespace) -> int:
    """``fedbio bench train``: run, print the table, optionally write JSON."""
    from fedbio.outputs import scratch_dir

    with scratch_dir(args.workdir) as work:
        result = run_bench(work, FULL if args.full else SMALL, threads=args.threads)
    print(table(result["checks"]))
    return finish(result, args.out, "benchmark")
