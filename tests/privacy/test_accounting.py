"""DP-FedAvg's pieces on their own: epsilon from Opacus, z for a target epsilon, clipping, the
noisy mean, and the settings refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
from opacus.accountants import RDPAccountant

from fedbio.errors import FedbioError
from fedbio.privacy.accounting import fedavg_epsilon, noise_for_epsilon
from fedbio.privacy.config import PrivacyConfig
from fedbio.privacy.updates import clip_update, l2_norm, noisy_mean


@pytest.mark.parametrize(("z", "epsilon"), [(1, 30.1), (2, 12.3), (5, 4.16), (10, 1.91)])
def test_the_reference_values(z, epsilon):
    """Opacus 1.6, q = 1, delta = 1e-5, 20 rounds (the values the issue quotes)."""
    assert f"{fedavg_epsilon(z, 20, 1e-5):.3g}" == str(epsilon)   # the quoted 3 digits


def test_epsilon_is_opacus_step_by_step_and_falls_as_z_rises():
    values = []
    for z in (0.5, 1.0, 2.0, 4.0):
        acc = RDPAccountant()
        for _ in range(7):
            acc.step(noise_multiplier=z, sample_rate=1.0)
        assert fedavg_epsilon(z, 7, 1e-6) == pytest.approx(acc.get_epsilon(1e-6), rel=1e-9)
        values.append(fedavg_epsilon(z, 7, 1e-6))
    assert values == sorted(values, reverse=True) and len(set(values)) == 4
    assert fedavg_epsilon(0.0, 7, 1e-5) == math.inf


@pytest.mark.parametrize(("target", "rounds"), [(1.0, 4), (8.0, 4), (3.0, 20), (30.0, 3)])
def test_a_target_epsilon_is_met_within_two_percent(target, rounds):
    z = noise_for_epsilon(target, rounds, 1e-5)
    assert 0.98 * target <= fedavg_epsilon(z, rounds, 1e-5) <= target


def test_an_unreachable_epsilon_is_one_line_with_what_to_do():
    with pytest.raises(FedbioError, match="out of reach.*give a larger epsilon"):
        noise_for_epsilon(1e-4, 50, 1e-5)


@pytest.mark.parametrize(("settings", "words"), [
    ({"clip": 1.0}, "neither given; give one"),
    ({"clip": 1.0, "noise": 1.0, "epsilon": 2.0}, "both given; give one"),
    ({"clip": 0.0, "noise": 1.0}, "--dp-clip is 0.0; give"),       # 0 used to mean "no DP"
    ({"clip": -1.0, "noise": 1.0}, "--dp-clip is -1.0; give"),
    ({"clip": float("inf"), "noise": 1.0}, "--dp-clip is inf; give"),
    ({"clip": 1e300, "noise": 1.0}, "at most"),
    ({"noise": 1.0}, "--dp-clip is None; give"),
    ({"clip": 1.0, "noise": -0.1}, "--dp-noise is -0.1; give"),
    ({"clip": 1.0, "noise": float("nan")}, "--dp-noise is nan; give"),
    ({"clip": 1.0, "noise": 1e300}, "--dp-noise is 1e\\+300; give"),
    ({"clip": 1.0, "epsilon": 0.0}, "--dp-epsilon is 0.0; give"),
    ({"clip": 1.0, "noise": 1.0, "delta": 1.0}, "--dp-delta is 1.0; give"),
    ({"clip": 1.0, "noise": 1.0, "where": "moon"}, "--dp-where is 'moon'; give"),
])
def test_settings_that_cannot_work_are_refused(settings, words):
    with pytest.raises(FedbioError, match=words) as err:
        PrivacyConfig(**settings).validate()
    assert "; give" in str(err.value)   # what is wrong; what to do


def test_no_settings_is_no_dp():
    assert not PrivacyConfig().validate().enabled


def test_a_noise_multiplier_too_small_to_account_is_refused_before_the_run():
    from fedbio.privacy.fedavg import check_accountable

    with pytest.raises(FedbioError, match="cannot bound epsilon"):
        check_accountable(1e-300, 4, 1e-5)
    assert check_accountable(0.0, 4, 1e-5) == math.inf


def test_noise_is_not_drawn_from_a_seed_unless_asked():
    """DP noise from the run's (public) seed could be drawn again and subtracted."""
    from fedbio.privacy.updates import noise_source

    fresh = [noise_source(None, 1, 2).normal(size=4) for _ in range(2)]
    assert not np.array_equal(*fresh)
    seeded = [noise_source(7, 1, 2).normal(size=4) for _ in range(2)]
    assert np.array_equal(*seeded)


def test_clipping_bounds_the_norm_and_leaves_small_updates_alone():
    rng = np.random.default_rng(0)
    big = {"a": rng.normal(size=(30, 4)).astype(np.float32), "b": rng.normal(size=7).astype(np.float32)}
    clipped, norm, scale = clip_update(big, 0.5)
    assert norm == pytest.approx(l2_norm(big)) and scale < 1
    assert l2_norm(clipped) <= 0.5 * (1 + 1e-6) and clipped["a"].dtype == np.float32
    small, norm, scale = clip_update({"a": np.full(3, 0.01)}, 0.5)
    assert scale == 1.0 and np.array_equal(small["a"], np.full(3, 0.01))


def test_the_noisy_mean_is_the_mean_plus_noise_of_sd_zs_over_m():
    updates = [{"w": np.full(20000, float(k))} for k in range(4)]
    assert np.allclose(noisy_mean(updates, 1.0, 2.0, None)["w"], 1.5)
    noisy = noisy_mean(updates, 1.0, 2.0, np.random.default_rng(1))["w"]
    assert abs(noisy.mean() - 1.5) < 0.02 and noisy.std() == pytest.approx(2.0 / 4, rel=0.03)
