"""``fedbio run``'s ``--dp-*`` options: declared from ``PrivacyConfig``, read back into one.

    add_privacy_arguments(run_parser)          # fedbio.cli
    privacy = privacy_config(args)             # checked: one line naming the option
"""

from __future__ import annotations

from fedbio.privacy.config import WHERE, PrivacyConfig

PRIVACY_OPTIONS = {"--dp-clip": "dp_clip", "--dp-noise": "dp_noise", "--dp-epsilon": "dp_epsilon",
                   "--dp-delta": "dp_delta", "--dp-where": "dp_where"}


def add_privacy_arguments(p) -> None:
    """Site-level DP-FedAvg's options, in a group of their own; defaults from ``PrivacyConfig``."""
    g = p.add_argument_group("differential privacy (site-level DP-FedAvg, accounted by Opacus)")
    g.add_argument("--dp-clip", type=float, default=None, metavar="S",
                   help="clip each site's update to L2 norm S (turns DP on)")
    g.add_argument("--dp-noise", type=float, default=None, metavar="Z",
                   help="noise multiplier z: N(0, (zS)^2) on the sum of updates")
    g.add_argument("--dp-epsilon", type=float, default=None, metavar="E",
                   help="target epsilon instead of --dp-noise (z solved with Opacus)")
    g.add_argument("--dp-delta", type=float, default=None, metavar="D",
                   help=f"delta (default {PrivacyConfig.delta:g})")
    g.add_argument("--dp-where", default=None, choices=WHERE,
                   help=f"who adds the noise (default {PrivacyConfig.where}; site: each site adds "
                        "its share, equal to central noise only under secure aggregation)")


def privacy_config(args) -> PrivacyConfig:
    """The run's ``PrivacyConfig`` from ``--dp-*``, validated."""
    given = {field: getattr(args, name) for field, name in
             (("clip", "dp_clip"), ("noise", "dp_noise"), ("epsilon", "dp_epsilon"),
              ("delta", "dp_delta"), ("where", "dp_where"))}
    return PrivacyConfig(**{k: v for k, v in given.items() if v is not None}).validate()
