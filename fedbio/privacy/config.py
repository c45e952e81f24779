"""``PrivacyConfig``: site-level DP-FedAvg's settings, checked once, with the option names in errors.

    privacy = PrivacyConfig(clip=1.0, epsilon=8.0)        # fedbio run --dp-clip 1 --dp-epsilon 8
    z = privacy.noise_multiplier(rounds=4)                # solved with Opacus for epsilon 8
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedbio.errors import FedbioError

WHERE = ("server", "site")


@dataclass
class PrivacyConfig:
    clip: float = 0.0              # S: each site's update (local minus global weights) clipped to
                                   # this L2 norm; 0 = no DP
    noise: float | None = None     # z: noise sd z*S on the sum of the updates (central-equivalent)
    epsilon: float | None = None   # or a target epsilon: z solved with Opacus, 0.98 E <= eps <= E
    delta: float = 1e-5            # the delta of (epsilon, delta)-DP
    where: str = "server"          # server: a trusted aggregator adds N(0, z^2 S^2) to the sum;
                                   # site: each of m sites adds N(0, z^2 S^2 / m) to its update

    @property
    def enabled(self) -> bool:
        return bool(self.clip) or self.noise is not None or self.epsilon is not None

    def validate(self) -> PrivacyConfig:
        """Raise a FedbioError naming the ``fedbio run`` option for settings that cannot work."""
        if not self.enabled:
            return self
        if not (isinstance(self.clip, (int, float)) and math.isfinite(self.clip) and self.clip > 0):
            raise FedbioError(f"--dp-clip must be a positive number (the L2 norm each site's update "
                              f"is clipped to), not {self.clip!r}")
        if (self.noise is None) == (self.epsilon is None):
            raise FedbioError("give one of --dp-noise (the noise multiplier z) and --dp-epsilon "
                              "(a target epsilon, z solved for it)")
        if self.noise is not None and not (math.isfinite(self.noise) and self.noise >= 0):
            raise FedbioError(f"--dp-noise must be 0 or more, not {self.noise!r}")
        if self.epsilon is not None and not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise FedbioError(f"--dp-epsilon must be a positive number, not {self.epsilon!r}")
        if not (math.isfinite(self.delta) and 0 < self.delta < 1):
            raise FedbioError(f"--dp-delta must lie between 0 and 1, not {self.delta!r}")
        if self.where not in WHERE:
            raise FedbioError(f"--dp-where must be one of {', '.join(WHERE)}, not {self.where!r}")
        return self

    def noise_multiplier(self, rounds: int) -> float:
        """z: ``noise``, or the smallest z (Opacus's search) whose epsilon after ``rounds`` is at
        most ``epsilon`` and at least 0.98 of it."""
        if self.noise is not None:
            return float(self.noise)
        from fedbio.privacy.accounting import noise_for_epsilon

        return noise_for_epsilon(self.epsilon, rounds, self.delta)
