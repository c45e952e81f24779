"""Selective sharing: a site sends only the largest-magnitude entries of its update (numpy).

    sent, kept = top_fraction(update, fraction=0.1, clip=0.01)    # at the site
    nonzero(sent) <= allowed(values(update), "share", 0.1)        # checked again at the server

Shokri and Shmatikov ("Privacy-preserving deep learning", CCS 2015) share the largest entries of
each update, each clipped to [-G, G]; NVFlare's ``PercentilePrivacy`` does it with a percentile
of the magnitudes, so ties and interpolation can let a little more than the fraction through.
Here exactly ``floor(F * entries)`` entries are kept (ties broken by position), so what the
server receives has at most ``F`` of its entries non-zero, which the server checks.
"""

from __future__ import annotations

import math

import numpy as np


def values(arrays: dict) -> int:
    """How many entries ``arrays`` hold."""
    return int(sum(np.size(v) for v in arrays.values()))


def nonzero(arrays: dict) -> int:
    """How many of the entries are not zero."""
    return int(sum(np.count_nonzero(np.asarray(v)) for v in arrays.values()))


def allowed(total: int, kind: str, fraction: float) -> int:
    """The most non-zero entries a filtered update of ``total`` entries may carry: selective
    sharing keeps ``floor(F * total)``; NVFlare's SVT sends ``ceil(F * total)`` (sampled with
    replacement, so often fewer)."""
    return int(math.floor(fraction * total) if kind == "share" else math.ceil(fraction * total))


def top_fraction(update: dict, fraction: float, clip: float | None = None) -> tuple[dict, int]:
    """``update`` with all but its ``floor(fraction * entries)`` largest-magnitude entries set to
    zero (over all arrays together), each kept entry clipped to ``[-clip, clip]`` when given;
    also how many entries were kept. Arrays keep their shapes and dtypes."""
    names = sorted(update)
    arrays = {k: np.asarray(update[k]) for k in names}
    flat = np.concatenate([np.abs(arrays[k].astype(np.float64)).ravel() for k in names]) \
        if names else np.zeros(0)
    k = allowed(flat.size, "share", fraction)
    keep = np.zeros(flat.size, bool)
    if k > 0:
        keep[np.argsort(-flat, kind="stable")[:k]] = True
    out, offset = {}, 0
    for name in names:
        a = arrays[name]
        mask = keep[offset:offset + a.size].reshape(a.shape)
        kept = np.where(mask, a, np.zeros((), a.dtype))
        if clip is not None:
            kept = np.clip(kept, -clip, clip)
        out[name] = kept.astype(a.dtype)
        offset += a.size
    return out, k


def cosine(a: dict, b: dict) -> float | None:
    """Cosine similarity of two sets of arrays with the same names (None if either is zero)."""
    dot = sum(float(np.sum(np.asarray(a[k], np.float64) * np.asarray(b[k], np.float64))) for k in a)
    na = math.sqrt(sum(float(np.sum(np.asarray(v, np.float64) ** 2)) for v in a.values()))
    nb = math.sqrt(sum(float(np.sum(np.asarray(b[k], np.float64) ** 2)) for k in a))
    return dot / (na * nb) if na > 0 and nb > 0 else None


def filter_block(update_filter: dict, history: dict, audits: dict[str, list[dict]]) -> dict:
    """``metrics.json``'s ``privacy.update_filter``: the settings, what the server received
    (its non-zero entries, from ``history``) and, from each site's audit, the cosine similarity
    of what it sent to its true update and (SVT) the epsilon NVFlare's accountant charged."""
    rounds = [r["filter"] for r in history.get("rounds", []) if "filter" in r]
    entries = rounds[0]["entries"] if rounds else None
    received = [n for r in rounds for n in r["nonzero"].values()]
    per_site = {site: [e["filter"] for e in lines if e.get("task") == "train" and "filter" in e]
                for site, lines in audits.items()}
    cosines = {site: [f.get("cosine") for f in rows] for site, rows in per_site.items()}
    every = [c for row in cosines.values() for c in row if c is not None]
    block = {
        **update_filter,
        "mechanism": ("selective sharing: the largest-magnitude entries of each update "
                      "(Shokri & Shmatikov 2015; fedbio.privacy.sharing)" if update_filter["kind"] == "share"
                      else "sparse vector technique on each update (NVFlare's SVTPrivacy)"),
        "entries": entries, "allowed_nonzero": rounds[0]["allowed"] if rounds else None,
        "received_nonzero_max_fraction": (max(received) / entries if received and entries else None),
        "cosine_to_true_update": cosines,
        "cosine_mean": float(np.mean(every)) if every else None,
        "guarantee": ("none on its own: measure it (fedbio attack membership)"
                      if update_filter["kind"] == "share" else
                      "epsilon-DP per round under SVT's own sensitivity model (each entry clipped to "
                      "[-gamma, gamma]); it bounds no record's or site's influence beyond that: "
                      "measure it (fedbio attack membership)"),
    }
    if update_filter["kind"] == "svt":
        eps = {site: [f.get("epsilon") for f in rows] for site, rows in per_site.items()}
        totals = [sum(e for e in row if e is not None) for row in eps.values() if row]
        block.update({"accountant": "NVFlare SVTPrivacy's ledger: pure DP (delta 0), epsilons "
                                    "summed over rounds (basic composition), per site",
                      "epsilon_per_round": eps,
                      "epsilon_total": max(totals) if totals else None})
    return block
