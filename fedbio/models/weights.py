"""Where pretrained weights (ESM-2, AMPLIFY) come from: carried folders, the HF cache, the hub.

Search order for a preset such as ``esm2-8m``: the ``weights_dir`` argument (``--weights-dir``),
then ``$FEDBIO_WEIGHTS``, each holding ``esm2-8m/``, ``esm2_t6_8M_UR50D/``,
``facebook/esm2_t6_8M_UR50D/`` or a copied hub cache; then the local Hugging Face cache; then,
only if nothing is local and the machine is online, a download from the hub. Anything else ends
in one ``WeightsNotFound`` line naming the two fixes, never a stack of HTTP errors. AMPLIFY
presets are found the same way (``amplify-120m/``, ``AMPLIFY_120M/``, ``chandar-lab/AMPLIFY_120M/``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fedbio.errors import FedbioError
from fedbio.models.presets import ModelPreset, get_preset

# config.json model_types fedbio builds itself (``fedbio.models.backbone.FAMILIES``); any other
# with an ``auto_map`` is remote code.
BUILT_IN_MODEL_TYPES = ("esm", "AMPLIFY")
# Only what loading needs; never pickled checkpoints (pytorch_model.bin, tf_model.h5).
ALLOW_PATTERNS = [
    "config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
]
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
HUB_TIMEOUT_S = 10.0  # an unreachable hub must fail in seconds, not minutes


class _HubUnreachable(FedbioError):
    """The hub cannot be used from here (offline mode, no network, hub down)."""


class WeightsNotFound(FedbioError):
    """No pretrained weights for a preset anywhere local, and none could be downloaded."""

    def __init__(self, name: str, hf_id: str | None = None):
        self.name = name
        source = f" ({hf_id})" if hf_id else ""
        super().__init__(
            f"no pretrained weights for {name}{source} in --weights-dir, $FEDBIO_WEIGHTS or the "
            f"Hugging Face cache, and the hub is unreachable: on a machine that is online run "
            f"`fedbio weights download {name} [--to DIR]`, or carry such a DIR to this machine "
            f"and pass `--weights-dir DIR` (or set FEDBIO_WEIGHTS=DIR); "
            f"esm2-tiny and amplify-tiny need no weights"
        )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:160] if text else type(err).__name__


def has_weights(folder: str | Path) -> bool:
    """True if ``folder`` holds a Hugging Face checkpoint (a config and a weights file)."""
    folder = Path(folder)
    return (folder / "config.json").is_file() and any((folder / f).is_file() for f in WEIGHT_FILES)


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (not at import time)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """True when the user said the hub is off limits (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def _cached_snapshot(hf_id: str, cache_dir: Path) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(hf_id, "config.json", cache_dir=str(cache_dir))
    if isinstance(hit, str):  # other return values mean "not cached"
        snapshot = Path(hit).parent
        if has_weights(snapshot):
            return snapshot
    return None


_MODEL_TYPES = {"esm2": "esm", "amplify": "AMPLIFY"}  # preset family -> config.json model_type


def _same_shape(folder: Path, preset: ModelPreset) -> bool:
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(cfg, dict) or cfg.get("model_type") != _MODEL_TYPES.get(preset.family):
        return False
    return (cfg.get("num_hidden_layers"), cfg.get("hidden_size")) == (
        preset.num_layers,
        preset.hidden_size,
    )


def find_local_weights(name: str, weights_dir: str | Path | None = None) -> Path | None:
    """The folder holding pretrained weights for preset ``name`` on this machine, or None.

    Never touches the network. Random-init presets (``esm2-tiny``, ``amplify-tiny``) always
    give None.
    """
    preset = get_preset(name)
    if not preset.pretrained or preset.hf_id is None:
        return None
    roots = [Path(d).expanduser() for d in (weights_dir, os.environ.get("FEDBIO_WEIGHTS")) if d]
    for root in roots:
        for sub in (preset.name, preset.hf_id.split("/")[-1], preset.hf_id):
            if has_weights(root / sub):
                return root / sub
        # A --weights-dir pointing straight at the checkpoint is fine if its shape matches.
        if has_weights(root) and _same_shape(root, preset):
            return root
        for cache in (root, root / "hub"):  # a copied Hugging Face cache
            snapshot = _cached_snapshot(preset.hf_id, cache)
            if snapshot is not None:
                return snapshot
    return _cached_snapshot(preset.hf_id, hf_cache_dir())


def download_weights(name: str, to: str | Path | None = None) -> Path:
    """Download preset ``name`` from the Hugging Face hub; returns the folder holding it.

    With ``to``, the files land in ``<to>/<name>/`` (a folder to carry to an offline machine and
    name with ``--weights-dir <to>``); without, in the Hugging Face cache, where
    ``load_backbone`` finds them. Only configs, safetensors and vocabulary files are fetched.
    """
    preset = get_preset(name)
    if preset.hf_id is None:
        raise FedbioError(f"{name} is a random-init preset; it has no weights to download")
    hint = (
        f"on an offline machine, download on a connected one with `fedbio weights download "
        f"{name} --to DIR`, carry DIR over and pass --weights-dir DIR (or set FEDBIO_WEIGHTS=DIR)"
    )
    if hub_offline():
        raise _HubUnreachable(f"cannot download {preset.hf_id}: HF_HUB_OFFLINE is set; {hint}")
    from huggingface_hub import HfApi, snapshot_download

    try:  # a quick probe, so an unreachable hub fails in seconds with one line
        HfApi().model_info(preset.hf_id, timeout=HUB_TIMEOUT_S)
    except Exception as err:  # any failure of the probe means the hub is not usable from here
        raise _HubUnreachable(
            f"cannot reach the Hugging Face hub for {preset.hf_id} ({_first_line(err)}); {hint}"
        ) from None
    target: dict = {"local_dir": str(Path(to).expanduser() / name)} if to else {
        "cache_dir": str(hf_cache_dir())
    }
    try:
        folder = Path(
            snapshot_download(
                preset.hf_id, allow_patterns=ALLOW_PATTERNS, etag_timeout=HUB_TIMEOUT_S, **target
            )
        )
    except Exception as err:  # network, disk or hub errors: one line for the user, no HTTP stack
        raise FedbioError(f"download of {preset.hf_id} failed ({_first_line(err)}); {hint}") from None
    if not has_weights(folder):
        raise FedbioError(f"{preset.hf_id} was downloaded to {folder} but holds no safetensors weights")
    return folder


def resolve_weights(name: str, weights_dir: str | Path | None = None) -> Path:
    """The folder to load preset ``name`` from: local first, then the hub; else WeightsNotFound."""
    preset = get_preset(name)
    folder = find_local_weights(name, weights_dir)
    if folder is not None:
        return folder
    if not hub_offline():
        try:
            return download_weights(name)
        except _HubUnreachable:
            pass  # the single WeightsNotFound below says what to do
    raise WeightsNotFound(name, preset.hf_id)


def _auto_map_modules(config: dict) -> set[str]:
    """The Python files (module names) a config.json's ``auto_map`` points into."""
    out = set()
    for ref in (config.get("auto_map") or {}).values():
        for item in ref if isinstance(ref, (list, tuple)) else [ref]:
            if isinstance(item, str) and "." in item:
                out.add(item.split("--")[-1].rsplit(".", 1)[0])
    return out


def hub_checkpoint(repo_id: str, trust_remote_code: bool = False) -> Path:
    """A local folder holding hub model ``repo_id`` (``org/name``): the Hugging Face cache
    first, then (online only) a download of configs, safetensors, vocabulary and, for an opted-in
    remote-code model, its Python files.

    Only ``config.json`` is fetched before deciding: a remote-code model (``auto_map``, see
    ``fedbio.models.backbone``) without ``trust_remote_code`` is refused before its code is
    downloaded. Never pickled weights.
    """
    cache = hf_cache_dir()
    hint = (f"{repo_id!r} is neither a preset, an existing folder nor a model in the Hugging Face "
            "cache")
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo_id, "config.json", cache_dir=str(cache))
    if isinstance(hit, str):
        config_file = Path(hit)
    else:
        if hub_offline():
            raise FedbioError(f"{hint}, and HF_HUB_OFFLINE is set; download it on a connected "
                              "machine and carry the folder here")
        from huggingface_hub import hf_hub_download

        try:
            config_file = Path(hf_hub_download(repo_id, "config.json", cache_dir=str(cache),
                                               etag_timeout=HUB_TIMEOUT_S))
        except Exception as err:  # unknown repo, no network: one line
            raise FedbioError(f"{hint}, and the hub did not give its config.json "
                              f"({_first_line(err)})") from None
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as err:
        raise FedbioError(f"{config_file}: cannot read it as JSON ({err})") from None
    remote = is_remote_config(config)
    if remote and not trust_remote_code:
        raise remote_code_refusal(repo_id, config)
    snapshot = config_file.parent
    code = {f"{m}.py" for m in _auto_map_modules(config)} if remote else set()
    if has_weights(snapshot) and all((snapshot / f).is_file() for f in code):
        return snapshot
    if hub_offline():
        raise FedbioError(f"{repo_id}: the Hugging Face cache holds its config.json but not its "
                          "weights (or code), and HF_HUB_OFFLINE is set")
    from huggingface_hub import snapshot_download

    patterns = ALLOW_PATTERNS + sorted(code)
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=patterns, cache_dir=str(cache),
                                        etag_timeout=HUB_TIMEOUT_S))
    except Exception as err:
        raise FedbioError(f"download of {repo_id} failed ({_first_line(err)})") from None
    if not has_weights(folder):
        raise FedbioError(f"{repo_id} was downloaded to {folder} but holds no safetensors weights")
    return folder


# --- reading weight files: one clear line for a damaged file, never an unpickled object ------

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_FILE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
RESAVE = "re-save or re-download the model"
CONVERT = ("on a machine where you trust the file, convert it to safetensors "
           "(safetensors.torch.save_file(state_dict, 'model.safetensors')) and use that instead")
_ZIP_MAGIC = b"PK\x03\x04"   # torch.save's default (zip) format
_PICKLE_MAGIC = b"\x80"      # a pickle's PROTO opcode (torch.save's legacy format, plain pickles)


def read_json_object(path: str | Path, hint: str = RESAVE) -> dict:
    """The JSON object in ``path``; anything else (unreadable, not JSON, not an object) is a
    FedbioError that starts with the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise FedbioError(f"{path}: cannot read it ({err.strerror or err}); {hint}") from None
    except (ValueError, RecursionError) as err:  # bad JSON, bad UTF-8, absurd nesting
        raise FedbioError(f"{path}: not valid JSON (truncated or damaged: {_first_line(err)}); "
                          f"{hint}") from None
    if not isinstance(data, dict):
        raise FedbioError(f"{path}: expected a JSON object, found a {type(data).__name__}; {hint}")
    return data


def _damaged_safetensors(path: Path, err: BaseException, hint: str) -> FedbioError:
    if isinstance(err, OSError) and err.strerror:
        return FedbioError(f"{path}: cannot read it ({err.strerror}); {hint}")
    return FedbioError(f"{path}: not a readable safetensors file (truncated or damaged: "
                       f"{_first_line(err)}); {hint}")


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
        reason = _first_line(err).split(". ")[0]
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


def is_remote_config(config: dict) -> bool:
    """True for a config.json fedbio cannot build itself but its ``auto_map`` can (remote code)."""
    return (isinstance(config, dict) and config.get("model_type") not in BUILT_IN_MODEL_TYPES
            and isinstance(config.get("auto_map"), dict) and "AutoModel" in config["auto_map"])


def remote_code_refusal(source: str | Path, config: dict) -> FedbioError:
    """The error for a remote-code checkpoint loaded without the opt-in."""
    target = config.get("auto_map", {}).get("AutoModel", "?")
    return FedbioError(
        f"{source}: config.json has model_type {config.get('model_type')!r} and an auto_map "
        f"(AutoModel -> {target}): loading it runs Python code shipped with the checkpoint. "
        "Only if you trust that code, opt in with ModelConfig(trust_remote_code=True) "
        "(`--trust-remote-code` on the command line); otherwise use an ESM-2 or AMPLIFY "
        "checkpoint fedbio loads itself (e.g. facebook/esm2_t33_650M_UR50D, preset esm2-650m)"
    )
