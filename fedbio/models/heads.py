"""Pooling and the prediction head that sit on top of an encoder.

``residue_mask`` picks the residue positions (no ``<cls>``, ``<eos>`` or padding),
``mean_pool`` averages hidden states over them (BioNeMo's ESM-2nv pooling), and ``MLPHead`` is
BioNeMo's head: Linear(h, 256) -> ReLU -> Dropout -> Linear(256, n).
"""

from __future__ import annotations

import torch
from torch import nn


def _special_ids(tokenizer_or_special_ids) -> list[int]:
    if hasattr(tokenizer_or_special_ids, "cls_token_id"):  # a tokenizer
        tok = tokenizer_or_special_ids
        ids = (tok.cls_token_id, tok.eos_token_id, tok.pad_token_id)
        return [int(i) for i in ids if i is not None]
    return [int(i) for i in tokenizer_or_special_ids]


def residue_mask(input_ids: torch.Tensor, tokenizer_or_special_ids) -> torch.Tensor:
    """Bool mask, True on residue tokens only (False on ``<cls>``, ``<eos>`` and padding).

    ``tokenizer_or_special_ids`` is a tokenizer (its cls/eos/pad ids are used) or the ids
    themselves. Unknown residues (``<unk>``) and ``<mask>`` count as residues.
    """
    mask = torch.ones_like(input_ids, dtype=torch.bool)
    for token_id in _special_ids(tokenizer_or_special_ids):
        mask &= input_ids != token_id
    return mask


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` [batch, length, dim] over the positions where ``mask`` is True."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    counts = weights.sum(dim=1).clamp(min=1.0)  # an all-special row pools to zeros, not NaN
    return (hidden * weights).sum(dim=1) / counts


class MLPHead(nn.Module):
    """Linear(in_dim, hidden) -> ReLU -> Dropout -> Linear(hidden, n_out).

    Gives class logits or ``n_out`` regression targets alike; the loss decides which.
    """

    def __init__(self, in_dim: int, n_out: int, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        # Constructor arguments kept as attributes: job exporters read them back by name.
        self.in_dim = in_dim
        self.n_out = n_out
        self.hidden = hidden
        self.dropout = dropout
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, in_dim] -> [batch, n_out]."""
        return self.net(x)


class MultiTaskHead(nn.Module):
    """One ``MLPHead`` with a single output per task: [batch, in_dim] -> [batch, n_tasks].

    Parameters are named ``heads.<task>.net...``, so a federation can keep any task's head (or
    all of them) at its site by name. Output column ``j`` is task ``tasks[j]``.
    """

    def __init__(self, in_dim: int, tasks: list[str], hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        bad = [t for t in tasks if not t or "." in t]
        if bad or len(set(tasks)) != len(tasks):
            raise ValueError(f"task names must be unique, non-empty and without dots: {tasks}")
        self.in_dim = in_dim
        self.tasks = list(tasks)
        self.n_out = len(tasks)
        self.hidden = hidden
        self.dropout = dropout
        self.heads = nn.ModuleDict({t: MLPHead(in_dim, 1, hidden, dropout) for t in tasks})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, in_dim] -> [batch, n_tasks]."""
        return torch.cat([self.heads[t](x) for t in self.tasks], dim=-1)
