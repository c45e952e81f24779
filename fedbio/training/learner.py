"""A ``Learner`` ties a model to its inputs: composition features, tokens, or cached embeddings.

    learner = Learner.build(model_cfg, data_cfg, train_cfg, codec, cache_dir=run / "cache")
    train = learner.inputs(records)
    learner.fit(train, valid, epochs=3)

In ``head`` mode the frozen encoder runs once per record set and the pooled embeddings are cached
on disk (keyed by model, crop and sequences), so every later epoch or round trains the head only.

``Learner.build`` resolves ``ModelConfig.backend`` (``fedbio.backends.bionemo.backend.model_backend``): ``hf``
gives this class, ``bionemo`` a ``fedbio.backends.bionemo.learner.BioNemoLearner`` with the same methods.
The model lives on ``TrainConfig.device`` (``fedbio.training.device``); cached embeddings are float32 on
the CPU whatever the device, so a cache written on a GPU serves a CPU run and back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedbio.config import DataConfig, ModelConfig, TrainConfig, to_dict
from fedbio.data.batching import TensorData, TokenData, batches, tokenize
from fedbio.data.digests import cache_key
from fedbio.data.records import Record
from fedbio.data.tasks import LabelCodec
from fedbio.progress import progress_bar
from fedbio.training.device import Placement, placement_for, to_device
from fedbio.training.device import placement as resolve_placement
from fedbio.training.trainer import fit, predict, score


@dataclass
class Learner:
    model_cfg: ModelConfig
    data_cfg: DataConfig
    train_cfg: TrainConfig
    codec: LabelCodec
    tokenizer: object
    model: nn.Module
    cache_dir: Path | None = None
    progress: bool = True
    place: Placement | None = field(default=None, repr=False)  # None: from train_cfg when needed

    backend = "hf"

    @classmethod
    def build(cls, model_cfg: ModelConfig, data_cfg: DataConfig, train_cfg: TrainConfig,
              codec: LabelCodec, cache_dir: str | Path | None = None, progress: bool = True):
        """The learner ``model_cfg.backend`` asks for: this class for ``hf``, a
        ``BioNemoLearner`` for ``bionemo`` (``auto`` resolves as ``model_backend`` says)."""
        from fedbio.backends.bionemo.backend import model_backend

        if model_backend(model_cfg) == "bionemo":
            from fedbio.backends.bionemo.learner import BioNemoLearner

            return BioNemoLearner.build(model_cfg, data_cfg, train_cfg, codec, cache_dir, progress)
        from fedbio.models import build_model

        place = resolve_placement(train_cfg)  # a bad device/precision fails before the model is built
        torch.manual_seed(train_cfg.seed)
        tokenizer, model = build_model(model_cfg, codec.n_outputs, seed=train_cfg.seed,
                                       targets=codec.targets, backend="hf")
        model.to(place.device)
        return cls(model_cfg, data_cfg, train_cfg, codec, tokenizer, model,
                   Path(cache_dir) if cache_dir else None, progress, place)

    @property
    def placement(self) -> Placement:
        """Where the model runs and in which precision (``TrainConfig.device``/``.precision``)."""
        if self.place is None:
            self.place = resolve_placement(self.train_cfg)
        return self.place

    # -- what is trained ----------------------------------------------------------------------
    @property
    def module(self) -> nn.Module:
        """The part that learns: the head on cached embeddings in ``head`` mode, else the model."""
        if not self.model_cfg.is_composition and self.model_cfg.tuning == "head":
            return self.model.head
        return self.model

    # -- inputs -------------------------------------------------------------------------------
    def inputs(self, records: list[Record], fit_scaler: bool = False) -> TokenData | TensorData:
        y = self.codec.encode(records)
        seqs = [r.sequence for r in records]
        if self.model_cfg.is_composition:
            from fedbio.models import composition_features

            x = torch.from_numpy(composition_features(seqs))
            if fit_scaler:
                self.model.fit_scaler(x)
            return TensorData(x, y)
        tokens = tokenize(seqs, y, self.tokenizer, self.data_cfg.max_length, self.data_cfg.crop)
        if self.model_cfg.tuning != "head":
            return tokens
        return TensorData(self._embeddings(tokens, seqs), y)

    def _cache_key(self, seqs: list[str]) -> str:
        ident = {"model": self.model_cfg.name, "seed": self.train_cfg.seed,
                 "max_length": self.data_cfg.max_length, "crop": self.data_cfg.crop}
        if self.placement.precision != "32":  # bf16 embeddings differ a little: their own cache
            ident["precision"] = self.placement.precision
        return cache_key(ident, seqs)

    @torch.no_grad()
    def _embeddings(self, tokens: TokenData, seqs: list[str]) -> torch.Tensor:
        path = None
        if self.cache_dir is not None:
            path = self.cache_dir / f"emb-{self._cache_key(seqs)}.safetensors"
            if path.exists():
                from safetensors.torch import load_file

                return load_file(path)["embeddings"]
        place = self.placement
        out = embed(self.model, tokens, self.train_cfg.batch_size, self.progress,
                    device=place.device, precision=place.precision)
        if path is not None:
            from safetensors.torch import save_file

            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            save_file({"embeddings": out.contiguous()}, str(tmp))
            tmp.replace(path)
        return out

    # -- training and scoring -----------------------------------------------------------------
    def fit(self, train, valid, epochs: float, **kwargs) -> list[dict]:
        return fit(self.module, train, valid, self.train_cfg, self.codec.task_type, epochs,
                   codec=self.codec, progress=self.progress, **kwargs)

    def score(self, data, ci: bool = False) -> dict:
        place = self.placement
        return score(self.module, data, self.codec.task_type, self.codec, ci=ci,
                     device=place.device, precision=place.precision)

    def outputs(self, data):
        """Probabilities (classification) or standardised values (regression), in data order."""
        place = self.placement
        return predict(self.module, data, task_type=self.codec.task_type, device=place.device,
                       precision=place.precision)

    # -- what sites exchange ------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        """CPU copies of the parameters that train, by name (``trainable_state_dict``)."""
        from fedbio.models import trainable_state_dict

        return trainable_state_dict(self.model)

    def load_trainable_state(self, state: dict) -> list[str]:
        """Load exchanged parameters (``load_trainable_state_dict``); returns names kept local."""
        from fedbio.models import load_trainable_state_dict

        return load_trainable_state_dict(self.model, state)

    def save(self, folder: str | Path, trained_tasks: list[str] | None = None) -> Path:
        """The model (``fedbio.models.save_model``) and ``fedbio_task.json`` (codec, crop).

        ``trained_tasks``: multi-task models whose heads did not all learn (a site's own model
        trains only its tasks' heads): the tasks whose predictions mean something; ``fedbio
        predict`` writes only those."""
        from fedbio.models import save_model

        folder = Path(folder)
        labels = self.codec.classes if self.codec.task_type != "regression" else ["value"]
        save_model(self.model, self.model_cfg, labels, folder, task=self.codec.task_type)
        meta = {"codec": self.codec.to_dict(), "data": to_dict(self.data_cfg)}
        if trained_tasks is not None:
            meta["trained_tasks"] = sorted(trained_tasks)
        (folder / "fedbio_task.json").write_text(json.dumps(meta, indent=1) + "\n")
        return folder


@torch.no_grad()
def embed(model: nn.Module, tokens: TokenData, batch_size: int = 32, progress: bool = True, *,
          device=None, precision: str | None = None) -> torch.Tensor:
    """Pooled encoder embeddings of every sequence (length-sorted batches, original order kept),
    float32 on the CPU. ``device`` (default: where ``model`` is) and ``precision`` (default
    ``auto``) as in ``fedbio.training.device``; the model is moved there."""
    place = placement_for(model, device, precision)
    model.to(place.device)
    model.eval()
    out = None
    bar = progress_bar(len(tokens), "encode", "seq", progress)
    for inputs, _, idx in batches(tokens, batch_size, rng=None):
        with place.autocast():
            pooled = model.embed(*to_device(inputs, place.device))
        pooled = pooled.float().cpu()
        if out is None:
            out = torch.zeros(len(tokens), pooled.shape[-1])
        out[torch.as_tensor(np.asarray(idx))] = pooled
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    return out
