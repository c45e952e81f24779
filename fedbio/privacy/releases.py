"""What a site sends (or a run writes) under DP, and how each release is handled.

    metrics["privacy"]["releases"] = releases(composition=True, site_level=True, record_level=False)

Every entry is either accounted or not sent; the one exception, a failed site's error type, says
that a site failed and nothing about its data.
"""

from __future__ import annotations


def releases(composition: bool, site_level: bool = True, record_level: bool = False,
             federated: bool = True) -> list[dict[str, str]]:
    """The list ``metrics.json`` carries: ``release`` (what) and ``handled`` (how)."""
    scaling = {"release": "feature statistics for the composition model's scaler",
               "handled": "not used: a fixed scaling that needs no data (fedbio.privacy.updates)"}
    if not federated:   # a local or central model under DP-SGD
        out = [{"release": "the trained model",
                "handled": "accounted: DP-SGD (Opacus RDP accountant), every step of its training"},
               {"release": "validation scores during training (model selection)",
                "handled": "not used: the last epoch's model is kept, none is selected"}]
        return out + ([scaling] if composition else [])
    accounted = []
    if site_level:
        accounted.append("Gaussian noise of sd z*S on the sum of updates clipped to S (site level)")
    if record_level:
        accounted.append("DP-SGD at the site over all its steps (record level)")
    out = [
        {"release": "each round's update (local minus global weights)" + (", clipped to L2 norm S"
                                                                           if site_level else ""),
         "handled": "accounted (Opacus RDP accountant): " + "; ".join(accounted)},
        {"release": "the number of training records (FedAvg's weight)",
         "handled": "not sent: every site sends weight 1; updates are averaged unweighted"},
        {"release": "validation scores of each round's global model (model selection)",
         "handled": "not sent: the last round's model is delivered, none is selected"},
        {"release": "training losses (each round's curve, streamed TensorBoard scalars)",
         "handled": "not sent: no curve in the reply, nothing streamed"},
        {"release": "the site's own model's scores after the last round",
         "handled": "not sent"},
    ]
    if record_level:
        out.append({"release": "the site's DP-SGD epsilon (it depends on its record count)",
                    "handled": "not sent: kept at the site (RUN/sites/<site>/dp_sgd.json); "
                               "metrics.json copies it because a simulation's sites share this disk"})
    if composition:
        out.append({"release": scaling["release"] + " (stats step)",
                    "handled": "not sent: a fixed scaling that needs no data (fedbio.privacy.updates)"})
    out.append({"release": "that a site's round failed, and the error's type",
                "handled": "sent, not accounted: one word, no data"})
    return out
