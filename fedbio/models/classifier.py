"""The sequence model fedbio trains: encoder (ESM-2 or AMPLIFY) -> mean over residues -> MLP head.

``build_model(cfg, n_outputs)`` turns a ``ModelConfig`` into a model (or the composition
baseline). Tuning modes: ``head`` freezes the encoder, ``lora`` adds LoRA adapters to the
attention's query/key/value projections and freezes the rest of the encoder, ``full`` trains
everything the encoder's forward uses.
``trainable_state_dict`` / ``load_trainable_state_dict`` move exactly the learnable parameters,
under names that are the same in every process built from the same config: what sites exchange.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from fedbio.config import TUNING_MODES, ModelConfig
from fedbio.errors import FedbioError
from fedbio.models.backbone_loading import load_backbone, random_backbone_from_dict
from fedbio.models.composition import CompositionModel
from fedbio.models.heads import MLPHead, MultiTaskHead, mean_pool, residue_mask

if TYPE_CHECKING:
    from transformers import EsmTokenizer


class SequenceModel(nn.Module):
    """Encoder + mean pooling over residue tokens + ``MLPHead``.

    Every constructor argument is plain data and kept as a same-named attribute, so the model can
    be rebuilt from them (job exporters do exactly that). ``encoder_config`` (the encoder's
    ``config.to_dict()``, ESM-2 or AMPLIFY; ``esm_config`` is the older ESM-only name) builds a
    random encoder of that shape instead of loading ``name``: used by ``load_model``, which then
    loads the saved tensors.
    """

    @classmethod
    def from_config(cls, cfg, n_outputs: int, seed: int = 0,
                    esm_config: dict | None = None, targets: list[str] | None = None,
                    encoder_config: dict | None = None) -> SequenceModel:
        """Build from a ``ModelConfig`` (``encoder_config``, or the older ``esm_config``: rebuild
        a saved architecture, no weights)."""
        return cls(name=cfg.name, n_outputs=n_outputs, tuning=cfg.tuning,
                   head_hidden=cfg.head_hidden, dropout=cfg.dropout, lora_r=cfg.lora_r,
                   lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                   weights_dir=None if (esm_config or encoder_config) else cfg.weights_dir,
                   seed=seed, esm_config=esm_config, targets=targets, encoder_config=encoder_config,
                   trust_remote_code=bool(getattr(cfg, "trust_remote_code", False)))

    def __init__(
        self,
        name: str = "esm2-tiny",
        n_outputs: int = 2,
        tuning: str = "full",
        head_hidden: int = 256,
        dropout: float = 0.1,
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
        weights_dir: str | None = None,
        seed: int = 0,
        esm_config: dict | None = None,
        targets: list[str] | None = None,
        encoder_config: dict | None = None,
        trust_remote_code: bool = False,
    ):
        super().__init__()
        if tuning not in TUNING_MODES:
            raise FedbioError(f"unknown tuning mode {tuning!r}; choose one of {', '.join(TUNING_MODES)}")
        self.name = name
        self.n_outputs = n_outputs
        self.tuning = tuning
        self.head_hidden = head_hidden
        self.dropout = dropout
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.weights_dir = weights_dir
        self.seed = seed
        self.esm_config = esm_config
        self.targets = list(targets) if targets else None  # multi-task: one head per task name
        self.trust_remote_code = bool(trust_remote_code)  # see fedbio.models.remote
        if self.targets:
            n_outputs = self.n_outputs = len(self.targets)

        # encoder_config: any family's config dict (its model_type says which); esm_config: the
        # older ESM-only name for the same thing.
        self.encoder_config = encoder_config
        arch = encoder_config if encoder_config is not None else esm_config
        if arch is not None:
            self.tokenizer, self.backbone = random_backbone_from_dict(arch, name, seed,
                                                                      self.trust_remote_code)
        else:
            self.tokenizer, self.backbone = load_backbone(name, weights_dir=weights_dir, seed=seed,
                                                          trust_remote_code=self.trust_remote_code)
        # Head and adapters drawn from their own seeded stream: every site starts identical.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            self.head = (MultiTaskHead(self.backbone.hidden_size, targets, head_hidden, dropout) if targets
                         else MLPHead(self.backbone.hidden_size, n_outputs, head_hidden, dropout))
            if tuning == "lora":
                self._add_lora()
        self._set_trainable()

    def _add_lora(self) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        if not self.backbone.lora_targets:
            raise FedbioError(
                f"tuning 'lora' needs separate query/key/value projections, and the encoder of "
                f"{self.name} has none (TransformerEngine fuses them into one); use tuning "
                "'head' or 'full'")
        config = LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=self.backbone.lora_targets,  # ESM: query/key/value; AMPLIFY: q/k/v
            bias="none",
        )
        # Injected in place (no PeftModel wrapper), so parameter names stay short and stable.
        inject_adapter_in_model(config, self.backbone.model)

    def _set_trainable(self) -> None:
        for pname, param in self.backbone.named_parameters():
            if self.tuning == "full":
                param.requires_grad_(True)
            elif self.tuning == "lora":
                param.requires_grad_("lora_" in pname)
            else:
                param.requires_grad_(False)
        self.backbone.freeze_unused()  # ESM's contact head, AMPLIFY's final norm and decoder
        self.head.requires_grad_(True)

    def train(self, mode: bool = True) -> SequenceModel:
        """As ``nn.Module.train``, but a frozen (head-mode) encoder always stays in eval mode,
        so the embeddings a training loop caches are the ones the model computes."""
        super().train(mode)
        if self.tuning == "head":
            self.backbone.eval()
        return self

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of the final hidden states over residue tokens: [batch, hidden]."""
        if attention_mask is None:
            attention_mask = (input_ids != self.backbone.pad_token_id).long()
        hidden = self.backbone(input_ids, attention_mask)
        mask = residue_mask(input_ids, self.tokenizer) & attention_mask.bool()
        return mean_pool(hidden, mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (classification) or predictions (regression): [batch, n_outputs]."""
        return self.head(self.embed(input_ids, attention_mask))


def build_model(
    cfg: ModelConfig, n_outputs: int, seed: int = 0, targets: list[str] | None = None,
    backend: str | None = None,
) -> tuple[EsmTokenizer | None, nn.Module]:
    """The tokenizer and model a ``ModelConfig`` describes; the tokenizer is None for composition.

    ``targets`` (task names) gives a multi-task model: one head per task, ``head.heads.<task>``.
    ``cfg.backend`` is resolved with ``fedbio.backends.bionemo.backend.model_backend`` (``backend``, when
    given, is the already-resolved answer): only ``hf`` builds a PyTorch model here; ``bionemo``
    is a ``BioNemoLearner`` (``fedbio.training.learner.Learner.build``), and a FedbioError here.
    """
    if backend is None:
        from fedbio.backends.bionemo.backend import model_backend

        backend = model_backend(cfg)
    if backend != "hf":
        raise FedbioError(
            f"backend {backend!r} trains through BioNeMo's own scripts, not a PyTorch module: "
            "build it with fedbio.training.learner.Learner.build (a BioNemoLearner), or use backend 'hf'"
        )
    if cfg.is_composition:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            return None, CompositionModel(n_outputs)
    model = SequenceModel.from_config(cfg, n_outputs, seed=seed, targets=targets)
    return model.tokenizer, model


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the parameters that train (``requires_grad``), by name; never buffers."""
    return {
        name: param.detach().cpu().clone()
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def load_trainable_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Copy ``state`` into the model's trainable parameters; returns the names not in ``state``.

    A name that is not a trainable parameter of ``model``, or a shape that differs, is a
    FedbioError (the two sides were built from different configs). Missing names are allowed:
    a site may keep some parameters (e.g. its own head) to itself.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    unknown = sorted(set(state) - set(params))
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise FedbioError(
            f"{len(unknown)} parameter name(s) are not trainable parameters of this model "
            f"(built from a different config?): {shown}"
        )
    with torch.no_grad():
        for name, value in state.items():
            param = params[name]
            value = torch.as_tensor(value)
            if tuple(value.shape) != tuple(param.shape):
                raise FedbioError(
                    f"parameter {name} has shape {tuple(value.shape)}, the model expects {tuple(param.shape)}"
                )
            param.copy_(value.to(device=param.device, dtype=param.dtype))
    return sorted(set(params) - set(state))
