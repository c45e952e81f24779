"""A site's update clipped to L2 norm S, Gaussian noise, and the noisy unweighted mean (numpy).

    clipped, norm, scale = clip_update(update, S)                 # at the site
    mean = noisy_mean([clipped_1, ..., clipped_m], S, z, rng)     # at the server (--dp-where server)

The mean is not weighted by sample counts: a weight that grows with a site's data would let one
site move the mean by more than S/m, the bound the noise is calibrated to. Norms and sums run in
float64; arrays keep their dtype.
"""

from __future__ import annotations

import numpy as np


def noise_source(seed: int | None = None, *key: int) -> np.random.Generator:
    """Where DP noise comes from: 128 bits of the OS's entropy, never recorded, so nobody can draw
    the same noise again and subtract it. ``seed`` (``PrivacyConfig.noise_seed``, tests only)
    makes it reproducible, and removable by anyone who knows the seed."""
    import secrets

    return np.random.default_rng([seed, *key] if seed is not None else secrets.randbits(128))


def l2_norm(arrays: dict) -> float:
    return float(np.sqrt(sum(np.sum(np.asarray(a, np.float64) ** 2) for a in arrays.values())))


def clip_update(update: dict, clip: float) -> tuple[dict[str, np.ndarray], float, float]:
    """``update`` scaled to norm at most ``clip``; also its norm before and the scale applied."""
    norm = l2_norm(update)
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    out = {k: (np.asarray(v, np.float64) * scale).astype(np.asarray(v).dtype)
           for k, v in update.items()}
    return out, norm, scale


def add_noise(arrays: dict, sd: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Each entry plus N(0, sd^2), drawn in sorted-name order from ``rng``."""
    if sd <= 0:
        return {k: np.asarray(v) for k, v in arrays.items()}
    return {k: (np.asarray(arrays[k], np.float64) + rng.normal(0.0, sd, np.shape(arrays[k])))
            .astype(np.asarray(arrays[k]).dtype) for k in sorted(arrays)}


def noisy_mean(updates: list[dict], clip: float, noise_multiplier: float,
               rng: np.random.Generator | None) -> dict[str, np.ndarray]:
    """``(sum of updates + N(0, (z S)^2)) / m``; ``rng=None`` adds no noise (site-side noise)."""
    names = sorted(updates[0])
    total = {k: np.sum([np.asarray(u[k], np.float64) for u in updates], axis=0) for k in names}
    if rng is not None:
        total = {k: v + rng.normal(0.0, noise_multiplier * clip, np.shape(v)) for k, v in total.items()}
    dtype = {k: np.asarray(updates[0][k]).dtype for k in names}
    return {k: (total[k] / len(updates)).astype(dtype[k]) for k in names}


def fixed_composition_scaling(n_residues: int = 20) -> dict[str, list[float]]:
    """The composition model's scaler without data: each frequency divided by its value when
    every residue is equally likely (1/20, pairs 1/400) after subtracting it, so ``x / p - 1``.
    Used under DP, where pooling the sites' feature statistics would be a release."""
    pairs = n_residues * n_residues
    mean = [1.0 / n_residues] * n_residues + [1.0 / pairs] * pairs
    return {"feature_mean": mean, "feature_std": list(mean)}


def use_fixed_scaling(model) -> None:
    """Set a composition model's scaler to ``fixed_composition_scaling`` (a run under DP)."""
    import torch

    fixed = fixed_composition_scaling()
    with torch.no_grad():
        model.mean.copy_(torch.tensor(fixed["feature_mean"]))
        model.std.copy_(torch.tensor(fixed["feature_std"]))
