"""Where pretrained weights (ESM-2, AMPLIFY) come from: carried folders, the HF cache, the hub.

Search order for a preset such as ``esm2-8m``: the ``weights_dir`` argument (``--weights-dir``),
then ``$FEDBIO_WEIGHTS``, each holding ``esm2-8m/``, ``esm2_t6_8M_UR50D/``,
``facebook/esm2_t6_8M_UR50D/`` or a copied hub cache; then the local Hugging Face cache; then,
only if nothing is local and the machine is online, a download from the hub. Anything else ends
in one ``WeightsNotFound`` line naming the two fixes, never a stack of HTTP errors. AMPLIFY
presets are found the same way (``amplify-120m/``, ``AMPLIFY_120M/``, ``chandar-lab/AMPLIFY_120M/``).

``find_local_weights`` / ``download_weights`` / ``resolve_weights`` serve presets;
``hub_checkpoint`` fetches any hub id (``org/name``) for ``load_backbone``. Reading the files
found is ``fedbio.models.checkpoint_files``; the remote-code policy is ``fedbio.models.remote``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fedbio.errors import FedbioError
from fedbio.models.checkpoint_files import first_line, has_weights
from fedbio.models.presets import ModelPreset, get_preset
from fedbio.models.remote import auto_map_modules, is_remote_config, remote_code_refusal

# Only what loading needs; never pickled checkpoints (pytorch_model.bin, tf_model.h5).
ALLOW_PATTERNS = [
    "config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
]
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
            f"cannot reach the Hugging Face hub for {preset.hf_id} ({first_line(err)}); {hint}"
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
        raise FedbioError(f"download of {preset.hf_id} failed ({first_line(err)}); {hint}") from None
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


def hub_checkpoint(repo_id: str, trust_remote_code: bool = False) -> Path:
    """A local folder holding hub model ``repo_id`` (``org/name``): the Hugging Face cache
    first, then (online only) a download of configs, safetensors, vocabulary and, for an opted-in
    remote-code model, its Python files.

    Only ``config.json`` is fetched before deciding: a remote-code model (``auto_map``, see
    ``fedbio.models.remote``) without ``trust_remote_code`` is refused before its code is
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
                              f"({first_line(err)})") from None
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as err:
        raise FedbioError(f"{config_file}: cannot read it as JSON ({err})") from None
    remote = is_remote_config(config)
    if remote and not trust_remote_code:
        raise remote_code_refusal(repo_id, config)
    snapshot = config_file.parent
    code = {f"{m}.py" for m in auto_map_modules(config)} if remote else set()
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
        raise FedbioError(f"download of {repo_id} failed ({first_line(err)})") from None
    if not has_weights(folder):
        raise FedbioError(f"{repo_id} was downloaded to {folder} but holds no safetensors weights")
    return folder
