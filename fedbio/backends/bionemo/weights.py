"""The weights inside a NeMo2 checkpoint folder, read and rewritten with plain PyTorch.

A NeMo2 / Megatron checkpoint written by ``finetune_esm2`` is a folder::

    CHECKPOINT/
      context/            the model's configuration (NeMo's io context)
      weights/            torch.distributed.checkpoint (DCP, "torch_dist"): .metadata, *.distcp,
                          plus Megatron's common.pt / metadata.json

``read_checkpoint_weights`` loads ``weights/`` into one flat dict with
``torch.distributed.checkpoint.format_utils.dcp_to_torch_save`` (no BioNeMo, no Megatron, no
GPU); ``model_weights`` keeps the model's tensors (no optimizer state, no TransformerEngine
``_extra_state``); ``write_checkpoint_weights`` copies a checkpoint folder and replaces some of
its tensors, which is how a site hands the federation's weights to the next ``finetune_esm2``
(``--restore-from-checkpoint-path``). Names are Megatron's sharded-state-dict keys (layers may be
stacked along a first dimension); ``fedbio.backends.bionemo.exchange`` strips their wrapper prefixes.

Tested here on DCP folders torch writes itself; against a real BioNeMo checkpoint it is
unverified (no GPU here), and note that the stock ``finetune_esm2`` restores with
``initial_ckpt_skip_keys_with_these_prefixes=["<task>_head"]``: a restored head is re-initialised.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedbio.errors import FedbioError

WEIGHTS_DIR = "weights"
NOT_WEIGHTS = ("optimizer", "lr_scheduler")


def _weights_dir(checkpoint: str | Path) -> Path:
    checkpoint = Path(checkpoint)
    folder = checkpoint / WEIGHTS_DIR if (checkpoint / WEIGHTS_DIR).is_dir() else checkpoint
    if not (folder / ".metadata").is_file():
        raise FedbioError(f"{checkpoint}: no torch.distributed checkpoint (.metadata) in "
                          f"{folder}; is this a NeMo2 checkpoint folder?")
    return folder


def read_checkpoint_weights(checkpoint: str | Path) -> dict[str, Any]:
    """Every entry of the checkpoint's DCP ``weights/`` (tensors and other objects), by key."""
    import torch
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    folder = _weights_dir(checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        flat = Path(tmp) / "state.pt"
        dcp_to_torch_save(str(folder), str(flat))
        # weights_only=False: the file was written a line above, from this site's own checkpoint,
        # and Megatron keeps TransformerEngine extra state as BytesIO objects in it.
        return torch.load(flat, map_location="cpu", weights_only=False)


def is_model_weight(name: str, value: Any) -> bool:
    """A tensor of the model: not optimizer or scheduler state, not TE ``_extra_state``."""
    import torch

    if not isinstance(value, torch.Tensor):
        return False
    if name.startswith(NOT_WEIGHTS) or "_extra_state" in name:
        return False
    return True


def model_weights(state: Mapping[str, Any]) -> dict[str, Any]:
    """The model's tensors of a checkpoint's entries (``is_model_weight``)."""
    return {k: v for k, v in state.items() if is_model_weight(k, v)}


def write_checkpoint_weights(base: str | Path, updates: Mapping[str, Any], out: str | Path) -> Path:
    """Copy checkpoint folder ``base`` to ``out`` with the tensors of ``updates`` replaced.

    ``updates`` is keyed by bare names (``fedbio.backends.bionemo.exchange``) or by the checkpoint's own
    keys; each must match exactly one model weight of ``base`` with the same shape, else a
    FedbioError. Everything else (optimizer state, extra state, context) is kept as it was.
    """
    import torch
    from torch.distributed.checkpoint.format_utils import torch_save_to_dcp

    from fedbio.backends.bionemo.exchange import split_prefix

    base, out = Path(base), Path(out)
    state = read_checkpoint_weights(base)
    index: dict[str, list[str]] = {}
    for key, value in state.items():
        if is_model_weight(key, value):
            index.setdefault(key, []).append(key)
            bare = split_prefix(key)[1]
            if bare != key:
                index.setdefault(bare, []).append(key)
    for name, value in updates.items():
        keys = index.get(name, [])
        if len(keys) != 1:
            raise FedbioError(f"{base}: {'no' if not keys else 'more than one'} model weight "
                              f"named {name!r} (built from a different config or precision?)")
        key = keys[0]
        value = torch.as_tensor(value)
        if tuple(value.shape) != tuple(state[key].shape):
            raise FedbioError(f"{name}: shape {tuple(value.shape)}, the checkpoint has "
                              f"{tuple(state[key].shape)}")
        state[key] = value.detach().to("cpu", state[key].dtype).contiguous()
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(base, out, ignore=shutil.ignore_patterns("*.distcp", ".metadata"))
    target = _weights_dir_for(out, base)
    with tempfile.TemporaryDirectory() as tmp:
        flat = Path(tmp) / "state.pt"
        torch.save(state, flat)
        torch_save_to_dcp(str(flat), str(target))
    return out


def _weights_dir_for(out: Path, base: Path) -> Path:
    """Where ``out``'s DCP files go: ``weights/`` when ``base`` had one, else the folder itself."""
    target = out / WEIGHTS_DIR if (base / WEIGHTS_DIR).is_dir() else out
    target.mkdir(parents=True, exist_ok=True)
    return target
