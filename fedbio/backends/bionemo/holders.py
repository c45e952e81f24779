"""The ``nn.Module``s a ``BioNemoLearner`` holds as ``learner.model``.

    EmbeddingHead(320, n_outputs=3)      # head mode: fedbio's MLP head on BioNeMo embeddings
    WeightStore({"encoder.w": tensor})   # full/lora: a checkpoint's exchanged weights as parameters

Both exist so that fedbio's ``trainable_state_dict`` / ``load_trainable_state_dict`` (what sites
call) work on a BioNeMo learner as on the ``hf`` backend's models. Plain PyTorch, no BioNeMo.
"""

from __future__ import annotations

import torch
from torch import nn

from fedbio.errors import FedbioError
from fedbio.models.heads import MLPHead, MultiTaskHead


class EmbeddingHead(nn.Module):
    """fedbio's head on precomputed embeddings, as ``model.head`` (names ``head.net.*``, as the
    ``hf`` backend's head mode). Drawn from ``seed + 1``, as ``SequenceModel``'s head."""

    def __init__(self, hidden_size: int, n_outputs: int, head_hidden: int = 256,
                 dropout: float = 0.1, seed: int = 0, targets: list[str] | None = None):
        super().__init__()
        self.hidden_size = int(hidden_size)
        self.n_outputs = len(targets) if targets else int(n_outputs)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            self.head = (MultiTaskHead(hidden_size, list(targets), head_hidden, dropout) if targets
                         else MLPHead(hidden_size, n_outputs, head_hidden, dropout))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.head(embeddings)


class WeightStore(nn.Module):
    """Named tensors as trainable parameters (nested modules per dotted name), so that
    ``trainable_state_dict`` / ``load_trainable_state_dict`` work on a BioNeMo checkpoint's
    exchanged weights. Not callable: BioNeMo runs the model."""

    def __init__(self, tensors: dict[str, torch.Tensor] | None = None):
        super().__init__()
        for name, value in (tensors or {}).items():
            *path, leaf = name.split(".")
            module: nn.Module = self
            for part in path:
                if not hasattr(module, part) or not isinstance(getattr(module, part), nn.Module):
                    module.add_module(part, nn.Module())
                module = getattr(module, part)
            tensor = torch.as_tensor(value).detach().to("cpu", copy=True)
            module.register_parameter(leaf, nn.Parameter(tensor, requires_grad=tensor.is_floating_point()))

    def forward(self, *args, **kwargs):
        raise FedbioError("a BioNeMo full/lora model runs inside BioNeMo (finetune_esm2 / "
                          "infer_esm2); use the learner's fit/outputs")
