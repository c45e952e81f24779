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
PRIVACY_OPTIONS = {**SITE_LEVEL, "--dp-delta": "dp_delta", **RECORD_LEVEL}


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


def privacy_config(args) -> PrivacyConfig:
    """The run's ``PrivacyConfig`` from ``--dp-*``, validated."""
    given = {field: getattr(args, name) for field, name in
             (("clip", "dp_clip"), ("noise", "dp_noise"), ("epsilon", "dp_epsilon"),
              ("delta", "dp_delta"), ("where", "dp_where"), ("sgd_clip", "dp_sgd_clip"),
              ("sgd_noise", "dp_sgd_noise"), ("sgd_epsilon", "dp_sgd_epsilon"))}
    given["secure_mode"] = bool(args.dp_sgd_secure) or None
    return PrivacyConfig(**{k: v for k, v in given.items() if v is not None}).validate()
