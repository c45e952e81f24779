"""``PrivacyConfig``: site-level DP-FedAvg's settings, checked once, with the option names in errors.

    privacy = PrivacyConfig(clip=1.0, epsilon=8.0)        # fedbio run --dp-clip 1 --dp-epsilon 8
    z = privacy.noise_multiplier(rounds=4)                # solved with Opacus for epsilon 8
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedbio.errors import FedbioError

WHERE = ("server", "site")
MAX_CLIP = 1e6     # far above any update's norm; larger only overflows the noise
MAX_NOISE = 1e6    # z: epsilon is already ~1e-6 per round far below this


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class PrivacyConfig:
    clip: float | None = None      # S: each site's update (local minus global weights) clipped to
                                   # this L2 norm; None = no DP
    noise: float | None = None     # z: noise sd z*S on the sum of the updates (central-equivalent)
    epsilon: float | None = None   # or a target epsilon: z solved with Opacus, 0.98 E <= eps <= E
    delta: float = 1e-5            # the delta of (epsilon, delta)-DP
    where: str = "server"          # server: a trusted aggregator adds N(0, z^2 S^2) to the sum;
                                   # site: each of m sites adds N(0, z^2 S^2 / m) to its update
    noise_seed: int | None = None  # None: noise from the OS's entropy, never recorded. A seed makes
                                   # the noise reproducible, and removable by anyone who knows it:
                                   # tests only (metrics.json then says the run is not private)

    @property
    def enabled(self) -> bool:
        return self.clip is not None or self.noise is not None or self.epsilon is not None

    def validate(self) -> PrivacyConfig:
        """Raise a FedbioError naming the ``fedbio run`` option for settings that cannot work."""
        if not self.enabled:
            return self
        if not (_number(self.clip) and 0 < self.clip <= MAX_CLIP):
            raise FedbioError(f"--dp-clip is {self.clip!r}; give the L2 norm each site's update is "
                              f"clipped to, a number above 0 and at most {MAX_CLIP:g} (e.g. 1)")
        if (self.noise is None) == (self.epsilon is None):
            given = "both" if self.noise is not None else "neither"
            raise FedbioError(f"--dp-noise and --dp-epsilon: {given} given; give one: the noise "
                              "multiplier z (e.g. --dp-noise 1) or a target epsilon (e.g. "
                              "--dp-epsilon 8)")
        if self.noise is not None and not (_number(self.noise) and 0 <= self.noise <= MAX_NOISE):
            raise FedbioError(f"--dp-noise is {self.noise!r}; give a noise multiplier from 0 (no "
                              f"noise, no privacy) to {MAX_NOISE:g}, e.g. 1")
        if self.epsilon is not None and not (_number(self.epsilon) and self.epsilon > 0):
            raise FedbioError(f"--dp-epsilon is {self.epsilon!r}; give a target epsilon above 0, "
                              "e.g. 8")
        if not (_number(self.delta) and 0 < self.delta < 1):
            raise FedbioError(f"--dp-delta is {self.delta!r}; give a number between 0 and 1, well "
                              "below 1 / (records per site), e.g. 1e-5")
        if self.where not in WHERE:
            raise FedbioError(f"--dp-where is {self.where!r}; give one of {', '.join(WHERE)}")
        return self

    def noise_multiplier(self, rounds: int) -> float:
        """z: ``noise``, or the smallest z (Opacus's search) whose epsilon after ``rounds`` is at
        most ``epsilon`` and at least 0.98 of it."""
        if self.noise is not None:
            return float(self.noise)
        from fedbio.privacy.accounting import noise_for_epsilon

        return noise_for_epsilon(self.epsilon, rounds, self.delta)
