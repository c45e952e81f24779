"""The named encoder shapes fedbio knows (``PRESETS``) and the config for each.

Two families: ``esm2`` (``esm2-tiny``, random init, small enough to train on two CPU cores, and
Meta's published ESM-2 checkpoints, the ones BioNeMo's ESM-2nv converts) and ``amplify``
(``amplify-tiny``, random init, and chandar-lab's AMPLIFY 120M / 350M). Their architectures as
model configs are in ``fedbio.models.shapes``.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedbio.errors import FedbioError

# Vocabulary facts shared by every ESM-2 checkpoint (see esm_vocab.txt).
VOCAB_SIZE = 33
CLS_ID, PAD_ID, EOS_ID, UNK_ID, MASK_ID = 0, 1, 2, 3, 32


@dataclass(frozen=True)
class ModelPreset:
    """One encoder shape; ``hf_id`` is None for shapes that only exist as random init.

    ``family`` is "esm2" or "amplify"; ``ffn_size`` is the config's ``intermediate_size``
    (for AMPLIFY, SwiGLU then uses 2/3 of it, rounded up to a multiple of 8).
    """

    name: str
    family: str = "esm2"
    hf_id: str | None = None
    num_layers: int = 4
    hidden_size: int = 128
    num_heads: int = 4
    ffn_size: int = 512
    pretrained: bool = False


def _esm2(name: str, hf_id: str, layers: int, hidden: int, heads: int) -> ModelPreset:
    return ModelPreset(name, "esm2", hf_id, layers, hidden, heads, 4 * hidden, pretrained=True)


def _amplify(name: str, hf_id: str, layers: int, hidden: int, heads: int) -> ModelPreset:
    return ModelPreset(name, "amplify", hf_id, layers, hidden, heads, 4 * hidden, pretrained=True)


PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        ModelPreset("esm2-tiny", "esm2", None, 4, 128, 4, 512, pretrained=False),
        _esm2("esm2-8m", "facebook/esm2_t6_8M_UR50D", 6, 320, 20),
        _esm2("esm2-35m", "facebook/esm2_t12_35M_UR50D", 12, 480, 20),
        _esm2("esm2-150m", "facebook/esm2_t30_150M_UR50D", 30, 640, 20),
        _esm2("esm2-650m", "facebook/esm2_t33_650M_UR50D", 33, 1280, 20),
        _esm2("esm2-3b", "facebook/esm2_t36_3B_UR50D", 36, 2560, 40),
        ModelPreset("amplify-tiny", "amplify", None, 4, 128, 4, 512, pretrained=False),
        _amplify("amplify-120m", "chandar-lab/AMPLIFY_120M", 24, 640, 10),
        _amplify("amplify-350m", "chandar-lab/AMPLIFY_350M", 32, 960, 15),
    )
}


def get_preset(name: str) -> ModelPreset:
    """The preset called ``name``; a FedbioError listing the known names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise FedbioError(
            f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}"
        ) from None
