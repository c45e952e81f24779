"""Federation benchmarks on the shipped DeepLoc data: ``fedbio bench fed [--full]``.

    fedbio bench fed                        # small: what CI runs, about 2 min on 2 cores
    fedbio bench fed --full                 # the default split and bigger samples, < 8 min
    fedbio bench fed --out bench-fed.json   # also write the results as JSON
    fedbio bench fed --workdir DIR          # where its runs go (default runs/bench; removed after)

Every ratio comes from this one run: both sides are measured in it. ``run_bench_fed`` returns
the results as a dict (``--out`` writes it as JSON, the table's rows under ``checks``).

1. simulator overhead: 3 sites x 3 rounds of FedAvg with the quick profile's model
   (``esm2-tiny``, full tuning, crop 64, 3 epochs), wall time in the NVFlare simulator vs the
   same sites and server in a plain loop (``engine="loop"``: one process, sites in turn, each
   with the threads a simulated site gets); CPU seconds of both are reported beside.
   ``--full`` runs it on the default split, the job behind Flower's 2.40x and raw NVFlare's
   3.53x (ANCHORS.md), and checks the goal; the small version runs on a fifth of it, where
   NVFlare's fixed start-up weighs more. The composition model (training about a second) gives
   NVFlare's fixed cost alone (goal: 12 s on 2 cores), split into where it goes (this process
   before and after the simulator, the simulator's start-up, federation and shutdown) and run a
   second time waiting for NVFlare's own exit, as fedbio did before it ended the job at the
   server's ``done.json``: before and after, measured in one run.
2. bytes per round: what one site sends (and receives) each round, ``trainable_state_dict`` of
   an esm2-8m-shaped model with 10 classes in ``head`` vs ``full`` tuning (``lora`` for
   information). No training.
3. a whole head-mode FedAvg run of an esm2-8m-shaped checkpoint vs its physical floor: one
   encoder pass (``fedbio.training.learner.embed``, the fastest of a few, every core) over every record
   the run must encode (each site's train and valid, the common test sets), once, at the same
   crop. The run's encodes are counted (embedding-cache files under ``RUN/cache``, plus encodes
   without a cache in this process), so a set encoded twice shows up. Small: 1 % of every part
   of the default split, crop 128, the plain loop; full: 15 %, crop 256, the NVFlare simulator.

Models are randomly initialised (nothing is downloaded): time and bytes depend on the shape only.

Here: the goals, ``run_bench_fed`` (every measure, in turn), the table's rows (``checks``) and the
``fed`` action of ``fedbio bench``. The measures are in ``fedbio.bench.fed_measures``, their sizes
(``SMALL``, ``FULL``), data and models in ``fedbio.bench.fed_setup``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fedbio.bench.common import (
    SEED,
    add_options,
    finish,
    load_shipped,
    run_and_print,
    run_stages,
    setup,
)
from fedbio.bench.fed_measures import bench_bytes, bench_floor, bench_privacy, bench_simulator
from fedbio.bench.fed_setup import BYTES_MODEL, FULL, SMALL, FedSizes, warm_up

SIM_GOAL = 2.0        # NVFlare simulator / plain loop, the tiny job on the default split
FIXED_GOAL = 12.0     # seconds: a whole federated run whose training takes about a second
BYTES_GOAL = 50.0     # full-tuning bytes per round / head-mode bytes per round
FLOOR_GOAL = 1.5      # head-mode run / one encoder pass over its records


# -- all of it ---------------------------------------------------------------------------------
def run_bench_fed(work: Path, sizes: FedSizes = SMALL, threads: int | None = None, seed: int = SEED,
                  log: Callable[[str], None] | None = None) -> dict:
    """Every measure, one after the other (simulator runs in NVFlare's own processes); ``work``:
    an empty folder for the runs it makes (``fedbio.outputs.scratch_dir``)."""
    import sys
    from importlib.metadata import version

    say = log or (lambda msg: print(f"bench fed: {msg}", file=sys.stderr, flush=True))
    start = time.perf_counter()
    n = setup(threads, seed)
    import torch

    say(f"{sizes.name}; {n} torch thread(s); warming up")
    warm_up()
    n_classes = len(load_shipped().classes)
    result: dict[str, Any] = {"size": sizes.name, "sizes": asdict(sizes), "threads": n,
                              "seed": seed, "torch": torch.__version__,
                              "nvflare": version("nvflare")}
    runs = 4 + sizes.fixed_runs  # two loops, the tiny simulator run, own exit, the composition runs
    stages = {"simulator": (f"1/4 NVFlare simulator vs plain loop ({runs} federated runs)",
                            lambda: bench_simulator(sizes, n, work, seed)),
              "bytes": ("2/4 bytes per round: head vs full tuning",
                        lambda: bench_bytes(n_classes, seed)),
              "head_floor": (f"3/4 head-mode run ({sizes.floor_engine}) vs one encoder pass",
                             lambda: bench_floor(sizes, n, work, seed)),
              "privacy": ("4/4 DP-FedAvg vs plain FedAvg (loop)",
                          lambda: bench_privacy(sizes, n, work, seed))}
    run_stages(result, stages, say)
    result["checks"] = checks(result)
    result["wall_seconds"] = time.perf_counter() - start
    return result


# -- the table ---------------------------------------------------------------------------------
def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def checks(result: dict) -> list[dict]:
    """Rows of the summary table: measure, value, goal, ok (None where there is no goal)."""
    rows = []
    sim = result["simulator"]
    on_default = sim["split"] == "default split"  # the goal is about the job of ANCHORS.md
    context = ", ".join(f"{k.split('_')[0]} {v:.2f}x" for k, v in sim["context"].items())
    r = sim["tiny"]
    rows.append({"measure": f"NVFlare sim / loop, {r['model']}, 3 sites x {sim['rounds']} "
                            f"rounds ({sim['split']})",
                 "value": f"{r['nvflare_s']:.1f} s / {r['loop_s']:.1f} s = {r['ratio']:.2f}x"
                          f" (CPU {r['cpu_ratio']:.2f}x; {context})",
                 "goal": f"<= {SIM_GOAL:g}x" if on_default else f"<= {SIM_GOAL:g}x (--full)",
                 "ok": r["ratio"] <= SIM_GOAL if on_default else None})
    r = sim["composition"]
    where = ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in r["phases"].items()
                      if isinstance(v, float))
    runs = r.get("nvflare_runs_s", [])
    spread = (f", median of {len(runs)}: {runs[0]:.1f}-{runs[-1]:.1f} s" if len(runs) > 1 else "")
    rows.append({"measure": f"composition, 3 sites x {sim['rounds']} rounds (about a second of "
                            "training): NVFlare's fixed cost",
                 "value": f"{r['nvflare_s']:.1f} s{spread} (loop {r['loop_s']:.1f} s; {where}); "
                          f"waiting for NVFlare's own exit: {r['own_exit_s']:.1f} s",
                 "goal": f"<= {FIXED_GOAL:g} s", "ok": r["nvflare_s"] <= FIXED_GOAL})
    b = result["bytes"]
    rows.append({"measure": f"bytes per site-round, {BYTES_MODEL} shape: head / full",
                 "value": f"{_size(b['head']['bytes'])} / {_size(b['full']['bytes'])} "
                          f"({b['full_over_head']:.0f}x fewer)",
                 "goal": f">= {BYTES_GOAL:g}x fewer", "ok": b["full_over_head"] >= BYTES_GOAL})
    rows.append({"measure": "bytes per site-round: lora",
                 "value": f"{_size(b['lora']['bytes'])} ({b['full_over_lora']:.0f}x fewer)",
                 "goal": "-", "ok": None})
    f = result["head_floor"]
    rows.append({"measure": f"head-mode run ({f['engine']}, {f['split']}, @{f['max_length']}) "
                            "/ one encoder pass",
                 "value": f"{f['run_s']:.1f} s / {f['floor_s']:.1f} s = {f['ratio']:.2f}x",
                 "goal": f"<= {FLOOR_GOAL:g}x", "ok": f["ratio"] <= FLOOR_GOAL})
    rows.append({"measure": "records encoded: run / floor",
                 "value": f"{f['encoded_records']['total']:,} / {f['floor_records']:,} "
                          f"({f['encode_passes']:.2f} passes; common test sets encoded "
                          f"{f['common_test_encoded']:g}x)",
                 "goal": "-", "ok": None})
    d = result.get("privacy")
    if d:
        rows.append({"measure": f"DP-FedAvg / plain FedAvg round, {d['model']}, 3 sites x "
                                f"{d['rounds']} rounds (loop, {d['split']})",
                     "value": f"{d['dp_round_s']:.2f} s / {d['plain_round_s']:.2f} s = "
                              f"{d['ratio']:.2f}x (z 1, clip 1: epsilon {d['epsilon']:.3g})",
                     "goal": "-", "ok": None})
    return rows


# -- command line ------------------------------------------------------------------------------
def cmd_bench_fed(args: argparse.Namespace) -> int:
    """``fedbio bench fed``: run, print the table, optionally write JSON."""
    result = run_and_print(args, run_bench_fed, FULL, SMALL)
    by = ", ".join(result["head_floor"]["common_test_encoded_by"])
    print(f"head-mode run: common test sets encoded by {by}")
    return finish(result, args.out, "federation benchmark")


def register(actions) -> None:
    """Add ``fed`` to the actions of ``fedbio bench`` (``actions``: its sub-parsers)."""
    f = actions.add_parser("fed", help="NVFlare overhead, bytes per round, head-mode run vs floor")
    add_options(f, "the default split and bigger samples (about 8 minutes)")
    f.set_defaults(func=cmd_bench_fed)
