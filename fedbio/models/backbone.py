"""The ESM-2 encoder (``Backbone``) and ``load_backbone``, which finds or builds one.

``load_backbone`` accepts a preset name (``esm2-tiny`` is random init; ``esm2-8m`` and larger load
pretrained weights, see ``fedbio.models.weights``) or a folder saved with ``save_pretrained`` of
an ``EsmModel``, ``EsmForMaskedLM`` or ``EsmForSequenceClassification``. transformers is imported
inside functions: ``import fedbio.models`` stays cheap for processes that never build an encoder.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fedbio.errors import FedbioError
from fedbio.models.presets import PRESETS, esm_config
from fedbio.models.tokenizer import load_tokenizer
from fedbio.models.weights import has_weights, resolve_weights

if TYPE_CHECKING:
    from transformers import EsmConfig, EsmTokenizer


class Backbone(nn.Module):
    """An ``EsmModel`` without pooler; ``forward`` gives the final hidden states [B, L, H]."""

    def __init__(self, esm: nn.Module, name: str):
        super().__init__()
        self.esm = esm
        self.name = name
        self.hidden_size = int(esm.config.hidden_size)
        self.pad_token_id = int(esm.config.pad_token_id)
        # The contact head never sees a gradient from sequence tasks; trainable, it would break
        # optimisers and privacy engines that expect a gradient for every trainable parameter.
        contact = getattr(esm, "contact_head", None)
        if contact is not None:
            contact.requires_grad_(False)

    @property
    def config(self) -> EsmConfig:
        """The encoder's ``transformers.EsmConfig``."""
        return self.esm.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states ``last_hidden_state`` [batch, length, hidden]."""
        if attention_mask is None:
            attention_mask = (input_ids != self.pad_token_id).long()
        return self.esm(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


@contextmanager
def _quiet_transformers():
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


def random_backbone(config: EsmConfig, name: str, seed: int = 0) -> Backbone:
    """A randomly initialised encoder of ``config``'s shape; same seed, same weights.

    The global torch RNG is left as it was.
    """
    from transformers import EsmModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with _quiet_transformers():
            esm = EsmModel(config, add_pooling_layer=False)
    return Backbone(esm.float(), name)


def backbone_from_folder(folder: str | Path, name: str | None = None) -> Backbone:
    """The encoder weights of a Hugging Face ESM checkpoint folder (any ESM head is dropped)."""
    from transformers import EsmModel

    folder = Path(folder)
    _check_esm_folder(folder)
    try:
        with _quiet_transformers():
            esm = EsmModel.from_pretrained(
                str(folder), add_pooling_layer=False, local_files_only=True, **_float32_kwargs()
            )
    except (OSError, ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise FedbioError(f"cannot load an ESM encoder from {folder}: {first}") from None
    return Backbone(esm, name or folder.name)


def _check_esm_folder(folder: Path) -> dict:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FedbioError(f"{folder} has no config.json; save the model with save_pretrained")
    config = json.loads(config_file.read_text())
    if config.get("model_type") != "esm":
        raise FedbioError(
            f"{folder} holds a {config.get('model_type')!r} model; fedbio loads ESM models only"
        )
    return config


def _folder_tokenizer(folder: Path) -> EsmTokenizer:
    vocab = folder / "vocab.txt"
    return load_tokenizer(vocab if vocab.is_file() else None)


def load_backbone(
    name_or_path: str,
    *,
    weights_dir: str | None = None,
    seed: int = 0,
    random_init: bool = False,
) -> tuple[EsmTokenizer, Backbone]:
    """The tokenizer and encoder named by a preset or a checkpoint folder.

    ``esm2-tiny``, and any preset with ``random_init=True``, is built from ``seed``. Pretrained
    presets are searched in ``weights_dir``, ``$FEDBIO_WEIGHTS``, the Hugging Face cache, then
    the hub; failing all, ``WeightsNotFound`` says how to get them. A folder is loaded with
    ``EsmModel.from_pretrained`` (with ``random_init``, only its shape is used).
    """
    name = str(name_or_path)
    if name in PRESETS:
        preset = PRESETS[name]
        if random_init or not preset.pretrained:
            return load_tokenizer(), random_backbone(esm_config(preset), name, seed)
        folder = resolve_weights(name, weights_dir)
        return _folder_tokenizer(folder), backbone_from_folder(folder, name)

    folder = Path(name).expanduser()
    if folder.is_dir():
        config = _check_esm_folder(folder)
        tokenizer = _folder_tokenizer(folder)
        if len(tokenizer) != config.get("vocab_size"):
            raise FedbioError(
                f"{folder}: tokenizer has {len(tokenizer)} tokens but the model expects "
                f"{config.get('vocab_size')}"
            )
        if random_init:
            from transformers import EsmConfig

            return tokenizer, random_backbone(EsmConfig.from_pretrained(str(folder)), name, seed)
        if not has_weights(folder):
            raise FedbioError(f"{folder} has a config.json but no model.safetensors")
        return tokenizer, backbone_from_folder(folder, name)

    raise FedbioError(
        f"unknown model {name!r}: not a preset ({', '.join(PRESETS)}) nor an existing folder"
    )
