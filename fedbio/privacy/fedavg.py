"""Differential privacy for one run: what is refused, what the sites and server are told, what
``metrics.json`` says.

    check_private_federation(privacy, min_sites, stream)         # before anything runs
    dp = run_settings(privacy, z, sites, composition)            # sites.json, server
    metrics["privacy"] = privacy_block(dp, privacy, rounds, composition, record_level)

Site-level DP-FedAvg: the sites clip (``fedbio.federation.site``), the server adds the noise and
averages (``fedbio.federation.server``). Record-level DP-SGD: every site trains with
``fedbio.privacy.sgd`` and keeps its accountant's record in ``RUN/sites/<site>/dp_sgd.json``.
See the package docstring for the mechanisms.
"""

from __future__ import annotations

from fedbio.errors import FedbioError
from fedbio.privacy.accounting import SAMPLE_RATE, accountant, fedavg_epsilon
from fedbio.privacy.config import PrivacyConfig
from fedbio.privacy.releases import releases
from fedbio.privacy.updates import fixed_composition_scaling

SGD_RECORD = "dp_sgd.json"   # RUN/sites/<site>/dp_sgd.json: a site's DP-SGD accountant, at home


def check_private_federation(privacy: PrivacyConfig, min_sites: int, stream: bool | None) -> None:
    """Refuse a federated DP run whose other settings would release what DP does not account
    for (``PrivacyConfig.check_run`` has refused the rest)."""
    if stream:
        raise FedbioError("streamed training curves are not accounted under DP: leave "
                          "FedConfig.stream_metrics unset (it is off under DP)")
    if privacy.site_level and privacy.where == "site" and min_sites:
        raise FedbioError(f"--dp-where site with --min-sites {min_sites}: the noise is split over "
                          "every site, so every site must answer; drop --min-sites or use "
                          "--dp-where server")


def sgd_settings(privacy: PrivacyConfig) -> dict | None:
    """What every site needs for its DP-SGD (``fedbio.privacy.sgd.RecordPrivacy.plan``)."""
    if not privacy.record_level:
        return None
    return {"clip": privacy.sgd_clip, "noise": privacy.sgd_noise, "epsilon": privacy.sgd_epsilon,
            "delta": privacy.delta, "secure_mode": privacy.secure_mode,
            "noise_seed": privacy.noise_seed}


def run_settings(privacy: PrivacyConfig, noise_multiplier: float | None, sites: list[str],
                 composition: bool) -> dict:
    """What the sites (``sites.json``) and the server (``ServerSettings.dp``) need: plain data.
    ``clip`` is None without site-level DP-FedAvg; ``noise_multiplier``:
    ``privacy.noise_multiplier(rounds)``, solved once, before the run; ``sgd``: DP-SGD or None."""
    site_level = privacy.site_level
    return {"clip": float(privacy.clip) if site_level else None,
            "noise_multiplier": float(noise_multiplier) if site_level else None,
            "where": privacy.where if site_level else None, "noise_seed": privacy.noise_seed,
            "sites": len(sites), "index": {site: i for i, site in enumerate(sorted(sites))},
            "shared": fixed_composition_scaling() if composition else {},
            "sgd": sgd_settings(privacy)}


def privacy_block(dp: dict | None, privacy: PrivacyConfig, rounds: int | None, composition: bool,
                  record_level: dict | None = None) -> dict:
    """``metrics.json``'s ``privacy``: the mechanisms, their parameters, epsilon, every release.
    ``rounds`` None: a local or central run (DP-SGD only); ``record_level``: each site's (or
    model's) ``RecordPrivacy.record()``."""
    seeded = privacy.noise_seed is not None
    federated = rounds is not None
    block = {
        "mechanism": " + ".join(m for m, on in (
            ("site-level DP-FedAvg: Gaussian mechanism on the sum of clipped updates", privacy.site_level),
            ("record-level DP-SGD at each site (Opacus)", privacy.record_level)) if on),
        "delta": privacy.delta, "accountant": accountant(),
        **({"rounds": rounds} if federated else {}),
        "delivered": ("the last round's global model (no selection on validation scores)" if federated
                      else "the last epoch's model (no selection on validation scores)"),
        "releases": releases(composition, privacy.site_level, privacy.record_level, federated),
        "noise": ("SEEDED (noise_seed): reproducible and removable by anyone who knows the seed; "
                  "this run is NOT private" if seeded else
                  "drawn from the OS's entropy, never recorded (not reproducible, by design)"),
    }
    if privacy.site_level:
        z = dp["noise_multiplier"]
        epsilon = fedavg_epsilon(z, rounds, privacy.delta)
        block.update({
            "where": privacy.where, "secure_aggregation_needed": privacy.where == "site",
            "clip": dp["clip"], "noise_multiplier": z,
            "epsilon": epsilon if epsilon != float("inf") else None,   # None: z = 0, no privacy
            "target_epsilon": privacy.epsilon, "sample_rate": SAMPLE_RATE,
            "protected_unit": "a site's whole data set",
            "aggregation": "unweighted mean of clipped updates (sample-count weights would break "
                           "the sensitivity bound S/m)"})
    elif federated:
        block["aggregation"] = "unweighted mean (a site's record count is not released)"
    if privacy.record_level:
        block["dp_sgd"] = dp_sgd_block(privacy, record_level or {})
    return block


def dp_sgd_block(privacy: PrivacyConfig, sites: dict[str, dict]) -> dict:
    """``privacy.dp_sgd``: the settings, and each site's epsilon over all its steps."""
    eps = [s.get("epsilon") for s in sites.values()]
    return {"clip": privacy.sgd_clip, "noise_multiplier": privacy.sgd_noise,
            "target_epsilon": privacy.sgd_epsilon, "delta": privacy.delta,
            "secure_mode": privacy.secure_mode, "protected_unit": "one training record",
            "epsilon_max": (None if not eps or any(e is None for e in eps) else max(eps)),
            "sites": sites}


def site_records(run_dir, sites) -> dict[str, dict]:
    """Each site's DP-SGD record (``RUN/sites/<site>/dp_sgd.json``), by site name."""
    import json
    from pathlib import Path

    out = {}
    for site in sorted(sites):
        path = Path(run_dir) / "sites" / site / SGD_RECORD
        if path.is_file():
            out[site] = json.loads(path.read_text())
    return out


def check_accountable(noise_multiplier: float, rounds: int, delta: float) -> float:
    """Epsilon for these settings, or a FedbioError where Opacus cannot bound it (a noise
    multiplier so small its RDP overflows): said before the run, not after it."""
    try:
        return fedavg_epsilon(noise_multiplier, rounds, delta)
    except (ArithmeticError, ValueError) as err:
        raise FedbioError(f"--dp-noise {noise_multiplier:g}: the accountant cannot bound epsilon "
                          f"({type(err).__name__}); give 0 (no noise, no privacy) or a noise "
                          "multiplier of 0.01 or more") from None
