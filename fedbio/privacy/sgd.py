"""Record-level DP-SGD at one site, with Opacus: Poisson batches, each record's gradient clipped,
Gaussian noise, and an accountant that runs over every step the site takes, across rounds.

    sgd = RecordPrivacy.plan(sgd_settings(privacy), records=len(train), batch_size=16, steps=planned)
    fit(module, train, valid, tcfg, task_type, epochs, dp_sgd=sgd)   # each call (round) goes on
    sgd.record()       # clip, noise multiplier, sample rate, steps taken, epsilon, accountant

What Opacus does, step by step: ``GradSampleModule`` computes every record's own gradient,
``DPOptimizer`` clips each to L2 norm C, sums them, adds N(0, (ZC)^2) and divides by the expected
batch size, and its step hook steps an ``RDPAccountant`` with (Z, q). Batches are Poisson samples
(Opacus's ``UniformWithReplacementSampler``: each record is in with probability q = batch /
records), so a batch's size varies and fedbio's length bucketing is off. A parameter that gets no
gradient must be frozen: the models freeze theirs (ESM's contact head, AMPLIFY's decoder).

The sampling and the noise come from a generator seeded from the OS's entropy and never recorded
(``noise_seed``: tests only); ``secure_mode`` is Opacus's: a cryptographic generator (torchcsprng)
and noise drawn to resist floating-point attacks, for production; it costs time and is off here.
"""

from __future__ import annotations

import secrets
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from fedbio.errors import FedbioError
from fedbio.privacy.accounting import accountant, accountant_epsilon, noise_for_epsilon


def secure_generator():
    """Opacus's secure_mode generator (torchcsprng on /dev/urandom), or a FedbioError saying
    what to install."""
    try:
        import torchcsprng as csprng
    except ImportError:
        raise FedbioError("--dp-sgd-secure needs torchcsprng, the cryptographic generator "
                          "Opacus's secure_mode draws from; install it (pip install torchcsprng, "
                          "where your torch has a build), or leave --dp-sgd-secure off") from None
    return csprng.create_random_device_generator("/dev/urandom")


def site_steps(records: int, batch_size: int, epochs: float, rounds: int = 1) -> int:
    """Every DP-SGD step a site takes: ``rounds`` fits of ``epochs / rounds`` epochs each."""
    from fedbio.training.trainer import planned_steps

    return rounds * planned_steps(records, batch_size, epochs / rounds)


def plan_sites(settings: dict, counts: dict[str, int], batch_size: int, epochs: float,
               rounds: int = 1) -> dict[str, RecordPrivacy]:
    """Each site's (or model's) DP-SGD for ``counts`` training records, checked before the run:
    a FedbioError where a target epsilon is out of reach or Opacus cannot bound epsilon."""
    from fedbio.privacy.accounting import epsilon_of

    if settings.get("secure_mode"):
        secure_generator()   # torchcsprng missing: said now, not when training starts
    plans = {}
    for site, n in counts.items():
        if settings["delta"] >= 1 / max(1, n):
            raise FedbioError(f"--dp-delta {settings['delta']:g} is not below 1 / {n}, one over "
                              f"{site}'s training records: a delta that large lets a mechanism "
                              "release a record outright; give e.g. 1e-5 (well below 1 / records)")
        steps = site_steps(n, batch_size, epochs, rounds)
        try:
            plan = RecordPrivacy.plan(settings, n, batch_size, steps)
        except FedbioError as err:
            raise FedbioError(f"{site}: {err}") from None
        try:
            epsilon_of(plan.noise_multiplier, steps, plan.delta, plan.sample_rate)
        except (ArithmeticError, ValueError) as err:
            raise FedbioError(f"--dp-sgd-noise {plan.noise_multiplier:g}: the accountant cannot "
                              f"bound epsilon for {site} ({type(err).__name__}); give 0 (no noise, "
                              "no privacy) or a noise multiplier of 0.3 or more") from None
        plans[site] = plan
    return plans


def plan_models(privacy, counts: dict[str, int], central: bool, train) -> dict | None:
    """A local or central run's DP-SGD, by model (``central``: one, on every site's records;
    ``train``: its ``TrainConfig``); None without DP-SGD."""
    if not privacy.record_level:
        return None
    from fedbio.privacy.fedavg import sgd_settings

    counts = {"central": sum(counts.values())} if central else counts
    return plan_sites(sgd_settings(privacy), counts, train.batch_size, train.epochs)


SAMPLING = ("Poisson (Opacus UniformWithReplacementSampler, q = batch / records); length "
            "bucketing off")


class RecordPrivacy:
    """One site's DP-SGD: its settings, its generator, and its accountant over all its steps."""

    def __init__(self, clip: float, noise_multiplier: float, records: int, batch_size: int,
                 delta: float, planned_steps: int, *, target_epsilon: float | None = None,
                 secure_mode: bool = False, noise_seed: int | None = None):
        from opacus.accountants import RDPAccountant

        self.clip, self.noise_multiplier, self.delta = float(clip), float(noise_multiplier), delta
        self.records, self.batch_size = int(records), int(batch_size)
        self.sample_rate = min(1.0, self.batch_size / max(1, self.records))
        self.planned_steps, self.target_epsilon = int(planned_steps), target_epsilon
        self.secure_mode, self.noise_seed = bool(secure_mode), noise_seed
        self.accountant = RDPAccountant()
        self.steps = 0
        self._generator = None

    @classmethod
    def plan(cls, settings: dict, records: int, batch_size: int, steps: int) -> RecordPrivacy:
        """From ``fedbio.privacy.fedavg.sgd_settings`` (plain data: what ``sites.json`` carries);
        ``steps``: every step the site will take (a target epsilon is solved with Opacus for
        them, at q = batch / records)."""
        if records < 1:
            raise FedbioError("DP-SGD needs at least one training record at every site")
        q = min(1.0, batch_size / records)
        z = settings["noise"]
        if z is None:
            z = noise_for_epsilon(settings["epsilon"], steps, settings["delta"], q,
                                  option="--dp-sgd-epsilon", unit="steps")
        return cls(settings["clip"], z, records, batch_size, settings["delta"], steps,
                   target_epsilon=settings["epsilon"], secure_mode=settings["secure_mode"],
                   noise_seed=settings.get("noise_seed"))

    # -- randomness ---------------------------------------------------------------------------
    def generator(self) -> torch.Generator:
        """The generator of the batches and the noise (see the module docstring)."""
        if self._generator is None:
            if self.secure_mode:
                self._generator = secure_generator()
            else:
                seed = self.noise_seed if self.noise_seed is not None else secrets.randbits(63)
                self._generator = torch.Generator().manual_seed(int(seed))
        return self._generator

    def batches(self, steps: int) -> Iterator[np.ndarray]:
        """``steps`` Poisson samples of record indices (some may be empty)."""
        from opacus.utils.uniform_sampler import UniformWithReplacementSampler

        sampler = UniformWithReplacementSampler(num_samples=self.records, sample_rate=self.sample_rate,
                                                generator=self.generator(), steps=steps)
        for idx in sampler:
            yield np.asarray(idx, dtype=np.int64)

    # -- training -----------------------------------------------------------------------------
    @contextmanager
    def private(self, module: nn.Module, optimizer: torch.optim.Optimizer):
        """``(model, optimizer)``: ``module`` computing per-record gradients, ``optimizer`` as
        Opacus's ``DPOptimizer`` whose every step the accountant counts. Opacus's hooks and
        attributes are removed from ``module`` on the way out, whatever happens."""
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        model = GradSampleModule(module, loss_reduction="mean")
        try:
            dp_optimizer = DPOptimizer(optimizer, noise_multiplier=self.noise_multiplier,
                                       max_grad_norm=self.clip, expected_batch_size=self.batch_size,
                                       loss_reduction="mean", generator=self.generator(),
                                       secure_mode=self.secure_mode)
            dp_optimizer.attach_step_hook(self._count)
            with warnings.catch_warnings():
                # a frozen encoder under LoRA/head: no input needs a gradient, which is expected
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                yield model, dp_optimizer
        finally:
            model._close()

    def resume(self, path) -> None:
        """Continue the accounting of an earlier ``record()`` written to ``path`` (if there is
        one): its steps are stepped again, so epsilon covers them after a process restart."""
        import json
        from pathlib import Path

        if not Path(path).is_file():
            return
        earlier = json.loads(Path(path).read_text())
        for _ in range(int(earlier["steps"]) - self.steps):
            self._count(None)

    def _count(self, optimizer) -> None:
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
        self.steps += 1

    @staticmethod
    def empty_batch(optimizer) -> None:
        """A Poisson batch with no record: no forward pass, zero per-record gradients, so the
        step still adds its noise (and is counted) as the accountant assumes."""
        for p in optimizer.params:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)

    @staticmethod
    def check_gradients(optimizer) -> None:
        """Every trainable parameter got a per-record gradient (else Opacus fails obscurely)."""
        missing = [i for i, p in enumerate(optimizer.params) if getattr(p, "grad_sample", None) is None]
        if missing:
            raise FedbioError(f"DP-SGD: {len(missing)} trainable parameter(s) got no per-record "
                              "gradient (they take no part in the forward pass); freeze them "
                              "(requires_grad False) before training with DP-SGD")

    # -- results ------------------------------------------------------------------------------
    def epsilon(self) -> float | None:
        """Epsilon over every step taken so far; None for Z = 0 (no privacy)."""
        if self.noise_multiplier <= 0:
            return None
        return accountant_epsilon(self.accountant, self.delta) if self.steps else 0.0

    def record(self) -> dict:
        """What ``metrics.json`` says about this site's DP-SGD."""
        return {"clip": self.clip, "noise_multiplier": self.noise_multiplier,
                "target_epsilon": self.target_epsilon, "delta": self.delta,
                "sample_rate": self.sample_rate, "batch_size": self.batch_size,
                "steps": self.steps, "planned_steps": self.planned_steps,
                "epsilon": self.epsilon(), "accountant": accountant(),
                "secure_mode": self.secure_mode, "sampling": SAMPLING,
                "noise": "seeded (noise_seed): NOT private" if self.noise_seed is not None
                         else "drawn from the OS's entropy, never recorded"}
