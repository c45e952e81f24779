"""Finding or building an encoder: ``load_backbone`` and the builders behind it.

``load_backbone`` accepts a preset name (``esm2-tiny`` and ``amplify-tiny`` are random init; the
others load pretrained weights, see ``fedbio.models.weights``), a folder or a Hugging Face hub id
(``org/name``). A folder is one saved with ``save_pretrained`` of an ``EsmModel``,
``EsmForMaskedLM`` or ``EsmForSequenceClassification``, one in AMPLIFY's published layout
(``config.json`` with ``model_type`` "AMPLIFY" and ``model.safetensors``,
``fedbio.models.amplify_folder``) or, only with ``trust_remote_code``, a remote-code checkpoint
(``fedbio.models.remote``); ``folder_family`` tells which from ``config.json``. The builders
(``random_backbone``, ``random_backbone_from_dict``, ``backbone_from_folder``,
``remote_backbone``) each give a ``fedbio.models.backbone.Backbone``; ``tokenizer_for`` gives the
matching tokenizer. transformers is imported inside functions: ``import fedbio.models`` stays
cheap for processes that never build an ESM encoder.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fedbio.errors import FedbioError
from fedbio.models.amplify import MODEL_TYPE as AMPLIFY_MODEL_TYPE
from fedbio.models.amplify import AmplifyConfig, random_amplify
from fedbio.models.amplify_folder import amplify_from_folder
from fedbio.models.backbone import FAMILIES, Backbone
from fedbio.models.checkpoint_files import check_weight_files, has_weights, read_json_object
from fedbio.models.presets import PRESETS
from fedbio.models.remote import REMOTE, is_remote_config, remote_code_refusal
from fedbio.models.shapes import amplify_config, esm_config
from fedbio.models.tokenizer import AmplifyTokenizer, load_tokenizer
from fedbio.models.weights import hub_checkpoint, resolve_weights

if TYPE_CHECKING:
    from transformers import EsmConfig, EsmTokenizer

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # org/name on the Hugging Face hub


@contextmanager
def quiet_transformers():
    """Silence load reports and progress bars (unused lm_head keys are expected, not news)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _float32_kwargs() -> dict[str, Any]:
    import transformers

    major = int(transformers.__version__.split(".")[0])
    # transformers 5 renamed torch_dtype to dtype (and defaults to the checkpoint's dtype).
    return {"dtype": torch.float32} if major >= 5 else {"torch_dtype": torch.float32}


def random_backbone(config: EsmConfig | AmplifyConfig, name: str, seed: int = 0) -> Backbone:
    """A randomly initialised encoder of ``config``'s shape; same seed, same weights.

    The global torch RNG is left as it was.
    """
    if isinstance(config, AmplifyConfig):
        return Backbone(random_amplify(config, seed), name)
    from transformers import EsmModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with quiet_transformers():
            esm = EsmModel(config, add_pooling_layer=False)
    return Backbone(esm.float(), name)


def random_backbone_from_dict(config: dict, name: str, seed: int = 0,
                              trust_remote_code: bool = False) -> tuple[Any, Backbone]:
    """Tokenizer and random encoder of a saved config dict (``Backbone.config.to_dict()``);
    its ``model_type`` says the family.

    A remote-code config cannot be built from the dict alone (its code lives with the original
    checkpoint): with ``trust_remote_code`` the encoder is loaded from ``name`` (the original
    folder or hub id; the caller then replaces every tensor), without it is a FedbioError.
    """
    if is_remote_config(config):
        if not trust_remote_code:
            raise remote_code_refusal(name, config)
        return load_backbone(name, seed=seed, trust_remote_code=True)
    if config.get("model_type") == AMPLIFY_MODEL_TYPE:
        return AmplifyTokenizer(), random_backbone(AmplifyConfig.from_dict(config), name, seed)
    from transformers import EsmConfig

    return load_tokenizer(), random_backbone(EsmConfig.from_dict(config), name, seed)


def tokenizer_for(family: str, vocab_file: str | Path | None = None) -> Any:
    """The tokenizer of ``family`` ("esm2" or "amplify") from ``vocab_file`` (default: shipped);
    an unreadable vocabulary file is one FedbioError naming it."""
    try:
        return AmplifyTokenizer(vocab_file) if family == "amplify" else load_tokenizer(vocab_file)
    except (OSError, ValueError) as err:  # binary garbage (UnicodeDecodeError), unreadable file
        raise FedbioError(f"{vocab_file}: not a readable vocabulary ({_first(err)}); re-save or "
                          "re-download the model") from None


def _first(err: BaseException) -> str:
    """An exception's text on one line (some put the reason on their second line)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return " ".join(lines)[:200] if lines else type(err).__name__


def remote_backbone(folder: str | Path, name: str | None = None, seed: int = 0,
                    random_init: bool = False) -> Backbone:
    """A remote-code encoder (``AutoModel`` with ``trust_remote_code=True``) from a local folder.

    Callers check the opt-in first (``folder_family``); this function runs the folder's code.
    ``random_init`` builds the architecture only (``AutoModel.from_config``, seeded).
    """
    from transformers import AutoConfig, AutoModel

    folder = Path(folder)
    try:
        with quiet_transformers():
            if random_init:
                config = AutoConfig.from_pretrained(str(folder), trust_remote_code=True,
                                                    local_files_only=True)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    model = AutoModel.from_config(config, trust_remote_code=True, **_float32_kwargs())
            else:
                kwargs = dict(trust_remote_code=True, local_files_only=True, **_float32_kwargs())
                try:  # ESM-style models take add_pooling_layer; the pooler is never used
                    model = AutoModel.from_pretrained(str(folder), add_pooling_layer=False, **kwargs)
                except TypeError:
                    model = AutoModel.from_pretrained(str(folder), **kwargs)
    except ImportError as err:  # e.g. transformer_engine missing outside NVIDIA's containers
        raise FedbioError(f"cannot load the remote-code model in {folder}: its code needs a "
                          f"package that is not installed ({_first(err)})") from None
    except (OSError, ValueError, RuntimeError, TypeError, AttributeError) as err:
        raise FedbioError(f"cannot load the remote-code model in {folder}: {_first(err)}") from None
    return Backbone(model.float(), name or folder.name, family=REMOTE)


def backbone_from_folder(folder: str | Path, name: str | None = None,
                         trust_remote_code: bool = False) -> Backbone:
    """The encoder weights of a checkpoint folder: Hugging Face ESM (any ESM head is dropped),
    AMPLIFY's published layout (its decoder is kept, frozen, so the folder round-trips) or,
    with ``trust_remote_code``, a remote-code model (see ``fedbio.models.remote``).

    Weight files are checked before any loader reads them (``check_weight_files``): a damaged
    file, or a ``pytorch_model.bin`` holding more than tensors, is one FedbioError naming it.
    """
    folder = Path(folder)
    family = folder_family(folder, trust_remote_code)[0]
    if family == "amplify":
        return Backbone(amplify_from_folder(folder), name or folder.name)
    state, source = check_weight_files(folder)
    if family == REMOTE:
        return remote_backbone(folder, name)
    return Backbone(_esm_from_folder(folder, state, source), name or folder.name)


# Encoder tensors an ESM checkpoint may lack without being wrong: recomputed buffers, the unused
# pooler and contact head (a checkpoint saved from a bare EsmModel has no ``esm.`` prefix either).
_ESM_OPTIONAL = ("inv_freq", "position_ids", "_extra_state")
_ESM_OPTIONAL_PARTS = ("pooler.", "contact_head.")


def _esm_config(folder: Path) -> EsmConfig:
    """The ``EsmConfig`` of ``folder/config.json``, checked by building the encoder on the meta
    device (no memory, no initialisation): a bad value is one FedbioError naming config.json."""
    from transformers import EsmConfig, EsmModel

    try:
        with quiet_transformers():
            config = EsmConfig.from_pretrained(str(folder), local_files_only=True)
            with torch.device("meta"):
                EsmModel(config, add_pooling_layer=False)
    except Exception as err:  # config classes raise any type on bad values (transformers 5:
        # huggingface_hub's StrictDataclassFieldValidationError); the file is what is wrong
        raise FedbioError(f"{folder / 'config.json'}: not an ESM configuration fedbio can build "
                          f"({_first(err)}); re-save or re-download the checkpoint") from None
    return config


def _esm_from_folder(folder: Path, state: dict | None, source: Path) -> nn.Module:
    """``EsmModel`` from a checked folder: transformers maps safetensors itself; pickled weights
    come in as ``state`` (already read with ``weights_only=True``), so it never unpickles."""
    from transformers import EsmModel

    config = _esm_config(folder)
    kwargs = dict(config=config, add_pooling_layer=False, output_loading_info=True,
                  **_float32_kwargs())
    try:
        with quiet_transformers():
            if state is None:
                esm, info = EsmModel.from_pretrained(str(folder), local_files_only=True, **kwargs)
            else:
                esm, info = EsmModel.from_pretrained(None, state_dict=state, **kwargs)
    except (OSError, ValueError, RuntimeError, TypeError, KeyError, AttributeError) as err:
        mismatch = "mismatched" in str(err) or "size mismatch" in str(err)
        why = "a tensor's shape differs from what config.json implies" if mismatch else _first(err)
        raise FedbioError(f"{source}: cannot load an ESM encoder from it ({why}); "
                          "re-save or re-download the checkpoint") from None
    # transformers fills absent tensors with random values (and says so only in a log line that
    # fedbio silences): a checkpoint whose names do not fit would train from noise unnoticed.
    missing = sorted(k for k in info.get("missing_keys", ())
                     if not k.endswith(_ESM_OPTIONAL) and not k.startswith(_ESM_OPTIONAL_PARTS))
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise FedbioError(f"{source}: lacks encoder tensor(s) {', '.join(missing[:3])}{more} that "
                          "config.json implies; is it an ESM checkpoint? re-save it with "
                          "save_pretrained")
    return esm


def folder_family(folder: Path, trust_remote_code: bool = False) -> tuple[str, dict]:
    """The family ("esm2", "amplify" or, opted in, "remote") and config.json of a folder."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FedbioError(f"{folder} has no config.json; save the model with save_pretrained")
    config = read_json_object(config_file, "re-save or re-download the checkpoint")
    family = FAMILIES.get(config.get("model_type")) if isinstance(config, dict) else None
    if family is None and is_remote_config(config):
        if not trust_remote_code:
            raise remote_code_refusal(folder, config)
        return REMOTE, config
    if family is None:
        model_type = config.get("model_type") if isinstance(config, dict) else None
        raise FedbioError(
            f"{config_file}: model_type {model_type!r}; fedbio loads ESM ('esm') and AMPLIFY "
            f"('{AMPLIFY_MODEL_TYPE}') models, and remote-code checkpoints (an auto_map in "
            "config.json) with trust_remote_code"
        )
    return family, config


def _folder_tokenizer(folder: Path, family: str = "esm2") -> Any:
    """The folder's own ``vocab.txt`` if it has one, else the family's shipped vocabulary."""
    vocab = folder / "vocab.txt"
    return tokenizer_for(family, vocab if vocab.is_file() else None)


def load_backbone(
    name_or_path: str,
    *,
    weights_dir: str | None = None,
    seed: int = 0,
    random_init: bool = False,
    trust_remote_code: bool = False,
) -> tuple[EsmTokenizer | AmplifyTokenizer, Backbone]:
    """The tokenizer and encoder named by a preset or a checkpoint folder.

    ``esm2-tiny`` and ``amplify-tiny``, and any preset with ``random_init=True``, are built from
    ``seed``. Pretrained presets are searched in ``weights_dir``, ``$FEDBIO_WEIGHTS``, the Hugging
    Face cache, then the hub; failing all, ``WeightsNotFound`` says how to get them. A folder's
    ``config.json`` says its family: ESM folders are loaded with ``EsmModel.from_pretrained``,
    AMPLIFY folders with ``amplify_from_folder`` (with ``random_init``, only the shape is used).
    A Hugging Face hub id (``org/name``) that is neither is fetched (cache first) and loaded as a
    folder. Remote-code checkpoints need ``trust_remote_code`` (``fedbio.models.remote``).
    The tokenizer is an ``EsmTokenizer`` or an ``AmplifyTokenizer``.
    """
    name = str(name_or_path)
    if name in PRESETS:
        preset = PRESETS[name]
        if random_init or not preset.pretrained:
            if preset.family == "amplify":
                return AmplifyTokenizer(), random_backbone(amplify_config(preset), name, seed)
            return load_tokenizer(), random_backbone(esm_config(preset), name, seed)
        folder = resolve_weights(name, weights_dir)
        family = folder_family(folder)[0]
        if family != preset.family:
            raise FedbioError(f"{folder} holds an {family} model, not {name}'s {preset.family}")
        return _folder_tokenizer(folder, family), backbone_from_folder(folder, name)

    folder = Path(name).expanduser()
    if not folder.is_dir() and HUB_ID.match(name):
        folder = hub_checkpoint(name, trust_remote_code=trust_remote_code)
    if folder.is_dir():
        family, config = folder_family(folder, trust_remote_code)
        tokenizer = _folder_tokenizer(folder, family)
        if len(tokenizer) != config.get("vocab_size"):
            raise FedbioError(
                f"{folder}: tokenizer has {len(tokenizer)} tokens but the model expects "
                f"{config.get('vocab_size')}"
            )
        if random_init:
            if family == REMOTE:
                return tokenizer, remote_backbone(folder, name, seed, random_init=True)
            if family == "amplify":
                arch = AmplifyConfig.from_dict(config, source=folder / "config.json")
                return tokenizer, random_backbone(arch, name, seed)
            return tokenizer, random_backbone(_esm_config(folder), name, seed)
        if not has_weights(folder):
            raise FedbioError(f"{folder} has a config.json but no model.safetensors")
        return tokenizer, backbone_from_folder(folder, name, trust_remote_code)

    raise FedbioError(
        f"unknown model {name!r}: not a preset ({', '.join(PRESETS)}) nor an existing folder"
    )
