"""Saving a trained model to a folder and loading it back (safetensors + JSON, never pickle).

A saved folder holds ``model.safetensors`` (the full state dict, buffers included, e.g. the
composition scaler), ``fedbio_model.json`` (the ``ModelConfig``, output count, label names, task,
the encoder's ``family`` and its config as ``encoder_config``, for ESM-2 also under the older key
``esm_config``) and, for encoder models, the tokenizer's ``vocab.txt``. Loading
needs none of the original pretrained weights: the architecture is rebuilt from the saved config
and every tensor comes from the folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

import fedbio
from fedbio.config import ModelConfig, from_dict, to_dict
from fedbio.errors import FedbioError
from fedbio.models.backbone import tokenizer_for
from fedbio.models.classifier import SequenceModel
from fedbio.models.composition import CompositionModel

WEIGHTS_FILE = "model.safetensors"
META_FILE = "fedbio_model.json"
VOCAB_FILE = "vocab.txt"
FORMAT_VERSION = 1


def _n_outputs(model: nn.Module) -> int:
    if isinstance(model, (SequenceModel, CompositionModel)):
        return int(model.n_outputs)
    raise FedbioError(f"cannot save a {type(model).__name__}; expected a fedbio model")


def save_model(
    model: nn.Module,
    cfg: ModelConfig,
    classes_or_targets: list[str],
    folder: str | Path,
    task: str | None = None,
) -> Path:
    """Write ``model`` with its config and label names to ``folder`` (created if needed).

    ``task`` is stored for readers ("classification" or "regression"; "scl" is classification);
    when omitted it is guessed: one output means regression, several mean classification.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n_outputs = _n_outputs(model)
    labels = [str(c) for c in classes_or_targets]
    if task is None:
        task = "regression" if n_outputs == 1 else "classification"
    meta: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "fedbio_version": fedbio.__version__,
        "kind": "composition" if isinstance(model, CompositionModel) else "sequence",
        "model_config": to_dict(cfg),
        "n_outputs": n_outputs,
        "task": task,
        "labels": labels,
    }
    if isinstance(model, SequenceModel):
        meta["family"] = model.backbone.family
        meta["encoder_config"] = model.backbone.config.to_dict()
        if model.backbone.family == "esm2":  # the key fedbio read before AMPLIFY was added
            meta["esm_config"] = meta["encoder_config"]
        if model.backbone.family == "remote":  # load_model must see it needs the remote code
            meta["encoder_config"].setdefault(
                "auto_map", getattr(model.backbone.config, "auto_map", None) or {"AutoModel": "?"})
        model.tokenizer.save_vocabulary(str(folder), None)
    # contiguous copies: safetensors refuses views and shared storage
    # (non-tensor entries, e.g. TransformerEngine's extra state in some versions, are not weights)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()
               if isinstance(v, torch.Tensor)}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def _load_tensors(model: nn.Module, tensors: dict, folder: Path) -> None:
    result = model.load_state_dict(tensors, strict=False)
    # Rotary inv_freq buffers are recomputed from the config and named differently across
    # transformers versions; every other mismatch means the folder does not fit its own config.
    # TransformerEngine's ``_extra_state`` (FP8 metadata, not weights) may be absent as well.
    skip = ("inv_freq", "_extra_state")
    missing = [k for k in result.missing_keys if not k.endswith(skip)]
    unexpected = [k for k in result.unexpected_keys if not k.endswith(skip)]
    if missing or unexpected:
        names = ", ".join((missing + unexpected)[:5])
        raise FedbioError(f"{folder / WEIGHTS_FILE} does not match {META_FILE}: {names}")


def load_model(folder: str | Path, trust_remote_code: bool = False) -> tuple[Any, nn.Module, dict]:
    """Rebuild a model written by ``save_model``: ``(tokenizer or None, model in eval mode, meta)``.

    A model whose encoder came from a remote-code checkpoint (``ModelConfig.trust_remote_code``)
    is rebuilt from that checkpoint's code, which must still be reachable (its folder, or the
    Hugging Face cache), and only with ``trust_remote_code=True`` here: the flag saved in the
    folder is not enough, since a model folder may come from someone else.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = json.loads((folder / META_FILE).read_text()) if (folder / META_FILE).is_file() else None
    bionemo = meta is not None and str(meta.get("kind", "")).startswith("bionemo")
    if meta is None or not (bionemo or (folder / WEIGHTS_FILE).is_file()):
        raise FedbioError(f"{folder} is not a saved fedbio model (needs {META_FILE} and {WEIGHTS_FILE})")
    if bionemo:
        raise FedbioError(f"{folder} holds a model trained with backend 'bionemo' "
                          f"({meta['kind']}): predicting with it needs BioNeMo's encoder; load "
                          "it with fedbio.bionemo.learner.BioNemoLearner inside the container")
    cfg = from_dict(ModelConfig, meta["model_config"])
    cfg.trust_remote_code = bool(trust_remote_code)  # the caller's opt-in, never the file's
    n_outputs = int(meta["n_outputs"])
    if meta.get("kind") == "composition":
        tokenizer, model = None, CompositionModel(n_outputs)
    else:
        targets = meta["labels"] if meta.get("task") == "multitask" else None
        arch = meta.get("encoder_config") or meta.get("esm_config")
        if not isinstance(arch, dict):
            raise FedbioError(f"{folder / META_FILE} has no encoder_config to rebuild the encoder")
        model = SequenceModel.from_config(cfg, n_outputs, encoder_config=arch, targets=targets)
        if (folder / VOCAB_FILE).is_file():
            model.tokenizer = tokenizer_for(model.backbone.family, folder / VOCAB_FILE)
        tokenizer = model.tokenizer
    _load_tensors(model, load_file(str(folder / WEIGHTS_FILE)), folder)
    model.eval()
    return tokenizer, model, meta
