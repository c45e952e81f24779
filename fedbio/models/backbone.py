"""The encoder: ``Backbone``, one interface over ESM-2, AMPLIFY and remote-code models.

``Backbone`` wraps a ``transformers.EsmModel`` (family "esm2"), the plain PyTorch
``fedbio.models.amplify.Amplify`` (family "amplify") or, opted in, a remote-code model (family
"remote", see ``fedbio.models.remote``); ``forward`` gives the final hidden states whichever it
is, and ``lora_targets`` names the projections LoRA adapts. ``FAMILIES`` maps a ``config.json``
``model_type`` to the family fedbio builds for it. Getting one (a preset, a folder, a hub id, a
random init) is ``fedbio.models.backbone_loading`` (``load_backbone``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from fedbio.models.amplify import LORA_TARGETS as AMPLIFY_LORA_TARGETS
from fedbio.models.amplify import MODEL_TYPE as AMPLIFY_MODEL_TYPE
from fedbio.models.amplify import Amplify, AmplifyConfig
from fedbio.models.remote import REMOTE

if TYPE_CHECKING:
    from transformers import EsmConfig

ESM_LORA_TARGETS = ["query", "key", "value"]
# config.json model_type -> family (the remote policy's ``BUILT_IN_MODEL_TYPES`` are its keys)
FAMILIES = {"esm": "esm2", AMPLIFY_MODEL_TYPE: "amplify"}


class Backbone(nn.Module):
    """An encoder; ``forward`` gives the final hidden states [B, L, H].

    Wraps an ``EsmModel`` without pooler (``family`` "esm2", held as ``.esm``) or an ``Amplify``
    (``family`` "amplify", held as ``.amplify``); ``.model`` is whichever it is. The attribute is
    named after the family so parameter names read ``backbone.esm.*`` / ``backbone.amplify.*``.
    ``lora_targets`` names the attention projections LoRA adapts; ``unused_modules`` are the parts
    no sequence task sends a gradient to (ESM's contact head, AMPLIFY's final norm and decoder),
    kept frozen.
    """

    def __init__(self, model: nn.Module, name: str, family: str | None = None):
        super().__init__()
        if isinstance(model, Amplify):
            self.family = "amplify"
            self.amplify = model
            self.lora_targets = list(AMPLIFY_LORA_TARGETS)
        elif family == REMOTE:  # trust_remote_code checkpoints, held as .remote
            self.family = REMOTE
            self.remote = model
            names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
            self.lora_targets = list(ESM_LORA_TARGETS) if set(ESM_LORA_TARGETS) <= names else []
        else:
            self.family = "esm2"
            self.esm = model
            self.lora_targets = list(ESM_LORA_TARGETS)
        self.name = name
        self.hidden_size = int(model.config.hidden_size)
        self.pad_token_id = int(model.config.pad_token_id)
        # Parts that never see a gradient from sequence tasks; trainable, they would break
        # optimisers and privacy engines that expect a gradient for every trainable parameter.
        self.freeze_unused()

    @property
    def model(self) -> nn.Module:
        """The wrapped encoder (``EsmModel``, ``Amplify``, or a remote-code model)."""
        if self.family == REMOTE:
            return self.remote
        return self.amplify if self.family == "amplify" else self.esm

    @property
    def config(self) -> EsmConfig | AmplifyConfig:
        """The encoder's config (``transformers.EsmConfig`` or ``AmplifyConfig``; both have
        ``to_dict()``)."""
        return self.model.config

    def unused_modules(self) -> list[nn.Module]:
        """Submodules that ``forward`` never uses."""
        if self.family == "amplify":
            return self.amplify.unused_modules()
        model = self.model  # ESM, or a remote ESM-like model: contact head and pooler unused
        return [m for m in (getattr(model, "contact_head", None), getattr(model, "pooler", None))
                if isinstance(m, nn.Module)]

    def freeze_unused(self) -> None:
        """``requires_grad_(False)`` on ``unused_modules``."""
        for module in self.unused_modules():
            module.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states [batch, length, hidden] (ESM: ``last_hidden_state``)."""
        if attention_mask is None:
            attention_mask = (input_ids != self.pad_token_id).long()
        if self.family == "amplify":
            return self.amplify(input_ids, attention_mask)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
