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
   (VH + linker + VL, about 245 residues, uncropped), both 4 x 128 with 4 heads, interleaved;
6. DP-SGD at a site: one epoch of ``esm2-tiny`` (LoRA and full tuning) at the quick crop, plain
   vs Opacus's DP-SGD, same steps, taking turns (``fedbio.bench.train_privacy``).

Models are randomly initialised (nothing is downloaded): speed and memory depend on the shape,
not on the weights. Timings are wall-clock and move with whatever else the machine is doing;
the two training loops of measure 1 take turns batch by batch and each batch counts its fastest
of a few passes, which keeps their ratio fair on a busy machine.

Here: the goals, ``run_bench`` (every measure, in turn), the table's rows (``checks``) and
``cmd_bench_train`` (the ``train`` action of ``fedbio bench``, ``fedbio.bench.cli``). Measures 1,
2, 3 and 5 and their sizes (``Sizes``, ``SMALL``, ``FULL``) are in ``fedbio.bench.train_measures``,
measure 4 in ``fedbio.bench.train_rss``, measure 6 in ``fedbio.bench.train_privacy``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fedbio.bench.common import SEED, finish, load_shipped, run_and_print, run_stages, setup
from fedbio.bench.train_measures import (
    FULL,
    SMALL,
    Sizes,
    bench_cache,
    bench_encode,
    bench_families,
    bench_padding,
)
from fedbio.bench.train_privacy import bench_dp_sgd
from fedbio.bench.train_rss import bench_rss

PAD_GOAL = 0.15        # bucketed padding fraction at 512 residues
CACHE_GOAL = 20.0      # cached head epoch at least this many times faster than re-encoding
RSS_GOAL_GB = 4.0      # peak RSS of a quick-profile run


# -- all of it ---------------------------------------------------------------------------------
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
    stages = {"padding": ("1/6 padding: training steps, bucketed vs unbucketed",
                          lambda: bench_padding(data, sizes, seed)),
              "head_cache": ("2/6 head mode: cached embeddings vs re-encoding",
                             lambda: bench_cache(data, sizes, seed)),
              "encode": ("3/6 encoding throughput", lambda: bench_encode(data, sizes, seed)),
              "peak_rss": ("4/6 peak RSS of a quick-profile run (subprocess)",
                           lambda: bench_rss(sizes, work, seed)),
              "families": ("5/6 AMPLIFY vs ESM-2 encoder at one shape, antibody inputs",
                           lambda: bench_families(sizes, seed)),
              "dp_sgd": ("6/6 DP-SGD vs plain training at a site", lambda: bench_dp_sgd(data, sizes, seed))}
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
    d = result.get("dp_sgd")
    if d:
        for tuning in ("lora", "full"):
            t = d[tuning]
            rows.append({"measure": f"DP-SGD / plain, one epoch of {d['records']} records "
                                    f"({d['model']} {tuning}, {t['steps']} steps)",
                         "value": f"{t['dp_sgd_s']:.2f} s / {t['plain_s']:.2f} s ({t['ratio']:.2f}x)",
                         "goal": "-", "ok": None})
    return rows


# -- command line ------------------------------------------------------------------------------
def cmd_bench_train(args: argparse.Namespace) -> int:
    """``fedbio bench train``: run, print the table, optionally write JSON."""
    result = run_and_print(args, run_bench, FULL, SMALL)
    return finish(result, args.out, "benchmark")
