"""Reading a checkpoint folder's files: one clear line for a damaged file, never an unpickled object.

``weight_files`` finds a folder's weights (``model.safetensors``, sharded or not, else
``pytorch_model.bin``); ``check_weight_files`` validates them before a loader such as
``transformers`` reads them, ``read_weight_files`` reads every tensor itself. Safetensors are
read with ``safetensors``; a pickle only with ``torch.load(weights_only=True)``, so a file holding
anything but tensors is refused, never unpickled. ``read_json_object`` reads a ``config.json``
(or any JSON object) the same way: any problem is one FedbioError that starts with the file.
Used by ``fedbio.models.backbone_loading``, ``amplify_folder``, ``saving`` and ``weights``.
"""

from __future__ import annotations

import json
from pathlib import Path

from fedbio.errors import FedbioError

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_FILE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
WEIGHT_FILES = (SAFETENSORS_FILE, SAFETENSORS_INDEX, PICKLE_FILE, PICKLE_INDEX)
RESAVE = "re-save or re-download the model"
CONVERT = ("on a machine where you trust the file, convert it to safetensors "
           "(safetensors.torch.save_file(state_dict, 'model.safetensors')) and use that instead")
_ZIP_MAGIC = b"PK\x03\x04"   # torch.save's default (zip) format
_PICKLE_MAGIC = b"\x80"      # a pickle's PROTO opcode (torch.save's legacy format, plain pickles)


def first_line(err: BaseException) -> str:
    """An exception's first line, at most 160 characters (its type name if it has no text)."""
    text = str(err).strip()
    return text.splitlines()[0][:160] if text else type(err).__name__


def has_weights(folder: str | Path) -> bool:
    """True if ``folder`` holds a Hugging Face checkpoint (a config and a weights file)."""
    folder = Path(folder)
    return (folder / "config.json").is_file() and any((folder / f).is_file() for f in WEIGHT_FILES)


def read_json_object(path: str | Path, hint: str = RESAVE) -> dict:
    """The JSON object in ``path``; anything else (unreadable, not JSON, not an object) is a
    FedbioError that starts with the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise FedbioError(f"{path}: cannot read it ({err.strerror or err}); {hint}") from None
    except (ValueError, RecursionError) as err:  # bad JSON, bad UTF-8, absurd nesting
        raise FedbioError(f"{path}: not valid JSON (truncated or damaged: {first_line(err)}); "
                          f"{hint}") from None
    if not isinstance(data, dict):
        raise FedbioError(f"{path}: expected a JSON object, found a {type(data).__name__}; {hint}")
    return data


def _damaged_safetensors(path: Path, err: BaseException, hint: str) -> FedbioError:
    if isinstance(err, OSError) and err.strerror:
        return FedbioError(f"{path}: cannot read it ({err.strerror}); {hint}")
    return FedbioError(f"{path}: not a readable safetensors file (truncated or damaged: "
                       f"{first_line(err)}); {hint}")


def check_safetensors(path: str | Path, hint: str = RESAVE) -> None:
    """Read only the header of a safetensors file: a truncated or garbage file fails here, in
    one line, before a loader that would raise its own exception reads it."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise _damaged_safetensors(path, err, hint) from None


def read_safetensors(path: str | Path, hint: str = RESAVE) -> dict:
    """Every tensor of a safetensors file (on the CPU); a damaged file is one FedbioError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise _damaged_safetensors(path, err, hint) from None


def _pickle_refusal(path: Path, err: BaseException) -> FedbioError:
    """The error for a pickle ``torch.load(weights_only=True)`` refused. torch's own text advises
    ``weights_only=False``, which would run whatever the file holds: it is never passed on."""
    import re

    text = str(err)
    found = re.search(r"Unsupported (?:global: GLOBAL|class) ([\w.]+)", text)
    if found:
        what = f"a pickle holding Python objects besides tensors ({found.group(1)})"
    else:
        what = "a pickle that is not a plain torch.save state dict"
    return FedbioError(f"{path}: {what}, which fedbio will not load because unpickling it can "
                       f"run code; {CONVERT}")


def read_pickled_weights(path: str | Path) -> dict:
    """The state dict in a ``pytorch_model.bin``, read with ``torch.load(weights_only=True)``:
    tensors and plain containers only, so nothing in the file runs. A file holding anything
    else, or a damaged one, is one FedbioError naming the file."""
    import pickle
    import warnings

    import torch

    path = Path(path)
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as err:
        raise FedbioError(f"{path}: cannot read it ({err.strerror or err}); {RESAVE}") from None
    if not magic.startswith((_ZIP_MAGIC, _PICKLE_MAGIC)):
        raise FedbioError(f"{path}: not a PyTorch weights file (truncated or damaged: it starts "
                          f"with {magic!r}); {RESAVE}")
    try:
        with warnings.catch_warnings():  # torch warns about legacy files: not the user's business
            warnings.simplefilter("ignore")
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise _pickle_refusal(path, err) from None
    except Exception as err:  # torch.load on damaged bytes raises whatever its reader trips on
        reason = first_line(err).split(". ")[0]
        if "weights_only" in reason:  # never pass on advice to unpickle without the guard
            reason = type(err).__name__
        raise FedbioError(f"{path}: not a readable PyTorch weights file (truncated or damaged: "
                          f"{reason}); {RESAVE}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint: its weights
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise FedbioError(f"{path}: expected a state dict (tensor names -> tensors), found "
                          f"something else; {CONVERT}")
    return state


def _shards(index: Path) -> list[Path]:
    """The shard files an ``*.index.json`` names; each must be a plain file name in its folder
    (a hostile index must not send the loader to ``../../somewhere``)."""
    weight_map = read_json_object(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise FedbioError(f"{index}: has no weight_map (tensor name -> shard file); {RESAVE}")
    names = sorted({str(v) for v in weight_map.values()})
    for name in names:
        if Path(name).name != name or name in (".", ".."):
            raise FedbioError(f"{index}: shard {name!r} is not a file name in {index.parent}; "
                              f"{RESAVE}")
        if not (index.parent / name).is_file():
            raise FedbioError(f"{index}: shard {name} is missing from {index.parent}; {RESAVE}")
    return [index.parent / name for name in names]


def weight_files(folder: str | Path) -> tuple[list[Path], Path]:
    """The files holding a checkpoint folder's weights and the one that names them (the single
    file or the index), preferring safetensors; FedbioError when the folder has none."""
    folder = Path(folder)
    for single, index in ((SAFETENSORS_FILE, SAFETENSORS_INDEX), (PICKLE_FILE, PICKLE_INDEX)):
        if (folder / single).is_file():
            return [folder / single], folder / single
        if (folder / index).is_file():
            return _shards(folder / index), folder / index
    raise FedbioError(f"{folder}: has a config.json but no {SAFETENSORS_FILE} (or "
                      f"{PICKLE_FILE}); {RESAVE}")


def is_pickled(files: list[Path]) -> bool:
    """True for ``pytorch_model*.bin`` files (read with ``read_pickled_weights`` only)."""
    return any(f.suffix != ".safetensors" for f in files)


def check_weight_files(folder: str | Path) -> tuple[dict | None, Path]:
    """Validate a checkpoint folder's weight files before a loader reads them.

    Safetensors: only the headers are read (the loader maps the data itself); gives
    ``(None, source)``. Pickles: read here, safely, and returned as ``(state dict, source)``, so
    the loader is given the tensors and never unpickles the file itself.
    """
    files, source = weight_files(folder)
    if not is_pickled(files):
        for path in files:
            check_safetensors(path)
        return None, source
    state: dict = {}
    for path in files:
        state.update(read_pickled_weights(path))
    return state, source


def read_weight_files(folder: str | Path) -> tuple[dict, Path]:
    """Every tensor of a checkpoint folder (safetensors, sharded or not, else a pickled state dict
    read with ``weights_only=True``) and the file that names them."""
    files, source = weight_files(folder)
    tensors: dict = {}
    for path in files:
        tensors.update(read_pickled_weights(path) if is_pickled([path]) else read_safetensors(path))
    return tensors, source
