"""``PrivacyConfig``: a run's privacy defences, checked once, with the option names in errors.

    privacy = PrivacyConfig(clip=1.0, epsilon=8.0)        # fedbio run --dp-clip 1 --dp-epsilon 8
    z = privacy.noise_multiplier(rounds=4)                # solved with Opacus for epsilon 8
    privacy = PrivacyConfig(sgd_clip=1.0, sgd_noise=1.0)  # fedbio run --dp-sgd-clip 1 --dp-sgd-noise 1

Two mechanisms, either or both: site-level DP-FedAvg (``clip``/``noise``/``epsilon``/``where``:
the protected unit is a site's whole data set) and record-level DP-SGD inside each site
(``sgd_*``: the protected unit is one record). ``delta`` serves both.

Two filters on what a site sends instead of its weights, its update (local minus global
weights), for federated runs without DP: selective sharing (``share_fraction``: only the
largest-magnitude entries, Shokri & Shmatikov 2015) and NVFlare's sparse vector technique
(``svt``: a noisy selection and noisy values, with NVFlare's epsilon). Neither is a guarantee
on its own: the membership attack (``fedbio attack membership``) measures what each one buys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedbio.errors import FedbioError

WHERE = ("server", "site")
MAX_CLIP = 1e6     # far above any update's norm; larger only overflows the noise
MAX_NOISE = 1e6    # z: epsilon is already ~1e-6 per round far below this
MAX_SVT = 1e6      # SVT's epsilons and noise_var: larger only overflows NVFlare's ledger
SVT_TAU_SCALES = 6  # tau at most this many (smallest) query-noise scales: each entry then passes
                    # a round of SVT's selection with probability above ~1/800


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
    sgd_clip: float | None = None     # C: DP-SGD clips each record's gradient to this L2 norm; None = off
    sgd_noise: float | None = None    # Z: noise sd Z*C on each step's sum of clipped gradients
    sgd_epsilon: float | None = None  # or a target epsilon for every site: Z solved per site with
                                      # Opacus for its sample rate and steps, 0.98 E <= eps <= E
    secure_mode: bool = False         # Opacus's secure_mode: a cryptographic generator
                                      # (torchcsprng) for the noise and the sampling; for production
    share_fraction: float | None = None  # selective sharing: each site sends only this fraction
                                      # of its update's entries, the largest in magnitude; None = off
    share_clip: float | None = None   # ... and each entry sent clipped to [-G, G]; None = not clipped
    svt: bool = False                 # NVFlare's SVTPrivacy filter on each site's update
    svt_fraction: float = 0.1         # share of the update's entries SVT sends
    svt_epsilon: float = 0.1          # SVT's epsilon for the noisy threshold and selection
    svt_release_epsilon: float | None = None  # epsilon of the noisy values sent; None: NVFlare's
                                      # default, (entries sent) x svt_noise_var
    svt_noise_var: float = 0.1        # NVFlare's noise_var (used when svt_release_epsilon is None)
    svt_gamma: float = 1e-5           # each entry clipped to [-gamma, gamma] (its sensitivity)
    svt_tau: float = 1e-6             # the threshold, before its noise

    @property
    def site_level(self) -> bool:
        """Site-level DP-FedAvg is on (``--dp-clip``/``--dp-noise``/``--dp-epsilon``)."""
        return self.clip is not None or self.noise is not None or self.epsilon is not None

    @property
    def record_level(self) -> bool:
        """Record-level DP-SGD is on (``--dp-sgd-*``)."""
        return (self.sgd_clip is not None or self.sgd_noise is not None
                or self.sgd_epsilon is not None or bool(self.secure_mode))

    @property
    def enabled(self) -> bool:
        """Either DP mechanism: a site then releases nothing DP does not account for."""
        return self.site_level or self.record_level

    @property
    def filters_update(self) -> bool:
        """Selective sharing or SVT: each site sends a filtered update, not its weights."""
        return self.share_fraction is not None or self.svt

    def update_filter(self) -> dict | None:
        """What the sites and the server need for selective sharing or SVT (plain data)."""
        if self.share_fraction is not None:
            return {"kind": "share", "fraction": float(self.share_fraction),
                    "clip": None if self.share_clip is None else float(self.share_clip)}
        if self.svt:
            return {"kind": "svt", "fraction": float(self.svt_fraction),
                    "epsilon": float(self.svt_epsilon), "noise_var": float(self.svt_noise_var),
                    "release_epsilon": (None if self.svt_release_epsilon is None
                                        else float(self.svt_release_epsilon)),
                    "gamma": float(self.svt_gamma), "tau": float(self.svt_tau)}
        return None

    def validate(self) -> PrivacyConfig:
        """Raise a FedbioError naming the ``fedbio run`` option for settings that cannot work."""
        self._check_filters()
        if not self.enabled:
            return self
        if not (_number(self.delta) and 0 < self.delta < 1):
            raise FedbioError(f"--dp-delta is {self.delta!r}; give a number between 0 and 1, well "
                              "below 1 / (records per site), e.g. 1e-5")
        if self.record_level:
            _check_mechanism("--dp-sgd", self.sgd_clip, self.sgd_noise, self.sgd_epsilon,
                             "each record's gradient", " per site")
        if not self.site_level:
            return self
        _check_mechanism("--dp", self.clip, self.noise, self.epsilon, "each site's update", "")
        if self.where not in WHERE:
            raise FedbioError(f"--dp-where is {self.where!r}; give one of {', '.join(WHERE)}")
        return self

    def _check_filters(self) -> None:
        if self.share_fraction is not None and self.svt:
            raise FedbioError("--share-fraction and --svt: choose one filter for the update")
        if self.filters_update and self.enabled:
            raise FedbioError(f"{'--svt' if self.svt else '--share-fraction'} with --dp-*: DP "
                              "already decides what an update may carry; use one or the other")
        if self.share_fraction is not None and not (_number(self.share_fraction)
                                                    and 0 < self.share_fraction <= 1):
            raise FedbioError(f"--share-fraction is {self.share_fraction!r}; give the share of "
                              "each update's entries a site sends, above 0 and at most 1 (e.g. 0.1)")
        if self.share_clip is not None and not (_number(self.share_clip) and self.share_clip > 0):
            raise FedbioError(f"--share-clip is {self.share_clip!r}; give the bound each entry "
                              "sent is clipped to, above 0 (e.g. 0.01)")
        if not self.svt:
            return
        if not (_number(self.svt_fraction) and 0 < self.svt_fraction <= 1):
            raise FedbioError(f"--svt-fraction is {self.svt_fraction!r}; give a share above 0 "
                              "and at most 1 (e.g. 0.1)")
        for option, value, high in (("--svt-epsilon", self.svt_epsilon, MAX_SVT),
                                    ("--svt-noise-var", self.svt_noise_var, MAX_SVT),
                                    ("--svt-gamma", self.svt_gamma, MAX_CLIP)):
            if not (_number(value) and 0 < value <= high):
                raise FedbioError(f"{option} is {value!r}; give a number above 0 and at most {high:g}")
        if self.svt_release_epsilon is not None and not (_number(self.svt_release_epsilon)
                                                         and 0 < self.svt_release_epsilon <= MAX_SVT):
            raise FedbioError(f"--svt-release-epsilon is {self.svt_release_epsilon!r}; give a "
                              f"number above 0 and at most {MAX_SVT:g}, or leave it out for "
                              "NVFlare's default")
        # SVT picks entries whose clipped value plus Laplace noise passes tau plus noise, pass
        # after pass, until it has enough: a tau many noise scales above zero (the query noise
        # is at least 2 gamma / epsilon) would leave it looping, the site silent, for ever
        floor = 2 * self.svt_gamma / self.svt_epsilon
        if not (_number(self.svt_tau) and 0 <= self.svt_tau <= SVT_TAU_SCALES * floor):
            raise FedbioError(f"--svt-tau is {self.svt_tau!r}; give a threshold from 0 to "
                              f"{SVT_TAU_SCALES * floor:.3g} ({SVT_TAU_SCALES} x 2 x --svt-gamma / "
                              "--svt-epsilon): above it hardly any entry passes SVT's threshold "
                              "and a site would loop without end")

    def check_run(self, task_type: str, mode: str, model) -> None:
        """Refuse a DP run whose other settings would release what DP does not account for, or
        that DP-SGD cannot train (before anything is written); ``model``: its ``ModelConfig``."""
        if self.filters_update and mode in ("local", "central"):
            raise FedbioError(f"{'--svt' if self.svt else '--share-fraction'} filters what a site "
                              f"sends to the server; a --mode {mode} run sends nothing (use a "
                              "federated --mode)")
        if not self.enabled:
            return
        if self.site_level and mode in ("local", "central"):
            raise FedbioError("--dp-clip: site-level DP-FedAvg protects a site in a federation; a "
                              f"--mode {mode} run has none (use --dp-sgd-clip for DP-SGD, or a "
                              "federated --mode)")
        if task_type != "classification":
            options = "--dp-sgd-*" if not self.site_level else "--dp-*"
            raise FedbioError(f"{options} with a {task_type} task: its label scale is fitted to the "
                              "training records (a release DP does not account for); DP runs take "
                              "classification tasks (--task scl or classification)")
        if not self.record_level:
            return
        if mode == "fedprox":
            raise FedbioError("--dp-sgd-* with --mode fedprox: the proximal term's gradient does "
                              "not pass through Opacus's per-record clipping; use --mode fedavg "
                              "or fedopt")
        from fedbio.backends.bionemo.backend import model_backend

        backend = model_backend(model)
        if backend != "hf":
            raise FedbioError(f"--dp-sgd-* with the {backend} backend: DP-SGD runs through Opacus "
                              "on fedbio's PyTorch models; use --backend hf")

    def noise_multiplier(self, rounds: int) -> float:
        """z: ``noise``, or the smallest z (Opacus's search) whose epsilon after ``rounds`` is at
        most ``epsilon`` and at least 0.98 of it."""
        if self.noise is not None:
            return float(self.noise)
        from fedbio.privacy.accounting import noise_for_epsilon

        return noise_for_epsilon(self.epsilon, rounds, self.delta)


def _check_mechanism(prefix: str, clip, noise, epsilon, clipped: str, per: str) -> None:
    """One mechanism's clip, and its noise multiplier or target epsilon (one of the two), named
    by its options (``prefix``: ``--dp`` or ``--dp-sgd``)."""
    if not (_number(clip) and 0 < clip <= MAX_CLIP):
        raise FedbioError(f"{prefix}-clip is {clip!r}; give the L2 norm {clipped} is clipped to, "
                          f"a number above 0 and at most {MAX_CLIP:g} (e.g. 1)")
    if (noise is None) == (epsilon is None):
        given = "both" if noise is not None else "neither"
        raise FedbioError(f"{prefix}-noise and {prefix}-epsilon: {given} given; give one: the "
                          f"noise multiplier (e.g. {prefix}-noise 1) or a target epsilon{per} "
                          f"(e.g. {prefix}-epsilon 8)")
    if noise is not None and not (_number(noise) and 0 <= noise <= MAX_NOISE):
        raise FedbioError(f"{prefix}-noise is {noise!r}; give a noise multiplier from 0 (no noise, "
                          f"no privacy) to {MAX_NOISE:g}, e.g. 1")
    if epsilon is not None and not (_number(epsilon) and epsilon > 0):
        raise FedbioError(f"{prefix}-epsilon is {epsilon!r}; give a target epsilon above 0, e.g. 8")
