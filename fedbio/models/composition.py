"""The no-language-model baseline: amino-acid and dipeptide composition with a linear model.

``composition_features`` turns sequences into 420 frequencies (20 residues + 400 residue pairs),
vectorised with numpy; ``CompositionModel`` standardises them and applies one ``nn.Linear``, so it
trains and federates like any other fedbio model (a logistic or linear regression in PyTorch).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
N_FEATURES = len(AMINO_ACIDS) + len(AMINO_ACIDS) ** 2  # 420

# Byte -> residue index (0..19), -1 for anything that is not a standard residue.
_LUT = np.full(256, -1, dtype=np.int64)
for _i, _aa in enumerate(AMINO_ACIDS):
    _LUT[ord(_aa)] = _i


def composition_features(seqs: list[str]) -> np.ndarray:
    """[n, 420] float32: residue frequencies (summing to 1) then dipeptide frequencies.

    Case is ignored; non-standard letters (X, B, U, ...) are not counted and a dipeptide is only
    counted where both neighbours are standard. A sequence with no standard residue gives zeros.
    """
    n = len(seqs)
    upper = [s.upper() for s in seqs]
    lengths = np.fromiter((len(s) for s in upper), dtype=np.int64, count=n)
    # One pass over all residues at once; non-ASCII letters become "?" (one byte each).
    raw = np.frombuffer("".join(upper).encode("ascii", errors="replace"), dtype=np.uint8)
    codes = _LUT[raw]
    seq_of = np.repeat(np.arange(n), lengths)

    ok = codes >= 0
    aa = np.bincount(seq_of[ok] * 20 + codes[ok], minlength=n * 20).reshape(n, 20)

    first, second = codes[:-1], codes[1:]
    pair_ok = (first >= 0) & (second >= 0) & (seq_of[:-1] == seq_of[1:])
    pair_idx = seq_of[:-1][pair_ok] * 400 + first[pair_ok] * 20 + second[pair_ok]
    di = np.bincount(pair_idx, minlength=n * 400).reshape(n, 400)

    aa = aa / np.maximum(aa.sum(axis=1, keepdims=True), 1)
    di = di / np.maximum(di.sum(axis=1, keepdims=True), 1)
    return np.concatenate([aa, di], axis=1).astype(np.float32)


class CompositionModel(nn.Module):
    """Standardise the 420 composition features, then one ``nn.Linear(420, n_outputs)``.

    The scaler's mean and std are buffers (saved with the model, never trained or averaged as
    parameters); call ``fit_scaler`` on training features before training.
    """

    def __init__(self, n_outputs: int, n_features: int = N_FEATURES):
        super().__init__()
        self.n_outputs = n_outputs
        self.n_features = n_features
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.linear = nn.Linear(n_features, n_outputs)

    @torch.no_grad()
    def fit_scaler(self, features: np.ndarray | torch.Tensor) -> CompositionModel:
        """Set mean/std from ``features`` [n, n_features]; constant columns keep std 1."""
        x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
        std = x.std(dim=0, unbiased=False) if len(x) > 1 else torch.zeros(x.shape[1])
        self.mean.copy_(x.mean(dim=0))
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
        return self

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """[batch, n_features] -> [batch, n_outputs] logits or predictions."""
        return self.linear((features - self.mean) / self.std)
