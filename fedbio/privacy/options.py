"""``fedbio run``'s ``--dp-*`` options: declared from ``PrivacyConfig``, read back into one.

    add_privacy_arguments(run_parser)          # fedbio.cli
    privacy = privacy_config(args)             # checked: one line naming the option
"""

from __future__ import annotations

from fedbio.privacy.config import WHERE, PrivacyConfig

SITE_LEVEL = {"--dp-clip": "dp_clip", "--dp-noise": "dp_noise", "--dp-epsilon": "dp_epsilon",
              "--dp-where": "dp_where"}
RECORD_LEVEL = {"--dp-sgd-clip": "dp_sgd_clip", "--dp-sgd-noise": "dp_sgd_noise",
                "--dp-sgd-epsilon": "dp_sgd_epsilon", "--dp-sgd-secure": "dp_sgd_secure"}
FILTERS = {"--share-fraction": "share_fraction", "--share-clip": "share_clip", "--svt": "svt",
           "--svt-fraction": "svt_fraction", "--svt-epsilon": "svt_epsilon",
           "--svt-release-epsilon": "svt_release_epsilon", "--svt-noise-var": "svt_noise_var",
           "--svt-gamma": "svt_gamma", "--svt-tau": "svt_tau"}
PRIVACY_OPTIONS = {**SITE_LEVEL, "--dp-delta": "dp_delta", **RECORD_LEVEL, **FILTERS}


def applicable(args, federated: bool) -> list[tuple[str, object, bool, str]]:
    """``fedbio.cli.check_applicable``'s rules for the ``--dp-*`` options: (option, value,
    applies, where it applies)."""
    fed_runs = "federated runs (--mode fedavg, fedprox, fedopt)"
    site_level, record_level = args.dp_clip is not None, args.dp_sgd_clip is not None
    rules = [(option, getattr(args, name), federated, fed_runs) for option, name in SITE_LEVEL.items()]
    rules += [(option, getattr(args, name), site_level, "site-level DP runs (--dp-clip S)")
              for option, name in SITE_LEVEL.items() if option != "--dp-clip"]
    rules += [(option, getattr(args, name) or None, record_level, "DP-SGD runs (--dp-sgd-clip C)")
              for option, name in RECORD_LEVEL.items() if option != "--dp-sgd-clip"]
    rules.append(("--dp-delta", args.dp_delta, site_level or record_level,
                  "DP runs (--dp-clip S or --dp-sgd-clip C)"))
    rules += [(option, getattr(args, name) or None, federated, fed_runs) for option, name in FILTERS.items()]
    rules.append(("--share-clip", args.share_clip, args.share_fraction is not None,
                  "selective sharing (--share-fraction F)"))
    rules += [(option, getattr(args, name), bool(args.svt), "SVT runs (--svt)")
              for option, name in FILTERS.items() if option.startswith("--svt-")]
    return rules


def add_privacy_arguments(p) -> None:
    """Site-level DP-FedAvg's and DP-SGD's options, each in a group of their own; defaults from
    ``PrivacyConfig``."""
    g = p.add_argument_group("differential privacy (site-level DP-FedAvg, accounted by Opacus)")
    g.add_argument("--dp-clip", type=float, default=None, metavar="S",
                   help="clip each site's update to L2 norm S (turns DP on)")
    g.add_argument("--dp-noise", type=float, default=None, metavar="Z",
                   help="noise multiplier z: N(0, (zS)^2) on the sum of updates")
    g.add_argument("--dp-epsilon", type=float, default=None, metavar="E",
                   help="target epsilon instead of --dp-noise (z solved with Opacus)")
    g.add_argument("--dp-delta", type=float, default=None, metavar="D",
                   help=f"delta of both mechanisms (default {PrivacyConfig.delta:g})")
    g.add_argument("--dp-where", default=None, choices=WHERE,
                   help=f"who adds the noise (default {PrivacyConfig.where}; site: each site adds "
                        "its share, equal to central noise only under secure aggregation)")
    g = p.add_argument_group("differential privacy (record-level DP-SGD at each site, Opacus)")
    g.add_argument("--dp-sgd-clip", type=float, default=None, metavar="C",
                   help="clip each record's gradient to L2 norm C (turns DP-SGD on)")
    g.add_argument("--dp-sgd-noise", type=float, default=None, metavar="Z",
                   help="noise multiplier: N(0, (ZC)^2) on each step's sum of gradients")
    g.add_argument("--dp-sgd-epsilon", type=float, default=None, metavar="E",
                   help="target epsilon per site instead of --dp-sgd-noise (solved with Opacus)")
    g.add_argument("--dp-sgd-secure", action="store_true",
                   help="Opacus's secure_mode: cryptographic noise and sampling (needs torchcsprng)")
    d = PrivacyConfig()
    g = p.add_argument_group("filters on each site's update (federated runs without DP; measure "
                             "them with fedbio attack membership)")
    g.add_argument("--share-fraction", type=float, default=None, metavar="F",
                   help="selective sharing: send only the largest-magnitude F of the update's "
                        "entries (0.1: the top 10%%)")
    g.add_argument("--share-clip", type=float, default=None, metavar="G",
                   help="with --share-fraction: clip each entry sent to [-G, G]")
    g.add_argument("--svt", action="store_true",
                   help="NVFlare's sparse vector technique (SVTPrivacy) on the update")
    g.add_argument("--svt-fraction", type=float, default=None, metavar="F",
                   help=f"share of entries SVT sends (default {d.svt_fraction:g})")
    g.add_argument("--svt-epsilon", type=float, default=None, metavar="E",
                   help=f"SVT's epsilon for threshold and selection (default {d.svt_epsilon:g})")
    g.add_argument("--svt-release-epsilon", type=float, default=None, metavar="E",
                   help="epsilon of the values sent (default: entries sent x --svt-noise-var)")
    g.add_argument("--svt-noise-var", type=float, default=None, metavar="V",
                   help=f"NVFlare's noise_var (default {d.svt_noise_var:g})")
    g.add_argument("--svt-gamma", type=float, default=None, metavar="G",
                   help=f"clip each entry to [-G, G] (default {d.svt_gamma:g})")
    g.add_argument("--svt-tau", type=float, default=None, metavar="T",
                   help=f"SVT's threshold before noise (default {d.svt_tau:g})")


def privacy_config(args) -> PrivacyConfig:
    """The run's ``PrivacyConfig`` from ``--dp-*``, validated."""
    given = {field: getattr(args, name) for field, name in
             (("clip", "dp_clip"), ("noise", "dp_noise"), ("epsilon", "dp_epsilon"),
              ("delta", "dp_delta"), ("where", "dp_where"), ("sgd_clip", "dp_sgd_clip"),
              ("sgd_noise", "dp_sgd_noise"), ("sgd_epsilon", "dp_sgd_epsilon"))}
    given["secure_mode"] = bool(args.dp_sgd_secure) or None
    given.update({field: getattr(args, field) for field in FILTERS.values()})   # named as the fields
    given["svt"] = bool(args.svt) or None
    return PrivacyConfig(**{k: v for k, v in given.items() if v is not None}).validate()


def announce_privacy(privacy, fed) -> None:
    """The run's privacy defences, one line each (``fedbio run`` prints them once all is checked)."""
    if privacy.site_level:
        z = privacy.noise_multiplier(fed.rounds)
        print(f"privacy: site-level DP-FedAvg, updates clipped to {privacy.clip:g}, noise "
              f"multiplier {z:.4g} ({privacy.where}), delta {privacy.delta:g}", flush=True)
    if privacy.record_level:
        noise = (f"noise multiplier {privacy.sgd_noise:g}" if privacy.sgd_noise is not None
                 else f"noise for epsilon {privacy.sgd_epsilon:g} at each site")
        print(f"privacy: DP-SGD at each site (Opacus), record gradients clipped to "
              f"{privacy.sgd_clip:g}, {noise}, delta {privacy.delta:g}"
              + (", secure_mode" if privacy.secure_mode else ""), flush=True)
    if privacy.share_fraction is not None:
        print(f"privacy: selective sharing: each site sends the largest {100 * privacy.share_fraction:g} % "
              "of its update's entries" + (f", clipped to ±{privacy.share_clip:g}"
                                           if privacy.share_clip else ""), flush=True)
    if privacy.svt:
        print(f"privacy: NVFlare's SVT on each update (fraction {privacy.svt_fraction:g}, epsilon "
              f"{privacy.svt_epsilon:g}, gamma {privacy.svt_gamma:g})", flush=True)
