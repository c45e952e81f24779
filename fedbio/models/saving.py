"""Saving a trained model to a folder and loading it back (safetensors + JSON, never pickle).

A saved folder holds ``model.safetensors`` (the full state dict, buffers included, e.g. the
composition scaler), ``fedbio_model.json`` (the ``ModelConfig``, output count, label names, task,
the encoder's ``family`` and its config as ``encoder_config``) and, for encoder models, the tokenizer's ``vocab.txt``. Loading
needs none of the original pretrained weights: the architecture is rebuilt from the saved config
and every tensor comes from the folder.

A folder is untrusted input: ``load_model`` checks the folder, every field of
``fedbio_model.json`` (types, ``kind``, ``format`` not newer than ``FORMAT_VERSION``, labels
against ``n_outputs``), the safetensors file and each tensor's name and shape before the model
is used; any problem is one FedbioError that starts with the file at fault.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

import fedbio
from fedbio.config import TASK_TYPES, TUNING_MODES, ModelConfig, from_dict, to_dict
from fedbio.errors import FedbioError
from fedbio.models.backbone import FAMILIES
from fedbio.models.backbone_loading import tokenizer_for
from fedbio.models.checkpoint_files import RESAVE, read_json_object, read_safetensors
from fedbio.models.classifier import SequenceModel
from fedbio.models.composition import CompositionModel
from fedbio.models.remote import is_remote_config

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


# --- reading a folder back: every file checked, every problem one line naming the file ------

KINDS = ("sequence", "composition")


def check_folder(folder: Path, option: str = "") -> None:
    """``folder`` must be an existing, readable folder (not a file, a dangling link or a link
    loop); each failure is one FedbioError that starts with the folder."""
    use = f"give {option} a model folder, e.g. RUN/model" if option else "give a model folder"
    try:
        info = folder.stat()
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise FedbioError(f"{folder}: a symbolic link loop, not a model folder; {use}") from None
        if folder.is_symlink():
            raise FedbioError(f"{folder}: a symbolic link to {os.readlink(folder)}, which does "
                              f"not exist; {use}") from None
        if err.errno == errno.ENOENT:
            raise FedbioError(f"{folder}: no such folder; {use}") from None
        raise FedbioError(f"{folder}: cannot read it ({err.strerror}); {use}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise FedbioError(f"{folder}: a file, not a model folder; {use}")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise FedbioError(f"{folder}: cannot read it (permission denied); {use}")


def _not_a_model(folder: Path) -> FedbioError:
    """Why ``folder`` (which exists) is not a saved fedbio model, with the likely mix-up."""
    if (folder / "model" / META_FILE).is_file():
        return FedbioError(f"{folder}: a run folder, not a model folder; give {folder / 'model'}")
    sites = sorted(p.parent.parent.name for p in folder.glob(f"*/model/{META_FILE}"))
    if sites:  # a local run: one model per site
        return FedbioError(f"{folder}: a local run folder, whose models are its sites'; give one of "
                           f"them, e.g. {folder / sites[0] / 'model'}")
    if (folder / "metrics.json").is_file():
        return FedbioError(f"{folder}: a run folder without a model of its own (heads stay at the "
                           f"sites: see {folder / 'sites'}); give a folder that holds {META_FILE}")
    if (folder / "config.json").is_file():
        return FedbioError(f"{folder}: an encoder checkpoint, not a trained fedbio model (no "
                           f"{META_FILE}); train one with `fedbio run --model {folder}`")
    return FedbioError(f"{folder}: not a saved fedbio model (it needs {META_FILE} and "
                       f"{WEIGHTS_FILE}); {RESAVE}")


def _is(value: Any, kind: type) -> bool:
    """``isinstance`` as JSON means it: a bool is not a number, an int is a float."""
    if kind is type(None):
        return value is None
    if kind in (int, float) and isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    if kind is tuple:  # JSON has no tuples: a saved tuple comes back as a list
        return isinstance(value, (list, tuple))
    return isinstance(value, kind)


def _allowed(hint: Any) -> tuple:
    """The plain types a field annotation accepts (``str | None`` -> (str, NoneType));
    anything fancier (``Literal``, ``Any``) accepts every value."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return tuple(kind for arg in typing.get_args(hint) for kind in _allowed(arg))
    if origin is not None:
        return (origin,) if isinstance(origin, type) else (object,)
    return (hint,) if isinstance(hint, type) else (object,)


def typed_config(cls: type, values: Any, where: str) -> Any:
    """``from_dict(cls, values)`` with every known field checked against its annotation, so a
    hand-edited or damaged file fails here, naming ``where`` and the field, not deep inside."""
    if not isinstance(values, dict):
        raise FedbioError(f"{where}: expected a JSON object, found a {type(values).__name__}; {RESAVE}")
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved here: check what can be
        hints = {}
    for field in fields(cls):
        if field.name in values and field.name in hints:
            allowed = _allowed(hints[field.name])
            if not any(_is(values[field.name], kind) for kind in allowed):
                names = " or ".join("null" if k is type(None) else k.__name__ for k in allowed)
                raise FedbioError(f"{where}: {field.name} is {values[field.name]!r}, expected "
                                  f"{names}; {RESAVE}")
    try:
        return from_dict(cls, values)
    except (TypeError, ValueError) as err:  # a config class that checks its own values
        raise FedbioError(f"{where}: {_first(err)}; {RESAVE}") from None


def _need(meta: dict, key: str, kind: type, path: Path) -> Any:
    """``meta[key]``, which must be there and of ``kind``."""
    if key not in meta:
        raise FedbioError(f"{path}: has no {key!r}; {RESAVE}")
    if not _is(meta[key], kind):
        raise FedbioError(f"{path}: {key} is {meta[key]!r}, expected {kind.__name__}; {RESAVE}")
    return meta[key]


def _check_meta(meta: dict, path: Path) -> None:
    """Every field ``load_model`` reads: present, of the right type, consistent."""
    fmt = _need(meta, "format", int, path)
    if fmt > FORMAT_VERSION:
        raise FedbioError(f"{path}: format {fmt} is newer than this fedbio "
                          f"({fedbio.__version__}) reads (format {FORMAT_VERSION}); upgrade fedbio "
                          "to load this model")
    if fmt < 1:
        raise FedbioError(f"{path}: format {fmt} is not a fedbio model format; {RESAVE}")
    kind = _need(meta, "kind", str, path)
    if kind not in KINDS:
        raise FedbioError(f"{path}: unknown kind {kind!r} (fedbio reads {', '.join(KINDS)}); {RESAVE}")
    n_outputs = _need(meta, "n_outputs", int, path)
    if n_outputs < 1:
        raise FedbioError(f"{path}: n_outputs is {n_outputs}, expected 1 or more; {RESAVE}")
    labels = _need(meta, "labels", list, path)
    if not all(isinstance(label, str) for label in labels):
        raise FedbioError(f"{path}: labels must be strings; {RESAVE}")
    if len(labels) != n_outputs:
        raise FedbioError(f"{path}: n_outputs is {n_outputs} but it names {len(labels)} "
                          f"label(s); {RESAVE}")
    task = meta.get("task")
    if task is not None and task not in TASK_TYPES:
        raise FedbioError(f"{path}: unknown task type {task!r} (fedbio reads "
                          f"{', '.join(TASK_TYPES)}); {RESAVE}")
    cfg = typed_config(ModelConfig, _need(meta, "model_config", dict, path), f"{path}: model_config")
    if cfg.is_composition != (kind == "composition"):
        raise FedbioError(f"{path}: kind {kind!r} does not fit model_config name {cfg.name!r}; {RESAVE}")
    if cfg.tuning not in TUNING_MODES:
        raise FedbioError(f"{path}: unknown tuning {cfg.tuning!r} in model_config; {RESAVE}")
    if kind == "sequence":
        arch = meta.get("encoder_config")
        if not isinstance(arch, dict):
            raise FedbioError(f"{path}: has no encoder_config to rebuild the encoder; {RESAVE}")
        if arch.get("model_type") not in FAMILIES and not is_remote_config(arch):
            raise FedbioError(f"{path}: encoder_config has model_type {arch.get('model_type')!r}; "
                              f"fedbio rebuilds {', '.join(map(repr, FAMILIES))} encoders; {RESAVE}")


def is_bionemo(meta: dict) -> bool:
    """True for a model folder written by the BioNeMo backend (``kind`` "bionemo-*")."""
    return str(meta.get("kind", "")).startswith("bionemo")


def bionemo_refusal(folder: Path, meta: dict) -> FedbioError:
    """Why a BioNeMo model folder cannot be loaded here, and where it can."""
    return FedbioError(f"{folder} holds a model trained with backend 'bionemo' "
                       f"({meta['kind']}): predicting with it needs BioNeMo's encoder; load "
                       "it with fedbio.backends.bionemo.learner.BioNemoLearner inside the container")


def read_model_meta(folder: str | Path, option: str = "") -> dict:
    """``fedbio_model.json`` of a model folder, checked (``_check_meta``); a BioNeMo model's is
    returned as it is (``load_model`` refuses it with its own message). ``option`` (``--model``)
    is named in the hint of a folder that is missing or not a folder."""
    folder = Path(folder)
    check_folder(folder, option)
    path = folder / META_FILE
    if not path.is_file():
        raise _not_a_model(folder)
    meta = read_json_object(path, RESAVE)
    if is_bionemo(meta):
        return meta
    _check_meta(meta, path)
    return meta


def _shape(tensor: Any) -> tuple:
    return tuple(getattr(tensor, "shape", ()))


def _load_tensors(model: nn.Module, tensors: dict, folder: Path) -> None:
    """Every tensor into ``model``: a missing, extra or misshapen one is a FedbioError naming the
    file (it does not fit its own ``fedbio_model.json``)."""
    source = folder / WEIGHTS_FILE
    # Rotary inv_freq buffers are recomputed from the config and named differently across
    # transformers versions; every other mismatch means the folder does not fit its own config.
    # TransformerEngine's ``_extra_state`` (FP8 metadata, not weights) may be absent as well.
    skip = ("inv_freq", "_extra_state")
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors and not k.endswith(skip)]
    unexpected = [k for k in tensors if k not in expected and not k.endswith(skip)]
    if missing or unexpected:
        names = ", ".join((missing + unexpected)[:5])
        raise FedbioError(f"{source} does not match {META_FILE}: {names}; {RESAVE}")
    for key, ref in expected.items():
        if key in tensors and _shape(tensors[key]) != _shape(ref):
            raise FedbioError(f"{source} does not match {META_FILE}: tensor {key} has shape "
                              f"{_shape(tensors[key])}, {META_FILE} implies {_shape(ref)} (were "
                              f"they saved from different models?); {RESAVE}")
    try:
        model.load_state_dict(tensors, strict=False)
    except RuntimeError as err:  # any other way the tensors cannot go in (e.g. a bad dtype)
        raise FedbioError(f"{source} does not match {META_FILE} ({_first(err)}); {RESAVE}") from None


def _first(err: BaseException) -> str:
    """An exception's text on one line (some put the reason on their second line)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return " ".join(lines)[:200] if lines else type(err).__name__


def _build(meta: dict, cfg: ModelConfig, folder: Path) -> tuple[Any, nn.Module]:
    """The architecture ``meta`` describes, with random weights (``_load_tensors`` fills it)."""
    n_outputs = int(meta["n_outputs"])
    if meta["kind"] == "composition":
        return None, CompositionModel(n_outputs)
    path = folder / META_FILE
    targets = meta["labels"] if meta.get("task") == "multitask" else None
    arch = meta["encoder_config"]
    try:
        model = SequenceModel.from_config(cfg, n_outputs, encoder_config=arch, targets=targets)
    except FedbioError as err:  # already one line; make it start with the file
        text = str(err)
        named = text.startswith((str(folder), cfg.name))  # e.g. the remote-code refusal
        raise FedbioError(text if named else f"{path}: {text}") from None
    except Exception as err:  # config classes raise any type on bad values (transformers 5:
        # huggingface_hub's StrictDataclassFieldValidationError); the file is what is wrong
        raise FedbioError(f"{path}: cannot rebuild the encoder from its encoder_config "
                          f"({_first(err)}); {RESAVE}") from None
    vocab = folder / VOCAB_FILE
    if vocab.is_file():
        model.tokenizer = tokenizer_for(model.backbone.family, vocab)
        size = getattr(model.backbone.config, "vocab_size", None)
        if size is not None and len(model.tokenizer) != size:
            raise FedbioError(f"{vocab}: {len(model.tokenizer)} tokens, but the encoder in "
                              f"{META_FILE} has {size}; {RESAVE}")
    return model.tokenizer, model


def load_model(folder: str | Path, trust_remote_code: bool = False) -> tuple[Any, nn.Module, dict]:
    """Rebuild a model written by ``save_model``: ``(tokenizer or None, model in eval mode, meta)``.

    Every file is checked first: a damaged, inconsistent or newer-format folder is one
    FedbioError that starts with the file at fault, before any weights are loaded.

    A model whose encoder came from a remote-code checkpoint (``ModelConfig.trust_remote_code``)
    is rebuilt from that checkpoint's code, which must still be reachable (its folder, or the
    Hugging Face cache), and only with ``trust_remote_code=True`` here: the flag saved in the
    folder is not enough, since a model folder may come from someone else.
    """
    folder = Path(folder)
    meta = read_model_meta(folder)
    if is_bionemo(meta):
        raise bionemo_refusal(folder, meta)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise FedbioError(f"{weights}: missing (the model's tensors); {RESAVE}")
    tensors = read_safetensors(weights, RESAVE)  # read before building: a damaged file fails fast
    cfg = from_dict(ModelConfig, meta["model_config"])
    cfg.trust_remote_code = bool(trust_remote_code)  # the caller's opt-in, never the file's
    tokenizer, model = _build(meta, cfg, folder)
    _load_tensors(model, tensors, folder)
    model.eval()
    return tokenizer, model, meta
