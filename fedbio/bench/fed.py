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
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from fedbio.bench.common import (
    SEED,
    add_options,
    finish,
    load_shipped,
    random_model,
    ratio,
    rng,
    run_stages,
    setup,
    table,
    timed,
)

SIM_GOAL = 2.0        # NVFlare simulator / plain loop, the tiny job on the default split
FIXED_GOAL = 12.0     # seconds: a whole federated run whose training takes about a second
BYTES_GOAL = 50.0     # full-tuning bytes per round / head-mode bytes per round
FLOOR_GOAL = 1.5      # head-mode run / one encoder pass over its records
CONTEXT = {"flower_simulation": 2.40, "nvflare_raw": 3.53}  # same job, measured (ANCHORS.md)
ROUNDS = 3
TINY_EPOCHS = 3       # the quick profile's model, 3 epochs = 1 per round
BYTES_MODEL = "esm2-8m"


@dataclass(frozen=True)
class FedSizes:
    """How much work each measure does; ``SMALL`` is the default, ``FULL`` is ``--full``."""

    name: str
    sim_fraction: float    # share of every part of the default split for measure 1 (1 = all)
    floor_model: str       # preset whose shape the head-mode checkpoint of measure 3 has
    floor_fraction: float  # share of every part of the default split for measure 3
    floor_crop: int
    floor_engine: str      # "loop" (this process) or "nvflare" (the simulator)
    floor_passes: int      # encoder passes timed for the floor; it is the fastest one
    fixed_runs: int = 1    # simulator runs of the composition model; its row is their median


SMALL = FedSizes("small", sim_fraction=0.2, floor_model="esm2-8m", floor_fraction=0.01,
                 floor_crop=128, floor_engine="loop", floor_passes=2)
FULL = FedSizes("full", sim_fraction=1.0, floor_model="esm2-8m", floor_fraction=0.15,
                floor_crop=256, floor_engine="nvflare", floor_passes=2, fixed_runs=3)


# -- set-up ------------------------------------------------------------------------------------
def split_subset(folder: Path, fraction: float, seed: int = SEED) -> Path:
    """The default split (3 sites, Dirichlet 1.0, ``seed``) with ``fraction`` of each part kept.

    Every site's train and valid and both test sets keep ``round(fraction * n)`` records (at
    least one) drawn at random, so the subset keeps the default split's proportions, plus one
    training record of any class the cut left untrained; with ``fraction=1`` it is the default
    split itself.
    """
    from fedbio.data.split import SplitConfig, make_split, restore_classes, write_split
    from fedbio.paths import shipped

    split = make_split(shipped("scl/deeploc_valtest.fasta"), SplitConfig(seed=seed),
                       hard=shipped("scl/deeploc_setHARD.fasta"))
    if fraction < 1:
        draw = rng(seed)

        def cut(records: list) -> list:
            keep = draw.choice(len(records), max(1, round(fraction * len(records))), replace=False)
            return [records[i] for i in sorted(keep.tolist())]

        full = {name: parts["train"] for name, parts in split.sites.items()}
        for parts in split.sites.values():
            parts["train"], parts["valid"] = cut(parts["train"]), cut(parts["valid"])
        split.test, split.test_hard = cut(split.test), cut(split.test_hard)
        restore_classes(split, full)  # every class the test sets hold is trained somewhere
    return write_split(split, folder, plot=False)


def shaped_checkpoint(preset: str, folder: Path, seed: int = SEED) -> Path:
    """A random-init ``EsmForMaskedLM`` of ``preset``'s shape saved with ``save_pretrained``:
    a local checkpoint folder that works as ``ModelConfig.name``."""
    import torch
    from transformers import EsmForMaskedLM

    from fedbio.models import esm_config
    from fedbio.models.backbone import _quiet_transformers

    with torch.random.fork_rng(devices=[]), _quiet_transformers():
        torch.manual_seed(seed)
        EsmForMaskedLM(esm_config(preset)).save_pretrained(folder)
    return folder


def _warm_up() -> None:
    """First-call costs (imports, first model build) out of the timed in-process runs."""
    from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (runs write curves)

    import fedbio.federation.loop  # noqa: F401
    import fedbio.federation.nvflare.job  # noqa: F401  (NVFlare's job API, imported once per process)

    random_model("esm2-tiny", 2, "full")


def _split_name(fraction: float) -> str:
    return "default split" if fraction >= 1 else f"{fraction:.0%} of the default split"


# -- 1. simulator overhead ---------------------------------------------------------------------
def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished (waited-for) children."""
    import resource

    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def _timed_cpu(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall seconds, CPU seconds (this process and its children) and ``fn``'s result."""
    cpu = _cpu_seconds()
    wall, out = timed(fn)
    return wall, _cpu_seconds() - cpu, out


def loop_vs_simulator(cfg, folder: Path, threads: int) -> dict:
    """Wall and CPU time of ``cfg`` (3 sites x 3 rounds) in the plain loop, then the simulator.

    Both use ``cfg``'s threads per site (default: cores // sites, at least 1): the loop runs its
    sites one after the other, the simulator side by side, so the wall ratio nets NVFlare's
    costs against that parallelism and the CPU ratio shows the costs alone.
    """
    import resource

    import torch

    from fedbio.federation import FedConfig, run_federated

    out: dict[str, Any] = {"site_threads": cfg.train.threads or "default"}
    for engine in ("loop", "nvflare"):
        own = resource.getrusage(resource.RUSAGE_SELF)
        wall, cpu, metrics = _timed_cpu(lambda e=engine: run_federated(
            cfg, FedConfig(rounds=ROUNDS), folder / e, progress=False, engine=e))
        torch.set_num_threads(threads)  # a site in this process sets its own thread count
        if engine == "nvflare":
            out["phases"] = phases(metrics, wall)
            # The simulator's processes are ended, not waited for, so the rusage of children
            # misses them: count this process, plus what each of them had used when ended.
            now = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (now.ru_utime + now.ru_stime - own.ru_utime - own.ru_stime
                   + sum((out["phases"].get("cpu_seconds") or {}).values()))
        out.update({f"{engine}_s": wall, f"{engine}_cpu_s": cpu,
                    f"{engine}_test_accuracy": metrics["test"]["accuracy"]})
    out["ratio"] = ratio(out["nvflare_s"], out["loop_s"])
    out["cpu_ratio"] = ratio(out["nvflare_cpu_s"], out["loop_cpu_s"])
    return out


def phases(metrics: dict, wall: float) -> dict:
    """Where a simulator run's wall time went: ``before_after`` (this process: reading the data,
    the first model, the job, then scoring and writing the delivered model) and the simulator's
    ``start_up`` / ``federation`` / ``shutdown`` (``fedbio.federation.runner.simulator_phases``)."""
    sim = dict(metrics["federation"].get("simulator_seconds") or {})
    sim.pop("attempts", None)
    cpu = sim.pop("cpu_seconds", None)
    return {"before_after": round(wall - sum(sim.values()), 2), **sim, "cpu_seconds": cpu}


def own_exit(cfg, folder: Path, threads: int) -> float:
    """Wall time of the same simulator run waiting for NVFlare's own exit, as fedbio did before
    it ended the job at ``done.json`` (the grace is longer than any shutdown)."""
    import torch

    from fedbio.federation import FedConfig, run_federated

    wall, _ = timed(lambda: run_federated(cfg, FedConfig(rounds=ROUNDS, sim_grace=600), folder,
                                           progress=False))
    torch.set_num_threads(threads)
    return wall


def bench_simulator(sizes: FedSizes, threads: int, work: Path, seed: int = SEED) -> dict:
    """Measure 1: the tiny job and the composition model, loop vs NVFlare simulator."""
    from fedbio.data.tasks import load_task
    from fedbio.training.run import plan

    # runs go to the benchmark's scratch folder
    tmp = Path(work) / "simulator"
    split = str(split_subset(tmp / "split", sizes.sim_fraction, seed))
    task = load_task(split)
    tiny = plan(mode="fedavg", profile="quick", seed=seed, split=split, epochs=TINY_EPOCHS)
    comp = plan(mode="fedavg", profile="quick", seed=seed, split=split, model="composition")
    return {"split": _split_name(sizes.sim_fraction),
            "n_train": {s: len(p["train"]) for s, p in task.sites.items()},
            "n_test": len(task.test), "rounds": ROUNDS, "context": CONTEXT,
            "tiny": {"model": tiny.model.name, "tuning": tiny.model.tuning,
                     "max_length": tiny.data.max_length, "epochs": tiny.train.epochs,
                     **loop_vs_simulator(tiny, tmp / "tiny", threads)},
            "composition": {"model": "composition", "epochs": comp.train.epochs,
                            **fixed_cost(comp, tmp / "composition", threads, sizes.fixed_runs),
                            "own_exit_s": own_exit(comp, tmp / "composition" / "own-exit", threads)}}


def fixed_cost(cfg, folder: Path, threads: int, runs: int) -> dict:
    """``loop_vs_simulator`` for the composition model, whose simulator run is almost all fixed
    cost, with ``runs`` simulator runs in all: ``nvflare_s`` and ``phases`` are the median run's,
    ``nvflare_runs_s`` every run's wall time (the spread a single run would hide)."""
    import torch

    from fedbio.federation import FedConfig, run_federated

    out = loop_vs_simulator(cfg, folder, threads)
    timed = [(out["nvflare_s"], out["phases"])]
    for i in range(1, runs):
        wall, metrics = timed(lambda i=i: run_federated(cfg, FedConfig(rounds=ROUNDS),
                                                         folder / f"nvflare-{i + 1}", progress=False))
        torch.set_num_threads(threads)
        timed.append((wall, phases(metrics, wall)))
    timed.sort(key=lambda t: t[0])
    out["nvflare_s"], out["phases"] = timed[len(timed) // 2]
    out["nvflare_runs_s"] = [round(t[0], 2) for t in timed]
    out["ratio"] = ratio(out["nvflare_s"], out["loop_s"])
    return out


# -- 2. bytes per round ------------------------------------------------------------------------
def bench_bytes(n_classes: int, seed: int = SEED) -> dict:
    """Measure 2: bytes of one copy of the trainable parameters, per tuning mode."""
    from fedbio.federation import bytes_of
    from fedbio.models import trainable_state_dict

    out: dict[str, Any] = {"model": f"{BYTES_MODEL} shape, random init", "classes": n_classes}
    for tuning in ("head", "lora", "full"):
        state = trainable_state_dict(random_model(BYTES_MODEL, n_classes, tuning, seed))
        out[tuning] = {"tensors": len(state), "values": sum(v.numel() for v in state.values()),
                       "bytes": bytes_of(state)}
    out["full_over_head"] = ratio(out["full"]["bytes"], out["head"]["bytes"])
    out["full_over_lora"] = ratio(out["full"]["bytes"], out["lora"]["bytes"])
    return out


# -- 3. head-mode run vs its floor -------------------------------------------------------------
@contextmanager
def uncached_encodes() -> Iterator[list[tuple[str, int]]]:
    """While in the block, note ``(cache key, records)`` of every encode in this process by a
    ``Learner`` with no cache folder (encodes into a cache folder leave a file behind)."""
    from fedbio.training.learner import Learner

    real, seen = Learner._embeddings, []

    def noted(self, tokens, seqs):
        if self.cache_dir is None:
            seen.append((self._cache_key(seqs), len(seqs)))
        return real(self, tokens, seqs)

    Learner._embeddings = noted
    try:
        yield seen
    finally:
        Learner._embeddings = real


UNCACHED = "coordinator (uncached)"  # run_federated's own learner, in this process


def cached_rows(run_dir: Path) -> dict[str, dict[str, int]]:
    """Rows of every embedding-cache file under ``RUN/cache/<folder>/``, by folder and key."""
    from safetensors import safe_open

    out: dict[str, dict[str, int]] = {}
    for path in sorted(run_dir.glob("cache/*/emb-*.safetensors")):
        with safe_open(str(path), "pt") as handle:
            rows = int(handle.get_slice("embeddings").get_shape()[0])
        out.setdefault(path.parent.name, {})[path.stem[len("emb-"):]] = rows
    return out


def head_config(model_dir: Path, split: Path, crop: int, threads: int, seed: int = SEED):
    """A FedAvg ``RunConfig``: the checkpoint in head mode, the laptop profile's training."""
    from fedbio.training.profiles import LAPTOP_MODELS, _laptop
    from fedbio.training.run import plan

    cfg = plan(mode="fedavg", profile="quick", seed=seed, split=str(split), model=str(model_dir),
               tuning="head")
    train = replace(_laptop(LAPTOP_MODELS[0])[2], seed=seed, threads=threads)
    return replace(cfg, data=replace(cfg.data, max_length=crop), train=train)


def encoder_floor(learner, records: list, passes: int) -> tuple[float, float, list[float]]:
    """Seconds of one ``embed`` pass over ``records`` at the learner's crop: the fastest of
    ``passes`` (other processes only ever add time), its CPU seconds, and every pass's time."""
    import torch

    from fedbio.data.batching import tokenize
    from fedbio.training.learner import embed

    data = learner.data_cfg
    tokens = tokenize([r.sequence for r in records], learner.codec.encode(records),
                      learner.tokenizer, data.max_length, data.crop)
    embed(learner.model, tokenize(["MKV", "MA"], torch.zeros(2), learner.tokenizer, 8), 2,
          progress=False)  # warm-up
    times = [_timed_cpu(lambda: embed(learner.model, tokens, learner.train_cfg.batch_size,
                                      progress=False))[:2] for _ in range(passes)]
    wall, cpu = min(times)
    return wall, cpu, [t for t, _ in times]


def encode_census(run_dir: Path, uncached: list[tuple[str, int]],
                  test_keys: set[str]) -> tuple[dict[str, int], dict[str, int]]:
    """Records the run encoded, by where (cache folder, or uncached here), and how many of the
    common test sets each place encoded. Every encode either left a cache file (one per folder
    and key) or was noted by ``uncached_encodes``."""
    encodes = [(folder, key, n) for folder, keys in cached_rows(run_dir).items()
               for key, n in keys.items()]
    encodes += [(UNCACHED, key, n) for key, n in uncached]
    records: dict[str, int] = {}
    tests: dict[str, int] = {}
    for where, key, n in encodes:
        records[where] = records.get(where, 0) + n
        if key in test_keys:
            tests[where] = tests.get(where, 0) + 1
    return records, tests


def bench_floor(sizes: FedSizes, threads: int, work: Path, seed: int = SEED) -> dict:
    """Measure 3: the floor (one encoder pass), then the whole run with its encodes counted."""
    import torch

    from fedbio.data.tasks import load_task
    from fedbio.federation import FedConfig, run_federated
    from fedbio.training.learner import Learner

    loop = sizes.floor_engine == "loop"
    # runs go to the benchmark's scratch folder
    tmp = Path(work) / "floor"
    split = split_subset(tmp / "split", sizes.floor_fraction, seed)
    model_dir = shaped_checkpoint(sizes.floor_model, tmp / sizes.floor_model, seed)
    # the loop gets every core (as the floor does); simulated sites keep their default share
    cfg = head_config(model_dir, split, sizes.floor_crop, threads if loop else 0, seed)
    task = load_task(split)
    common = [part for part in (task.test, task.test_hard) if part]
    records = task.pooled("train") + task.pooled("valid") + [r for p in common for r in p]
    learner = Learner.build(cfg.model, cfg.data, cfg.train, task.codec(), None, progress=False)
    floor_s, floor_cpu, passes = encoder_floor(learner, records, sizes.floor_passes)
    with uncached_encodes() as uncached:
        run_s, run_cpu, metrics = _timed_cpu(lambda: run_federated(
            cfg, FedConfig(rounds=ROUNDS), tmp / "run", progress=False,
            engine=sizes.floor_engine))
    torch.set_num_threads(threads)  # a site in this process sets its own thread count
    test_keys = {learner._cache_key([r.sequence for r in part]) for part in common}
    encoded, tests = encode_census(tmp / "run", uncached, test_keys)
    n_common = sum(len(p) for p in common)
    return {"model": f"{sizes.floor_model} shape, random init", "tuning": "head",
            "engine": sizes.floor_engine, "split": _split_name(sizes.floor_fraction),
            "max_length": sizes.floor_crop, "rounds": ROUNDS, "epochs": cfg.train.epochs,
            "site_threads": cfg.train.threads or "default", "floor_threads": threads,
            "records": {"train_valid": len(records) - n_common, "common_test": n_common},
            "floor_records": len(records), "floor_s": floor_s, "floor_cpu_s": floor_cpu,
            "floor_passes_s": passes,
            "run_s": run_s, "run_cpu_s": run_cpu, "ratio": ratio(run_s, floor_s),
            "encoded_records": {**encoded, "total": sum(encoded.values())},
            "encode_passes": sum(encoded.values()) / len(records),
            "common_test_encoded_by": tests,  # where -> how many of the common test sets
            "common_test_encoded": sum(tests.values()) / len(test_keys),
            "test_accuracy": metrics["test"]["accuracy"]}


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
    _warm_up()
    n_classes = len(load_shipped().classes)
    result: dict[str, Any] = {"size": sizes.name, "sizes": asdict(sizes), "threads": n,
                              "seed": seed, "torch": torch.__version__,
                              "nvflare": version("nvflare")}
    runs = 4 + sizes.fixed_runs  # two loops, the tiny simulator run, own exit, the composition runs
    stages = {"simulator": (f"1/3 NVFlare simulator vs plain loop ({runs} federated runs)",
                            lambda: bench_simulator(sizes, n, work, seed)),
              "bytes": ("2/3 bytes per round: head vs full tuning",
                        lambda: bench_bytes(n_classes, seed)),
              "head_floor": (f"3/3 head-mode run ({sizes.floor_engine}) vs one encoder pass",
                             lambda: bench_floor(sizes, n, work, seed))}
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
    return rows


# -- command line ------------------------------------------------------------------------------
def cmd_bench_fed(args: argparse.Namespace) -> int:
    """``fedbio bench fed``: run, print the table, optionally write JSON."""
    from fedbio.outputs import scratch_dir

    with scratch_dir(args.workdir) as work:
        result = run_bench_fed(work, FULL if args.full else SMALL, threads=args.threads)
    print(table(result["checks"]))
    by = ", ".join(result["head_floor"]["common_test_encoded_by"])
    print(f"head-mode run: common test sets encoded by {by}")
    return finish(result, args.out, "federation benchmark")


def register(actions) -> None:
    """Add ``fed`` to the actions of ``fedbio bench`` (``actions``: its sub-parsers)."""
    f = actions.add_parser("fed", help="NVFlare overhead, bytes per round, head-mode run vs floor")
    add_options(f, "the default split and bigger samples (about 8 minutes)")
    f.set_defaults(func=cmd_bench_fed)
