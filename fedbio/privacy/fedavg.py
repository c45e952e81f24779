"""Site-level DP-FedAvg for one run: what is refused, what the sites and server are told, what
``metrics.json`` says.

    check_private_federation(privacy, task_type, min_sites, stream)   # before anything runs
    dp = run_settings(privacy, z, sites, composition)                       # sites.json, server
    metrics["privacy"] = privacy_block(dp, privacy, rounds, composition)

The sites clip (``fedbio.federation.site``), the server adds the noise and averages
(``fedbio.federation.server``); see the package docstring for the mechanism.
"""

from __future__ import annotations

from fedbio.errors import FedbioError
from fedbio.privacy.accounting import SAMPLE_RATE, accountant, fedavg_epsilon
from fedbio.privacy.config import PrivacyConfig
from fedbio.privacy.releases import releases
from fedbio.privacy.updates import fixed_composition_scaling


def check_private_federation(privacy: PrivacyConfig, task_type: str, min_sites: int,
                             stream: bool | None) -> None:
    """Refuse a DP run whose other settings would release what DP does not account for."""
    if task_type != "classification":
        raise FedbioError(f"--dp-* with a {task_type} task: its label scale is pooled from the sites "
                          "(a release DP-FedAvg does not account for); DP runs take classification "
                          "tasks (--task scl or classification)")
    if stream:
        raise FedbioError("streamed training curves are not accounted under DP: leave "
                          "FedConfig.stream_metrics unset (it is off under DP)")
    if privacy.where == "site" and min_sites:
        raise FedbioError(f"--dp-where site with --min-sites {min_sites}: the noise is split over "
                          "every site, so every site must answer; drop --min-sites or use "
                          "--dp-where server")


def run_settings(privacy: PrivacyConfig, noise_multiplier: float, sites: list[str],
                 composition: bool) -> dict:
    """What the sites (``sites.json``) and the server (``ServerSettings.dp``) need: plain data;
    ``noise_multiplier``: ``privacy.noise_multiplier(rounds)``, solved once, before the run."""
    return {"clip": float(privacy.clip), "noise_multiplier": float(noise_multiplier),
            "where": privacy.where, "noise_seed": privacy.noise_seed, "sites": len(sites),
            "index": {site: i for i, site in enumerate(sorted(sites))},
            "shared": fixed_composition_scaling() if composition else {}}


def privacy_block(dp: dict, privacy: PrivacyConfig, rounds: int, composition: bool) -> dict:
    """``metrics.json``'s ``privacy``: the mechanism, its parameters, epsilon, every release."""
    z = dp["noise_multiplier"]
    epsilon = fedavg_epsilon(z, rounds, privacy.delta)
    seeded = privacy.noise_seed is not None
    return {
        "mechanism": "site-level DP-FedAvg: Gaussian mechanism on the sum of clipped updates",
        "where": privacy.where,
        "secure_aggregation_needed": privacy.where == "site",
        "clip": dp["clip"], "noise_multiplier": z, "delta": privacy.delta,
        "epsilon": epsilon if epsilon != float("inf") else None,   # None: z = 0, no privacy
        "target_epsilon": privacy.epsilon,
        "accountant": accountant(), "rounds": rounds, "sample_rate": SAMPLE_RATE,
        "protected_unit": "a site's whole data set",
        "aggregation": "unweighted mean of clipped updates (sample-count weights would break the "
                       "sensitivity bound S/m)",
        "delivered": "the last round's global model (no selection on validation scores)",
        "releases": releases(composition),
        "noise": ("SEEDED (noise_seed): reproducible and removable by anyone who knows the seed; "
                  "this run is NOT private" if seeded else
                  "drawn from the OS's entropy, never recorded (not reproducible, by design)"),
    }


def check_accountable(noise_multiplier: float, rounds: int, delta: float) -> float:
    """Epsilon for these settings, or a FedbioError where Opacus cannot bound it (a noise
    multiplier so small its RDP overflows): said before the run, not after it."""
    try:
        return fedavg_epsilon(noise_multiplier, rounds, delta)
    except (ArithmeticError, ValueError) as err:
        raise FedbioError(f"--dp-noise {noise_multiplier:g}: the accountant cannot bound epsilon "
                          f"({type(err).__name__}); give 0 (no noise, no privacy) or a noise "
                          "multiplier of 0.01 or more") from None
