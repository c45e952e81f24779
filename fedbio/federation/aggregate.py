"""Server-side arithmetic, in numpy: weighted averaging in a fixed site order and FedOpt's step.

Nothing here knows NVFlare; ``fedbio.federation.nvflare.controller`` calls it each round. Sums run in
float64 over the sites in sorted order, so the same inputs always give the same global model.
"""

from __future__ import annotations

import numpy as np


def bytes_of(state: dict) -> int:
    """Bytes of the tensors/arrays in a state dict (what one copy costs on the wire, before framing)."""
    total = 0
    for value in state.values():
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], bytes):
            total += sum(len(piece) for piece in value)   # serialised ciphertexts (--he)
        elif hasattr(value, "nbytes") and not callable(value.nbytes):
            total += int(value.nbytes)  # numpy
        elif hasattr(value, "element_size"):
            total += int(value.numel() * value.element_size())  # torch
        else:
            total += int(np.asarray(value).nbytes)
    return total


def weighted_mean(contributions: list[tuple[str, float, dict]]) -> dict[str, np.ndarray]:
    """``sum_k w_k * params_k / sum_k w_k`` over ``(site, weight, params)``, summed in site order."""
    contributions = sorted(contributions, key=lambda c: c[0])
    total = float(sum(w for _, w, _ in contributions))
    if total <= 0:
        raise ValueError("weights must sum to a positive number")
    names = list(contributions[0][2])
    out = {}
    for name in names:
        acc = np.zeros(np.shape(contributions[0][2][name]), np.float64)
        for _, weight, params in contributions:
            acc += weight * np.asarray(params[name], np.float64)
        out[name] = (acc / total).astype(np.asarray(contributions[0][2][name]).dtype)
    return out


class ServerOptimizer:
    """FedOpt (Reddi et al., 2021): treat ``global - average`` as a gradient and take one step.

    ``sgd`` with momentum is FedAvgM (``lr=1, momentum=0`` is plain FedAvg); ``adam`` is FedAdam.
    The update rules are those of ``torch.optim.SGD`` / ``torch.optim.Adam`` (no weight decay),
    the same ones NVFlare's PyTorch FedOpt applies.
    """

    def __init__(self, kind: str = "sgd", lr: float = 1.0, momentum: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-3):
        self.kind, self.lr, self.momentum, self.betas, self.eps = kind, lr, momentum, tuple(betas), eps
        self.state: dict[str, dict] = {}
        self.t = 0

    def step(self, params: dict[str, np.ndarray], average: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.t += 1
        out = {}
        for name, p in params.items():
            p64 = np.asarray(p, np.float64)
            grad = p64 - np.asarray(average[name], np.float64)
            s = self.state.setdefault(name, {})
            if self.kind == "sgd":
                if self.momentum:
                    s["buf"] = grad.copy() if "buf" not in s else self.momentum * s["buf"] + grad
                    grad = s["buf"]
                new = p64 - self.lr * grad
            else:
                b1, b2 = self.betas
                s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * grad
                s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * grad * grad
                m_hat = s["m"] / (1 - b1 ** self.t)
                v_hat = s["v"] / (1 - b2 ** self.t)
                new = p64 - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
            out[name] = new.astype(np.asarray(p).dtype)
        return out


def pooled_scaler(stats: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the pooled values from per-site ``n``, ``sum``, ``sumsq`` (as central fits it).

    ``n`` is one count (features) or one count per column (multi-task labels: each task has its
    own rows); a column nobody holds gets mean 0, sd 1.
    """
    n = sum(np.asarray(s["n"], np.float64).reshape(-1) for s in stats)
    n = n[0] if n.size == 1 else n
    total = sum(np.asarray(s["sum"], np.float64) for s in stats)
    sq = sum(np.asarray(s["sumsq"], np.float64) for s in stats)
    mean = total / np.maximum(n, 1.0)
    std = np.where(n > 1, np.sqrt(np.maximum(sq / np.maximum(n, 1.0) - mean * mean, 0.0)), 0.0)
    std = np.where(std > 1e-6, std, 1.0)
    return np.asarray(mean, np.float32), np.asarray(std, np.float32)
