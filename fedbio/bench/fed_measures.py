"""The three measures of ``fedbio bench fed``, each returning its part of the results dict.

    bench_simulator(sizes, threads, work)  # 1. NVFlare simulator vs plain loop; NVFlare's fixed cost
    bench_bytes(n_classes)                 # 2. bytes a site sends per round, head vs lora vs full
    bench_floor(sizes, threads, work)      # 3. a head-mode run vs one encoder pass over its records

``fedbio.bench.fed`` runs them in turn (its docstring says what each measures and why) and turns
the results into the table; their sizes, data and models come from ``fedbio.bench.fed_setup``.
torch, NVFlare and fedbio's data, model, federation and learner modules are imported inside the
functions (``fedbio bench`` parses its options without them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from fedbio.bench.common import SEED, random_model, ratio, timed
from fedbio.bench.fed_setup import (
    BYTES_MODEL,
    CONTEXT,
    ROUNDS,
    TINY_EPOCHS,
    FedSizes,
    shaped_checkpoint,
    split_name,
    split_subset,
)
from fedbio.training.profiles import LAPTOP_MODELS, laptop_settings


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

    def own_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    out: dict[str, Any] = {"site_threads": cfg.train.threads or "default"}
    for engine in ("loop", "nvflare"):
        before = own_cpu()
        wall, metrics = timed(lambda e=engine: run_federated(
            cfg, FedConfig(rounds=ROUNDS), folder / e, progress=False, engine=e))
        cpu = own_cpu() - before   # the loop runs its sites in this process
        torch.set_num_threads(threads)  # a site in this process sets its own thread count
        if engine == "nvflare":
            out["phases"] = phases(metrics, wall)
            # The simulator's processes are ended, not waited for (their rusage never reaches
            # this process): add what each had used when it was ended.
            cpu += sum((out["phases"].get("cpu_seconds") or {}).values())
        out.update({f"{engine}_s": wall, f"{engine}_cpu_s": cpu,
                    f"{engine}_test_accuracy": metrics["test"]["accuracy"]})
    out["ratio"] = ratio(out["nvflare_s"], out["loop_s"])
    out["cpu_ratio"] = ratio(out["nvflare_cpu_s"], out["loop_cpu_s"])
    return out


def phases(metrics: dict, wall: float) -> dict:
    """Where a simulator run's wall time went: ``before_after`` (this process: reading the data,
    the first model, the job, then scoring and writing the delivered model) and the simulator's
    ``start_up`` / ``federation`` / ``shutdown`` (``fedbio.federation.progress.simulator_phases``)."""
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
    return {"split": split_name(sizes.sim_fraction),
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
    done = [(out["nvflare_s"], out["phases"])]
    for i in range(1, runs):
        wall, metrics = timed(lambda i=i: run_federated(cfg, FedConfig(rounds=ROUNDS),
                                                         folder / f"nvflare-{i + 1}", progress=False))
        torch.set_num_threads(threads)
        done.append((wall, phases(metrics, wall)))
    done.sort(key=lambda t: t[0])
    out["nvflare_s"], out["phases"] = done[len(done) // 2]
    out["nvflare_runs_s"] = [round(t[0], 2) for t in done]
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
    from fedbio.training.run import plan

    cfg = plan(mode="fedavg", profile="quick", seed=seed, split=str(split), model=str(model_dir),
               tuning="head")
    train = replace(laptop_settings(LAPTOP_MODELS[0])[2], seed=seed, threads=threads)
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
            "engine": sizes.floor_engine, "split": split_name(sizes.floor_fraction),
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


# -- 4. what site-level DP-FedAvg costs a round -------------------------------------------------
def bench_privacy(sizes: FedSizes, threads: int, work: Path, seed: int = SEED) -> dict:
    """Measure 4: the tiny job in the plain loop (no NVFlare noise in the timing), plain FedAvg
    then DP-FedAvg (clip 1, z 1: clipping at each site, noise at the server), wall per round."""
    import torch

    from fedbio.federation import FedConfig, run_federated
    from fedbio.privacy.config import PrivacyConfig
    from fedbio.training.run import plan

    tmp = Path(work) / "privacy"
    split = str(split_subset(tmp / "split", sizes.sim_fraction, seed))
    cfg = plan(mode="fedavg", profile="quick", seed=seed, split=split, epochs=TINY_EPOCHS)
    out: dict[str, Any] = {"model": cfg.model.name, "rounds": ROUNDS, "engine": "loop",
                           "split": split_name(sizes.sim_fraction)}
    for name, privacy in (("plain", None), ("dp", PrivacyConfig(clip=1.0, noise=1.0))):
        wall, metrics = timed(lambda p=privacy, n=name: run_federated(
            cfg, FedConfig(rounds=ROUNDS), tmp / n, progress=False, engine="loop", privacy=p))
        torch.set_num_threads(threads)
        out[f"{name}_round_s"] = wall / ROUNDS
        if privacy is not None:
            out["epsilon"] = metrics["privacy"]["epsilon"]
    out["ratio"] = ratio(out["dp_round_s"], out["plain_round_s"])
    return out
