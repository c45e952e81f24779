"""Profiles: what a run does on this machine, and why it was chosen.

    quick      offline; a tiny randomly initialised ESM-2, fully tuned. A stand-in for the mechanics:
               its numbers are not the science (a random encoder must learn everything).
    laptop     CPU with real weights: ESM-2 8M (or 35M), frozen encoder, cached embeddings, MLP head.
    reference  the reference recipe for GPUs: ESM-2 650M, frozen encoder, lr 5e-4, batch 64,
               max length 512, MLP hidden 256, dropout 0.1.
    auto       CUDA -> reference; real weights present locally -> laptop; otherwise quick.

Choose with ``--profile`` or ``FEDBIO_PROFILE``. Every profile keeps ``ModelConfig.backend`` "hf"
and ``TrainConfig.device`` / ``.precision`` "auto": on a CUDA GPU the model trains there, in
bf16-mixed where the GPU has bfloat16; on a CPU in float32. ``runtime(profile)`` says what that
resolves to here (the same resolvers ``Learner.build`` uses); ``--backend``, ``--device``,
``--precision`` override it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from fedbio.config import DataConfig, ModelConfig, TrainConfig
from fedbio.errors import FedbioError

PROFILES = ("quick", "laptop", "reference", "auto")
LAPTOP_MODELS = ("esm2-8m", "esm2-35m")


@dataclass
class Profile:
    name: str
    reason: str
    model: ModelConfig
    data: DataConfig
    train: TrainConfig


def quick_settings() -> tuple[ModelConfig, DataConfig, TrainConfig]:
    return (ModelConfig(name="esm2-tiny", tuning="full"),
            DataConfig(max_length=64, crop="ends"),
            TrainConfig(epochs=8, lr=3e-3, batch_size=32, warmup_frac=0.06))


def laptop_settings(model: str) -> tuple[ModelConfig, DataConfig, TrainConfig]:
    return (ModelConfig(name=model, tuning="head"),
            DataConfig(max_length=512, crop="ends"),
            TrainConfig(epochs=30, lr=1e-3, batch_size=32))


def reference_settings() -> tuple[ModelConfig, DataConfig, TrainConfig]:
    return (ModelConfig(name="esm2-650m", tuning="head", head_hidden=256, dropout=0.1),
            DataConfig(max_length=512, crop="ends"),
            TrainConfig(epochs=50, lr=5e-4, batch_size=64))


def composition_train(seed: int = 0) -> TrainConfig:
    """Training settings for the composition baseline (a linear model: many cheap epochs)."""
    return TrainConfig(epochs=40, lr=5e-3, batch_size=32, weight_decay=1e-2, warmup_frac=0.0,
                       grad_clip=0.0, seed=seed)


def resolve_profile(name: str | None = None, weights_dir: str | None = None) -> Profile:
    """The profile asked for (argument, else ``$FEDBIO_PROFILE``, else ``auto``) and why."""
    asked = name or os.environ.get("FEDBIO_PROFILE") or "auto"
    if asked not in PROFILES:
        raise FedbioError(f"unknown profile {asked!r}; choose one of {', '.join(PROFILES)}")
    source = "--profile" if name else ("FEDBIO_PROFILE" if os.environ.get("FEDBIO_PROFILE") else "default")
    if asked == "quick":
        return Profile("quick", f"asked for by {source}", *quick_settings())
    if asked == "reference":
        return Profile("reference", f"asked for by {source}", *reference_settings())
    from fedbio.models import find_local_weights

    found = next((m for m in LAPTOP_MODELS if find_local_weights(m, weights_dir)), None)
    if asked == "laptop":
        if found is None:
            raise FedbioError("profile 'laptop' needs esm2-8m or esm2-35m weights on this machine: "
                              "run `fedbio weights download esm2-8m` when online, or point "
                              "--weights-dir / FEDBIO_WEIGHTS at weights carried here")
        return Profile("laptop", f"asked for by {source}; using {found} weights", *laptop_settings(found))
    from fedbio.training.device import cuda_available

    if cuda_available():
        return Profile("reference", "auto: a CUDA GPU is available", *reference_settings())
    if found:
        return Profile("laptop", f"auto: no GPU, but {found} weights are present locally",
                       *laptop_settings(found))
    return Profile("quick", "auto: no GPU and no pretrained weights found locally "
                   "(FEDBIO_WEIGHTS, --weights-dir, Hugging Face cache)", *quick_settings())


def runtime(profile: Profile) -> dict[str, str]:
    """What ``profile`` runs on here: ``backend`` (``model_backend``), ``device`` and
    ``precision`` (``fedbio.training.device.placement``) and a one-line ``reason``; the same resolvers
    ``Learner.build`` and the trainer call, so this is what a run does."""
    from fedbio.backends.bionemo.backend import model_backend
    from fedbio.training.device import placement

    backend = model_backend(profile.model)
    place = placement(profile.train)
    return {"backend": backend, "device": str(place.device), "precision": place.precision,
            "reason": f"backend {profile.model.backend} -> {backend}; {place.reason}"}


def with_seed(profile: Profile, seed: int) -> Profile:
    return replace(profile, train=replace(profile.train, seed=seed))
