"""Epsilon from Opacus's RDP accountant.

    epsilon = fedavg_epsilon(z, rounds=20, delta=1e-5)     # z = 1 -> 30.1, 2 -> 12.3, 5 -> 4.16
    z = noise_for_epsilon(8.0, rounds=20, delta=1e-5)      # 0.98 * 8 <= epsilon(z) <= 8
    epsilon = epsilon_of(z, steps=600, delta=1e-5, sample_rate=0.02)   # DP-SGD at one site

DP-FedAvg: one Gaussian mechanism per round; every site takes part in every round (sample rate
q = 1): no amplification by sampling, and the protected unit is a site's whole data set.
DP-SGD (``fedbio.privacy.sgd``): one sampled Gaussian mechanism per step, q = batch / records.
"""

from __future__ import annotations

import math
import warnings

SAMPLE_RATE = 1.0        # every site, every round
TOLERANCE = 0.02         # a solved z gives (1 - TOLERANCE) * E <= epsilon <= E


def accountant() -> dict:
    """Which accountant, which version: recorded with every epsilon."""
    import opacus

    return {"name": "opacus.accountants.RDPAccountant", "version": opacus.__version__}


def epsilon_of(noise_multiplier: float, steps: int, delta: float, sample_rate: float) -> float:
    """Epsilon after ``steps`` sampled Gaussian mechanisms (inf for z = 0), as Opacus's
    ``RDPAccountant`` gives it when stepped once per mechanism."""
    if noise_multiplier <= 0:
        return math.inf
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    for _ in range(steps):
        acc.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate)
    return accountant_epsilon(acc, delta)


def accountant_epsilon(acc, delta: float) -> float:
    """``acc.get_epsilon(delta)``, without Opacus's "optimal order is the largest alpha"
    warning (the bound is still an upper bound)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(acc.get_epsilon(delta))


def fedavg_epsilon(noise_multiplier: float, rounds: int, delta: float,
                   sample_rate: float = SAMPLE_RATE) -> float:
    """Epsilon after ``rounds`` Gaussian mechanisms of noise multiplier z (inf for z = 0)."""
    return epsilon_of(noise_multiplier, rounds, delta, sample_rate)


def noise_for_epsilon(epsilon: float, rounds: int, delta: float,
                      sample_rate: float = SAMPLE_RATE, option: str = "--dp-epsilon",
                      unit: str = "rounds") -> float:
    """The noise multiplier Opacus finds for a target ``epsilon`` after ``rounds`` mechanisms
    (DP-SGD: steps) at ``sample_rate``; ``option`` and ``unit`` name them in the error."""
    from opacus.accountants.utils import get_noise_multiplier

    from fedbio.errors import FedbioError

    try:
        with warnings.catch_warnings():   # see accountant_epsilon
            warnings.simplefilter("ignore", UserWarning)
            return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta,
                                              sample_rate=sample_rate, steps=rounds, accountant="rdp",
                                              epsilon_tolerance=TOLERANCE * epsilon))
    except ValueError as err:   # Opacus: "The privacy budget is too low."
        raise FedbioError(f"{option} {epsilon:g} over {rounds} {unit} at --dp-delta {delta:g} "
                          f"is out of reach (Opacus: {err}); give a larger epsilon or fewer "
                          f"{unit}") from None
