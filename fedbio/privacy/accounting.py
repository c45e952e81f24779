"""Epsilon from Opacus's RDP accountant: one Gaussian mechanism per round, sample rate 1.

    epsilon = fedavg_epsilon(z, rounds=20, delta=1e-5)     # z = 1 -> 30.1, 2 -> 12.3, 5 -> 4.16
    z = noise_for_epsilon(8.0, rounds=20, delta=1e-5)      # 0.98 * 8 <= epsilon(z) <= 8

Every site takes part in every round (sample rate q = 1): no amplification by sampling, and the
protected unit is a site's whole data set.
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


def fedavg_epsilon(noise_multiplier: float, rounds: int, delta: float,
                   sample_rate: float = SAMPLE_RATE) -> float:
    """Epsilon after ``rounds`` Gaussian mechanisms of noise multiplier z (inf for z = 0)."""
    if noise_multiplier <= 0:
        return math.inf
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    for _ in range(rounds):
        acc.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate)
    with warnings.catch_warnings():   # "optimal order is the largest alpha": still an upper bound
        warnings.simplefilter("ignore", UserWarning)
        return float(acc.get_epsilon(delta))


def noise_for_epsilon(epsilon: float, rounds: int, delta: float,
                      sample_rate: float = SAMPLE_RATE) -> float:
    """The noise multiplier Opacus finds for a target ``epsilon`` after ``rounds`` rounds."""
    from opacus.accountants.utils import get_noise_multiplier

    from fedbio.errors import FedbioError

    try:
        with warnings.catch_warnings():   # see fedavg_epsilon
            warnings.simplefilter("ignore", UserWarning)
            return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta,
                                              sample_rate=sample_rate, steps=rounds, accountant="rdp",
                                              epsilon_tolerance=TOLERANCE * epsilon))
    except ValueError as err:   # Opacus: "The privacy budget is too low."
        raise FedbioError(f"--dp-epsilon {epsilon:g} over {rounds} rounds at --dp-delta {delta:g} "
                          f"is out of reach (Opacus: {err}); give a larger epsilon or fewer "
                          "rounds") from None
