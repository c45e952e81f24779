"""Measure 6 of ``fedbio bench train``: what DP-SGD costs a site's training.

    bench_dp_sgd(data, sizes)   # {"lora": {...}, "full": {...}}: plain and DP-SGD seconds, ratio

The quick profile's model (``esm2-tiny``) at its crop, LoRA and full tuning, trained by
``fedbio.training.trainer.fit`` for the same number of steps on the same shipped records, plain
and with Opacus's DP-SGD (per-record gradients, clipping, noise, Poisson batches). The two take
turns, twice each, and each side counts its faster pass (a busy machine slows both alike).
"""

from __future__ import annotations

from dataclasses import replace

from fedbio.bench.common import SEED, Shipped, ratio, timed

TUNINGS = ("lora", "full")


def bench_dp_sgd(data: Shipped, sizes, seed: int = SEED, batch_size: int = 16) -> dict:
    """Seconds of ``sizes.dp_seqs`` records' training steps (one epoch), plain vs DP-SGD."""
    from fedbio.config import DataConfig
    from fedbio.data.records import Record
    from fedbio.data.tasks import LabelCodec
    from fedbio.privacy.config import PrivacyConfig
    from fedbio.privacy.fedavg import sgd_settings
    from fedbio.privacy.sgd import RecordPrivacy
    from fedbio.training.learner import Learner
    from fedbio.training.profiles import resolve_profile
    from fedbio.training.trainer import planned_steps

    sub = data.subset(sizes.dp_seqs, seed)
    codec = LabelCodec("classification", sub.classes)
    records = [Record(f"r{i}", s, sub.classes[int(c)]) for i, (s, c) in enumerate(zip(sub.seqs, sub.y, strict=True))]
    quick = resolve_profile("quick")
    tcfg = replace(quick.train, batch_size=batch_size, seed=seed, warmup_frac=0.0)
    settings = sgd_settings(PrivacyConfig(sgd_clip=1.0, sgd_noise=1.0, noise_seed=seed).validate())
    out: dict = {"model": quick.model.name, "records": len(records), "batch_size": batch_size,
                 "max_length": quick.data.max_length}
    for tuning in TUNINGS:
        learner = Learner.build(replace(quick.model, tuning=tuning), DataConfig(max_length=quick.data.max_length),
                                tcfg, codec, None, progress=False)
        train = learner.inputs(records)
        steps = planned_steps(len(train), batch_size, 1)
        times = {"plain": [], "dp_sgd": []}
        for _ in range(2):
            sgd = RecordPrivacy.plan(settings, len(train), batch_size, steps)
            for side, private in (("plain", None), ("dp_sgd", sgd)):
                times[side].append(timed(lambda p=private, lrn=learner, t=train:
                                         lrn.fit(t, None, 1, dp_sgd=p))[0])
        best = {k: min(v) for k, v in times.items()}
        out[tuning] = {"steps": steps, "plain_s": best["plain"], "dp_sgd_s": best["dp_sgd"],
                       "ratio": ratio(best["dp_sgd"], best["plain"])}
    return out
