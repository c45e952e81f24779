"""Turning records into model inputs: cropping, tokens, and length-bucketed batches.

Sequences are cropped, never dropped (the reference loses 38 % of DeepLoc that way). Batches
group sequences of similar length so little compute goes to padding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch


def crop(seq: str, max_length: int, policy: str = "ends") -> str:
    """Keep at most ``max_length`` residues: both ends (``ends``) or the N-terminal part (``start``)."""
    if max_length <= 0 or len(seq) <= max_length:
        return seq
    if policy == "start":
        return seq[:max_length]
    if policy != "ends":
        raise ValueError(f"unknown crop policy {policy!r}")
    head = (max_length + 1) // 2
    return seq[:head] + seq[len(seq) - (max_length - head):]


@dataclass
class TokenData:
    """Tokenised sequences (with special tokens) and their targets."""

    tokens: list[np.ndarray]
    y: torch.Tensor
    pad_id: int
    n_cropped: int = 0

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(t) for t in self.tokens), int, len(self.tokens))


@dataclass
class TensorData:
    """Fixed-size inputs (composition features or cached embeddings) and their targets."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.x)


def tokenize(seqs: Sequence[str], y: torch.Tensor, tokenizer, max_length: int,
             policy: str = "ends") -> TokenData:
    from fedbio.models import encode

    cropped = [crop(s, max_length, policy) for s in seqs]
    n_cropped = sum(len(a) != len(b) for a, b in zip(seqs, cropped, strict=True))
    tokens = [np.asarray(encode(tokenizer, s), dtype=np.int64) for s in cropped]
    return TokenData(tokens, y, int(tokenizer.pad_token_id), n_cropped)


def pad(tokens: Sequence[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence in the batch (dynamic padding)."""
    width = max(len(t) for t in tokens)
    ids = np.full((len(tokens), width), pad_id, dtype=np.int64)
    for i, t in enumerate(tokens):
        ids[i, : len(t)] = t
    ids = torch.from_numpy(ids)
    return ids, (ids != pad_id).long()


def bucket_order(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None,
                 bucket_size: int = 50) -> list[np.ndarray]:
    """Batches of indices of similar length.

    Shuffle, cut into buckets of ``batch_size * bucket_size``, sort each bucket by length, cut it
    into batches, then shuffle the batches. ``rng=None`` gives a fixed order (evaluation).
    """
    n = len(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    order = rng.permutation(n)
    span = batch_size * max(1, bucket_size)
    batches = []
    for start in range(0, n, span):
        chunk = order[start:start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def batch_of(data: TokenData | TensorData, idx: np.ndarray) -> tuple[tuple, torch.Tensor]:
    """``(inputs, targets)`` of the records at ``idx``: inputs ``(ids, mask)`` (padded to the
    longest) or ``(x,)``."""
    if isinstance(data, TokenData):
        return pad([data.tokens[i] for i in idx], data.pad_id), data.y[idx]
    return (data.x[idx],), data.y[idx]


def batches(data: TokenData | TensorData, batch_size: int, rng: np.random.Generator | None = None,
            bucketed: bool = True, bucket_size: int = 50) -> Iterator[tuple[tuple, torch.Tensor, np.ndarray]]:
    """Yield ``(inputs, targets, indices)``; inputs are ``(ids, mask)`` or ``(x,)``."""
    if isinstance(data, TokenData):
        if bucketed:
            groups = bucket_order(data.lengths, batch_size, rng, bucket_size)
        else:
            order = np.arange(len(data)) if rng is None else rng.permutation(len(data))
            groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    else:
        order = np.arange(len(data)) if rng is None else rng.permutation(len(data))
        groups = (order[start:start + batch_size] for start in range(0, len(order), batch_size))
    for idx in groups:
        yield (*batch_of(data, idx), idx)


def padding_fraction(data: TokenData, batch_size: int, bucketed: bool, seed: int = 0) -> float:
    """Share of the padded token grid that is padding, for one epoch's batches."""
    rng = np.random.default_rng(seed)
    lengths = data.lengths
    if bucketed:
        groups = bucket_order(lengths, batch_size, rng)
    else:
        order = rng.permutation(len(lengths))
        groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    real = sum(int(lengths[g].sum()) for g in groups)
    grid = sum(int(lengths[g].max()) * len(g) for g in groups)
    return 1 - real / grid
