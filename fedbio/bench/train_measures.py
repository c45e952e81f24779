"""The in-process measures of ``fedbio bench train`` (1, 2, 3 and 5), and how big each one is.

    bench_padding(data, sizes)   # 1. training-step loops, length-bucketed vs unbucketed batches
    bench_cache(data, sizes)     # 2. head mode: an epoch on cached embeddings vs re-encoding
    bench_encode(data, sizes)    # 3. eval-mode encoding throughput at the laptop crop
    bench_families(sizes)        # 5. AMPLIFY vs ESM-2 encoders of one shape, on antibodies

``data`` is ``fedbio.bench.common.load_shipped()``; ``sizes`` is ``SMALL`` (the default) or
``FULL`` (``--full``). Measure 4 (peak RSS, in a subprocess) is ``fedbio.bench.train_rss``;
``fedbio.bench.train`` runs them all and writes the table. Models are random-init shapes; torch
and fedbio's data and learner modules are imported inside the functions.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

from fedbio.bench.common import (
    SEED,
    Shipped,
    laptop_crop,
    random_model,
    ratio,
    rng,
    timed,
)
from fedbio.training.profiles import resolve_profile

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
    dp_seqs: int = 64      # records of the DP-SGD measure (6): one epoch each way


SMALL = Sizes("small", pad_seqs=96, pad_seqs_long=32, pad_batch_long=8, pad_rounds=3,
              cache_model="esm2-8m", cache_crop=128, cache_seqs=192,
              encode_model="esm2-8m", encode_seqs=32, rss_records=240, rss_epochs=1, family_seqs=32,
              dp_seqs=64)
FULL = Sizes("full", pad_seqs=320, pad_seqs_long=160, pad_batch_long=32, pad_rounds=3,
             cache_model="esm2-8m", cache_crop=512, cache_seqs=256,
             encode_model="esm2-8m", encode_seqs=256, rss_records=None, rss_epochs=1, family_seqs=128,
             dp_seqs=256)
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
