"""AMPLIFY (chandar-lab) in plain PyTorch: ``AmplifyConfig``, the ``Amplify`` encoder and its layers.

AMPLIFY is a pre-norm transformer encoder for proteins: RMSNorm (computed in float32), rotary
positions in the complex (LLaMA) form that rotates feature pairs (2m, 2m+1), SwiGLU feed-forward
layers, no biases, a 27-token vocabulary. ``Amplify`` reproduces the reference model of
https://github.com/chandar-lab/AMPLIFY (``src/amplify/model/amplify.py``, MIT licence) without
xformers or remote code: its ``state_dict`` has exactly the published parameter names, so the
Hugging Face checkpoints ``chandar-lab/AMPLIFY_120M`` and ``chandar-lab/AMPLIFY_350M`` load as
they are. ``forward`` gives the final hidden states *before* the last norm (``layer_norm_2``),
which the reference applies only on the way into its masked-language-model decoder.

The published folder layout (``save_amplify``, ``amplify_from_folder``) is
``fedbio.models.amplify_folder``; the 27-token ``AmplifyTokenizer`` is in
``fedbio.models.tokenizer``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fedbio.errors import FedbioError

MODEL_TYPE = "AMPLIFY"
ROPE_THETA = 10000.0
LORA_TARGETS = ["q", "k", "v"]


@dataclass
class AmplifyConfig:
    """An AMPLIFY architecture; field names and defaults as in the reference's ``config.json``.

    The defaults are AMPLIFY_350M's shape (the reference's defaults); ``AMPLIFY_120M`` is 24
    layers x 640 with 10 heads and ``intermediate_size`` 2560.
    """

    hidden_size: int = 960
    num_hidden_layers: int = 32
    num_attention_heads: int = 15
    intermediate_size: int = 3840
    dropout_prob: float = 0.0
    embedding_init_range: float = 0.02
    decoder_init_range: float = 0.02
    rms_norm: bool = True
    norm_eps: float = 1e-5
    hidden_act: str = "SwiGLU"
    layer_norm_after_embedding: bool = False
    layer_norm_before_last_layer: bool = True
    vocab_size: int = 27
    ffn_bias: bool = False
    att_bias: bool = False
    pad_token_id: int = 0
    unk_token_id: int = 1
    mask_token_id: int = 2
    bos_token_id: int = 3
    eos_token_id: int = 4
    max_length: int = 2048

    model_type = MODEL_TYPE  # class constant, written to config.json

    def __post_init__(self) -> None:
        if self.hidden_act.lower() != "swiglu":
            raise FedbioError(
                f"AMPLIFY hidden_act {self.hidden_act!r} is not supported; fedbio builds the "
                f"published SwiGLU models only"
            )
        if self.num_attention_heads <= 0 or self.hidden_size % self.num_attention_heads:
            raise FedbioError(
                f"AMPLIFY hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if (self.hidden_size // self.num_attention_heads) % 2:
            raise FedbioError("AMPLIFY head size must be even (rotary embeddings rotate pairs)")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def swiglu_hidden(self) -> int:
        """The SwiGLU width: 2/3 of ``intermediate_size``, rounded up to a multiple of 8."""
        width = int(2 * self.intermediate_size / 3)
        return 8 * ((width + 7) // 8)

    def to_dict(self) -> dict[str, Any]:
        """The ``config.json`` content: ``model_type`` and every field."""
        return {"model_type": MODEL_TYPE, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path = "config") -> AmplifyConfig:
        """From a ``config.json`` dict; keys this class does not know (``auto_map``, ...) are
        ignored, a ``model_type`` other than AMPLIFY is a FedbioError naming ``source``."""
        if data.get("model_type") != MODEL_TYPE:
            raise FedbioError(
                f"{source}: model_type is {data.get('model_type')!r}, expected {MODEL_TYPE!r}"
            )
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, ValueError, FedbioError) as err:  # a value of the wrong type or shape
            raise FedbioError(f"{source}: not an AMPLIFY configuration fedbio can build ({err}); "
                              "re-save or re-download the checkpoint") from None


# --- the encoder ----------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in float32 and cast back before the gain."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        scale = torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (x32 * scale).to(x.dtype) * self.weight


def _norm(config: AmplifyConfig) -> nn.Module:
    if config.rms_norm:
        return RMSNorm(config.hidden_size, config.norm_eps)
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps)


class SwiGLU(nn.Module):
    """``w3(silu(a) * b)`` where ``[a, b] = w12(x)``: the gate is the first half of ``w12``."""

    def __init__(self, dim: int, hidden: int, bias: bool = False):
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden, bias=bias)
        self.w3 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, linear = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * linear)


def rotary_angles(head_size: int, length: int, device: torch.device | None = None) -> torch.Tensor:
    """Rotation angles [length, head_size / 2] in float32: position * theta^(-2m / head_size)."""
    exponents = torch.arange(0, head_size, 2, device=device)[: head_size // 2].float() / head_size
    inv_freq = 1.0 / (ROPE_THETA**exponents)
    positions = torch.arange(length, device=device, dtype=torch.float32)
    return torch.outer(positions, inv_freq)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the feature pairs (2m, 2m+1) of ``x`` [B, L, heads, D] by the angles' cos/sin
    [L, D/2]; the arithmetic is float32 whatever ``x``'s dtype, as in the reference."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    cos, sin = cos[:, None, :], sin[:, None, :]  # broadcast over batch and heads
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2).to(x.dtype)


class EncoderBlock(nn.Module):
    """Pre-norm block: x + attention(norm(x)), then x + SwiGLU(norm(x))."""

    def __init__(self, config: AmplifyConfig):
        super().__init__()
        h, bias = config.hidden_size, config.att_bias
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        self.dropout_prob = float(config.dropout_prob)
        self.q = nn.Linear(h, h, bias=bias)
        self.k = nn.Linear(h, h, bias=bias)
        self.v = nn.Linear(h, h, bias=bias)
        self.wo = nn.Linear(h, h, bias=bias)
        self.ffn = SwiGLU(h, config.swiglu_hidden, bias=config.ffn_bias)
        self.attention_norm = _norm(config)
        self.ffn_norm = _norm(config)
        self.resid_dropout = nn.Dropout(self.dropout_prob)
        self.ffn_dropout = nn.Dropout(self.dropout_prob)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, cos: torch.Tensor,
                sin: torch.Tensor) -> torch.Tensor:
        x = x + self._attention(self.attention_norm(x), mask, cos, sin)
        return x + self.ffn_dropout(self.ffn(self.ffn_norm(x)))

    def _attention(self, x: torch.Tensor, mask: torch.Tensor | None, cos: torch.Tensor,
                   sin: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        shape = (batch, length, self.num_heads, self.head_size)
        q = apply_rotary(self.q(x).view(shape), cos, sin)
        k = apply_rotary(self.k(x).view(shape), cos, sin)
        v = self.v(x).view(shape)
        if mask is not None and mask.dtype != q.dtype:  # e.g. under autocast
            mask = mask.to(q.dtype)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask,
            dropout_p=self.dropout_prob if self.training else 0.0,
        )
        out = out.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_size)
        return self.resid_dropout(self.wo(out))


class Amplify(nn.Module):
    """The AMPLIFY encoder with its masked-language-model decoder, published parameter names.

    ``forward(input_ids, attention_mask)`` gives the last block's output [B, L, H] (the
    reference's ``hidden_states[-1]``, before ``layer_norm_2``); ``lm_logits`` applies the final
    norm and the decoder to it. ``attention_mask`` is 1 on real tokens and 0 on padding (default:
    ``input_ids != pad_token_id``); padded keys get an additive -inf-like bias, queries are not
    masked. Weights are initialised as the reference does (uniform +-0.02, zero biases, unit
    norms); seed the global RNG, or use ``random_amplify``, for reproducible weights.
    """

    def __init__(self, config: AmplifyConfig):
        super().__init__()
        self.config = config
        h = config.hidden_size
        self.encoder = nn.Embedding(config.vocab_size, h, padding_idx=config.pad_token_id)
        if config.layer_norm_after_embedding:
            self.layer_norm_1 = _norm(config)
        self.transformer_encoder = nn.ModuleList(
            EncoderBlock(config) for _ in range(config.num_hidden_layers)
        )
        if config.layer_norm_before_last_layer:
            self.layer_norm_2 = _norm(config)
        self.decoder = nn.Linear(h, config.vocab_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference initialisation (a no-op on the meta device)."""
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    r = self.config.decoder_init_range
                    module.weight.uniform_(-r, r)
                    if module.bias is not None:
                        module.bias.zero_()
                elif isinstance(module, nn.Embedding):
                    r = self.config.embedding_init_range
                    module.weight.uniform_(-r, r)

    def unused_modules(self) -> list[nn.Module]:
        """The parts that never see a gradient from ``forward`` (final norm and decoder)."""
        return [m for m in (getattr(self, "layer_norm_2", None), self.decoder) if m is not None]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states [batch, length, hidden], before ``layer_norm_2``."""
        length = input_ids.shape[1]
        if length > self.config.max_length:
            raise FedbioError(
                f"AMPLIFY takes at most {self.config.max_length} tokens; got {length} "
                f"(crop the sequences shorter)"
            )
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_token_id
        x = self.encoder(input_ids)
        if self.config.layer_norm_after_embedding:
            x = self.layer_norm_1(x)
        mask = None
        keep = attention_mask.bool()
        if not bool(keep.all()):
            # Additive bias on keys only: [B, 1, 1, L] broadcasts over heads and queries. The
            # dtype's minimum instead of -inf gives the same softmax wherever a row has one real
            # key, and no NaN for a row that is all padding.
            mask = torch.zeros(keep.shape, dtype=x.dtype, device=x.device)
            mask = mask.masked_fill(~keep, torch.finfo(x.dtype).min)[:, None, None, :]
        angles = rotary_angles(self.config.head_size, length, device=x.device)
        cos, sin = angles.cos(), angles.sin()
        for block in self.transformer_encoder:
            x = block(x, mask, cos, sin)
        return x

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Masked-language-model logits [B, L, vocab] from ``forward``'s hidden states."""
        if self.config.layer_norm_before_last_layer:
            hidden = self.layer_norm_2(hidden)
        return self.decoder(hidden)


def random_amplify(config: AmplifyConfig, seed: int = 0) -> Amplify:
    """A randomly initialised ``Amplify``; same seed, same weights; the global RNG is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Amplify(config).float()
