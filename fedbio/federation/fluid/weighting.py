"""FLuID's arithmetic: applicability-domain weights, the teachers' combined labels, the student's selection.

    d = mean_knn_distance(sample_of_own_features, public_features)      # at each site, (public,)
    w = domain_weights(d, lo, hi)        # (1 - (d - lo) / (hi - lo))^2, lo/hi over every teacher
    soft, share = combine([p1, p2, p3], [w1, w2, w3])   # per record: the weighted mean of probs
    rows = balanced_selection(soft.argmax(1), n_classes, seed)

The applicability domain (Hanser et al., 2025): how close a public record lies to a teacher's
training data, the mean Euclidean distance to its 8 nearest neighbours among a seeded 20 % sample
of that data, in the teacher's own feature space (composition features, or the encoder's pooled
embeddings). Distances are min-max scaled over all teachers and records (``lo``, ``hi``: the
smallest and largest distance any teacher found), turned into similarities and squared; each
record's weights are then normalised over the teachers. One teacher, equal distances, or a record
no teacher is near (all weights 0) get uniform weights. Numpy only: the sites, the server and the
tests compute the same numbers.
"""

from __future__ import annotations

import numpy as np

NEIGHBOURS = 8          # k of the k nearest neighbours
DOMAIN_FRACTION = 0.2   # the share of a teacher's training records its domain is measured against
WEIGHTINGS = ("domain", "uniform")
SELECTIONS = ("balanced", "all")


def domain_sample(n: int, fraction: float = DOMAIN_FRACTION, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded ``fraction`` of ``n`` records (at least one)."""
    size = min(n, max(1, int(round(fraction * n))))
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def mean_knn_distance(reference: np.ndarray, queries: np.ndarray, k: int = NEIGHBOURS,
                      chunk: int = 512) -> np.ndarray:
    """For each query row, the mean Euclidean distance to its ``k`` nearest ``reference`` rows
    (all of them when there are fewer than ``k``)."""
    reference = np.asarray(reference, np.float64)
    queries = np.asarray(queries, np.float64)
    k = min(k, len(reference))
    ref_sq = np.einsum("ij,ij->i", reference, reference)
    out = np.empty(len(queries))
    for start in range(0, len(queries), chunk):
        block = queries[start:start + chunk]
        sq = np.einsum("ij,ij->i", block, block)[:, None] + ref_sq[None, :] - 2.0 * block @ reference.T
        nearest = np.partition(np.maximum(sq, 0.0), k - 1, axis=1)[:, :k]
        out[start:start + chunk] = np.sqrt(nearest).mean(axis=1)
    return out


def domain_weights(distances: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``(1 - (d - lo) / (hi - lo))^2`` per record; ones when ``hi <= lo`` (equal distances)."""
    distances = np.asarray(distances, np.float64)
    if not hi > lo:
        return np.ones_like(distances)
    scaled = np.clip((distances - lo) / (hi - lo), 0.0, 1.0)
    return (1.0 - scaled) ** 2


def normalised(weights: list[np.ndarray] | None, n_teachers: int, n_records: int) -> np.ndarray:
    """(teachers, records) weights summing to 1 over the teachers of each record; uniform for
    one teacher, without weights, and for a record where every weight is 0."""
    if weights is None or n_teachers == 1:
        return np.full((n_teachers, n_records), 1.0 / n_teachers)
    w = np.stack([np.asarray(x, np.float64) for x in weights])
    total = w.sum(axis=0)
    none = total <= 0
    w[:, none], total[none] = 1.0, n_teachers
    return w / total


def combine(probs: list[np.ndarray], weights: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The teachers' probabilities (each (records, classes)) averaged per record with ``weights``
    (each (records,); None: uniform): (soft labels, the normalised (teachers, records) weights)."""
    stacked = np.stack([np.asarray(p, np.float64) for p in probs])
    share = normalised(weights, len(probs), stacked.shape[1])
    return np.einsum("tn,tnc->nc", share, stacked), share


def balanced_selection(labels: np.ndarray, n_classes: int, seed: int = 0) -> np.ndarray:
    """Sorted rows of a class-balanced selection: after a seeded shuffle, at most an equal share
    (ceil(records / classes)) of each class's rows; smaller classes give all of theirs."""
    labels = np.asarray(labels)
    cap = int(np.ceil(len(labels) / max(n_classes, 1)))
    order = np.random.default_rng(seed).permutation(len(labels))
    keep = [order[labels[order] == c][:cap] for c in range(n_classes)]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, int)
