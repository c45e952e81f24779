"""How well an attacker tells members from non-members: ROC AUC and TPR at a low FPR, with
bootstrap intervals (numpy only).

    result = leakage(member_scores, nonmember_scores, n_boot=1000, seed=0)
    result["auc"], result["auc_ci"], result["tpr_at_fpr"]["0.01"]

A score is the attacker's belief that a record was trained on: higher means "member". An AUC of
0.5 is a coin toss; 1.0 tells every member from every non-member. The true-positive rate at a
false-positive rate of 1 % says how many members an attacker finds while almost never wrongly
accusing a non-member: the number that matters when a few confident hits are the harm
(Carlini et al., "Membership inference attacks from first principles", 2022). It is reported
at an FPR only when there are enough non-members for it to mean something (at least ``1/fpr``:
100 for 1 %, 1,000 for 0.1 %). Intervals resample members and non-members separately.
"""

from __future__ import annotations

import numpy as np

FPRS = (0.01, 0.001)


def roc_auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """P(score of a random member > that of a random non-member), ties counting half
    (the Mann-Whitney statistic)."""
    from scipy.stats import rankdata

    m, n = np.asarray(members, np.float64), np.asarray(nonmembers, np.float64)
    ranks = rankdata(np.concatenate([m, n]))
    return float((ranks[:len(m)].sum() - len(m) * (len(m) + 1) / 2) / (len(m) * len(n)))


def tpr_at_fpr(members: np.ndarray, nonmembers: np.ndarray, fpr: float) -> float:
    """The share of members scored above a threshold that at most ``fpr`` of the non-members
    pass (strictly above: a tie with a non-member is not a hit)."""
    n = np.sort(np.asarray(nonmembers, np.float64))[::-1]
    allowed = int(np.floor(fpr * len(n)))   # false positives the threshold may let through
    threshold = n[allowed] if allowed < len(n) else -np.inf
    return float(np.mean(np.asarray(members, np.float64) > threshold))


def roc_curve(members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every threshold, from (0, 0) to (1, 1), for a plot."""
    scores = np.concatenate([members, nonmembers]).astype(np.float64)
    truth = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    order = np.argsort(-scores, kind="stable")
    scores, truth = scores[order], truth[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # one point per distinct score
    tp, fp = np.cumsum(truth)[last], np.cumsum(1 - truth)[last]
    return np.r_[0.0, fp / len(nonmembers)], np.r_[0.0, tp / len(members)]


def leakage(members: np.ndarray, nonmembers: np.ndarray, n_boot: int = 1000, seed: int = 0,
            level: float = 0.95) -> dict:
    """AUC and TPR at each of ``FPRS`` that ``nonmembers`` can resolve, each with a bootstrap
    interval (``level``; ``n_boot`` resamples from ``seed``)."""
    m, n = np.asarray(members, np.float64), np.asarray(nonmembers, np.float64)
    if len(m) == 0 or len(n) == 0:
        raise ValueError("membership scores need at least one member and one non-member")
    fprs = [f for f in FPRS if len(n) * f >= 1]
    rng = np.random.default_rng(seed)
    boot_auc, boot_tpr = [], {f: [] for f in fprs}
    for _ in range(n_boot):
        bm, bn = m[rng.integers(0, len(m), len(m))], n[rng.integers(0, len(n), len(n))]
        boot_auc.append(roc_auc(bm, bn))
        for f in fprs:
            boot_tpr[f].append(tpr_at_fpr(bm, bn, f))
    tail = 100 * (1 - level) / 2

    def interval(values: list[float]) -> list[float] | None:
        return [float(v) for v in np.percentile(values, [tail, 100 - tail])] if values else None

    return {
        "auc": roc_auc(m, n), "auc_ci": interval(boot_auc),
        "tpr_at_fpr": {f"{f:g}": tpr_at_fpr(m, n, f) for f in fprs},
        "tpr_at_fpr_ci": {f"{f:g}": interval(boot_tpr[f]) for f in fprs},
        "not_resolved": {f"{f:g}": f"{len(n)} non-members cannot resolve an FPR of {f:g} (needs "
                                   f"{int(np.ceil(1 / f))})" for f in FPRS if f not in fprs},
        "members": len(m), "nonmembers": len(n), "n_boot": n_boot, "level": level,
    }
