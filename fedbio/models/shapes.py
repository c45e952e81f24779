"""A preset's architecture as a model config: ``esm_config`` (transformers' ``EsmConfig``),
``amplify_config`` (``AmplifyConfig``) and ``encoder_config`` (either, by family), so a random
model of a real shape can be built for tests and benchmarks.

    from fedbio.models.shapes import encoder_config
    SequenceModel(name="esm2-8m", ..., encoder_config=encoder_config("esm2-8m").to_dict())
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedbio.errors import FedbioError
from fedbio.models.presets import (
    EOS_ID,
    MASK_ID,
    PAD_ID,
    VOCAB_SIZE,
    ModelPreset,
    get_preset,
)

if TYPE_CHECKING:
    from transformers import EsmConfig

    from fedbio.models.amplify import AmplifyConfig


def esm_config(preset: ModelPreset | str, max_position: int = 1026) -> EsmConfig:
    """A ``transformers.EsmConfig`` with the preset's shape and ESM-2's conventions.

    Matches Meta's ESM-2 configs: rotary positions, token dropout, no embedding layer norm,
    no dropout inside the encoder, layer-norm eps 1e-5.
    """
    from transformers import EsmConfig

    if isinstance(preset, str):
        preset = get_preset(preset)
    if preset.family != "esm2":
        raise FedbioError(f"{preset.name} is an {preset.family} model; use encoder_config")
    return EsmConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=preset.hidden_size,
        num_hidden_layers=preset.num_layers,
        num_attention_heads=preset.num_heads,
        intermediate_size=preset.ffn_size,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=max_position,
        layer_norm_eps=1e-5,
        position_embedding_type="rotary",
        token_dropout=True,
        emb_layer_norm_before=False,
        pad_token_id=PAD_ID,
        mask_token_id=MASK_ID,
        eos_token_id=EOS_ID,
    )


def amplify_config(preset: ModelPreset | str) -> AmplifyConfig:
    """An ``AmplifyConfig`` with the preset's shape and the published AMPLIFY conventions
    (RMSNorm eps 1e-5, SwiGLU, no biases, no dropout, 27 tokens, at most 2048 tokens)."""
    from fedbio.models.amplify import AmplifyConfig  # torch, only when a model is built

    if isinstance(preset, str):
        preset = get_preset(preset)
    if preset.family != "amplify":
        raise FedbioError(f"{preset.name} is an {preset.family} model; use encoder_config")
    return AmplifyConfig(
        hidden_size=preset.hidden_size,
        num_hidden_layers=preset.num_layers,
        num_attention_heads=preset.num_heads,
        intermediate_size=preset.ffn_size,
    )


def encoder_config(preset: ModelPreset | str) -> EsmConfig | AmplifyConfig:
    """The architecture of any preset: an ``EsmConfig`` or an ``AmplifyConfig`` (both have
    ``to_dict()``, which ``SequenceModel(encoder_config=...)`` accepts)."""
    if isinstance(preset, str):
        preset = get_preset(preset)
    return amplify_config(preset) if preset.family == "amplify" else esm_config(preset)
