"""What a site sends in a federated run under DP, and how each release is handled.

    metrics["privacy"]["releases"] = releases(composition=True)

Every entry is either accounted (the clipped, noised update) or not sent; the one exception, a
failed site's error type, says that a site failed and nothing about its data.
"""

from __future__ import annotations


def releases(composition: bool) -> list[dict[str, str]]:
    """The list ``metrics.json`` carries: ``release`` (what) and ``handled`` (how)."""
    out = [
        {"release": "each round's update (local minus global weights), clipped to L2 norm S",
         "handled": "accounted: Gaussian noise of sd z*S on the sum (Opacus RDP accountant)"},
        {"release": "the number of training records (FedAvg's weight)",
         "handled": "not sent: every site sends weight 1; updates are averaged unweighted"},
        {"release": "validation scores of each round's global model (model selection)",
         "handled": "not sent: the last round's model is delivered, none is selected"},
        {"release": "training losses (each round's curve, streamed TensorBoard scalars)",
         "handled": "not sent: no curve in the reply, nothing streamed"},
        {"release": "the site's own model's scores after the last round",
         "handled": "not sent"},
    ]
    if composition:
        out.append({"release": "feature statistics for the composition model's scaler (stats step)",
                    "handled": "not sent: a fixed scaling that needs no data (fedbio.privacy.updates)"})
    out.append({"release": "that a site's round failed, and the error's type",
                "handled": "sent, not accounted: one word, no data"})
    return out
