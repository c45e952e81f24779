"""Measured leakage in reports: the membership attack's numbers and the update filters' per
group of runs, and the privacy-utility table behind ``privacy.png``.

    cells = leakage_cells(runs)        # {"membership AUC": "0.686 ± 0.012", ...}
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def spread(values: list[float], digits: int = 3) -> str:
    """``mean ± sd`` of one value per seed (just the value for one seed; ``—`` for none)."""
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def privacy_value(m: dict, *keys: str):
    """``metrics["privacy"][k1][k2]…``, or None where any part is missing."""
    value = m.get("privacy")
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def leakage_cells(runs: list[tuple[Path, dict]]) -> dict[str, str]:
    """A group's measured leakage over its seeds: membership AUC and TPR at 1 % FPR (from
    ``fedbio attack membership``), and for filtered updates the cosine to the true update and
    SVT's epsilon; ``—`` where a run has none."""
    got = lambda *keys: [privacy_value(m, *keys) for _, m in runs]  # noqa: E731
    auc, tpr = got("membership_auc"), got("tpr_at_1pct_fpr")
    complete = lambda values: values if all(v is not None for v in values) else []  # noqa: E731
    return {"membership AUC": spread(complete(auc)), "TPR at 1% FPR": spread(complete(tpr)),
            "cosine to true update": spread(complete(got("update_filter", "cosine_mean"))),
            "ε (SVT, NVFlare's ledger)": spread(complete(got("update_filter", "epsilon_total")), 1)}


def privacy_utility(groups, values, delivered):
    """One row per group whose runs were all attacked: the delivered (else the sites' mean)
    test accuracy (%) and the membership AUC, mean and sd over seeds; None if no group was.
    ``values(run_dir, metrics, site)``: per-record hits of a site's model (None: the delivered
    one); ``delivered(run_dir, metrics)``: the delivered model's predictions file, or None."""
    import pandas as pd

    rows = {}
    for name, runs in groups.items():
        auc = [privacy_value(m, "membership_auc") for _, m in runs]
        if any(a is None for a in auc):
            continue
        acc = []
        for d, m in runs:
            if delivered(d, m) is not None:
                acc.append(100 * float(np.mean(values(d, m, None))))
            else:
                acc.append(100 * float(np.mean([np.mean(values(d, m, s)) for s in m["n_train"]])))
        rows[name] = {"membership AUC": np.mean(auc), "membership AUC sd": np.std(auc, ddof=1)
                      if len(auc) > 1 else np.nan, "accuracy (%)": np.mean(acc),
                      "accuracy (%) sd": np.std(acc, ddof=1) if len(acc) > 1 else np.nan,
                      "seeds": len(runs)}
    return pd.DataFrame(rows).T if rows else None
