"""Models: ESM-2 encoders, heads, the composition baseline, and saving/loading them.

- ``presets``      named ESM-2 shapes (``PRESETS``) and their ``EsmConfig``
- ``tokenizer``    the shipped 33-token vocabulary, ``load_tokenizer`` and a fast ``encode``
- ``weights``      finding pretrained weights offline, ``download_weights`` when online
- ``backbone``     ``Backbone`` (the encoder) and ``load_backbone``
- ``heads``        ``residue_mask``, ``mean_pool``, ``MLPHead``
- ``composition``  420 composition features and a linear model on them
- ``classifier``   ``build_model`` and the parameters federated sites exchange
- ``saving``       ``save_model`` / ``load_model``

Plain PyTorch: nothing here imports NVFlare, and transformers/peft are imported only when an
encoder is actually built.
"""

from fedbio.models.backbone import Backbone, load_backbone
from fedbio.models.classifier import (
    SequenceModel,
    build_model,
    load_trainable_state_dict,
    trainable_state_dict,
)
from fedbio.models.composition import CompositionModel, composition_features
from fedbio.models.heads import MLPHead, mean_pool, residue_mask
from fedbio.models.presets import PRESETS, ModelPreset, esm_config, get_preset
from fedbio.models.saving import load_model, save_model
from fedbio.models.tokenizer import encode, load_tokenizer
from fedbio.models.weights import WeightsNotFound, download_weights, find_local_weights

__all__ = [
    "PRESETS",
    "Backbone",
    "CompositionModel",
    "MLPHead",
    "ModelPreset",
    "SequenceModel",
    "WeightsNotFound",
    "build_model",
    "composition_features",
    "download_weights",
    "encode",
    "esm_config",
    "find_local_weights",
    "get_preset",
    "load_backbone",
    "load_model",
    "load_tokenizer",
    "load_trainable_state_dict",
    "mean_pool",
    "residue_mask",
    "save_model",
    "trainable_state_dict",
]
