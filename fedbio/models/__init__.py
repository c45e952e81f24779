"""Models: ESM-2 and AMPLIFY encoders, heads, the composition baseline, and saving/loading them.

- ``presets``           named shapes (``PRESETS``: esm2-*, amplify-*) and their configs
                        (``encoder_config``, ``esm_config``, ``amplify_config``)
- ``tokenizer``         the shipped vocabularies: ESM's 33 tokens (``load_tokenizer``), AMPLIFY's
                        27 (``AmplifyTokenizer``), and a fast ``encode``
- ``amplify``           AMPLIFY in plain PyTorch: ``AmplifyConfig``, ``Amplify``
- ``amplify_folder``    AMPLIFY's published folder layout: ``save_amplify``,
                        ``amplify_from_folder``
- ``checkpoint_files``  reading a checkpoint's config and weight files (safetensors; pickles only
                        when they hold nothing but tensors)
- ``remote``            the remote-code policy (checkpoints that need ``trust_remote_code``)
- ``weights``           finding pretrained weights offline, ``download_weights`` when online
- ``backbone``          ``Backbone`` (the encoder, any family)
- ``backbone_loading``  ``load_backbone`` and the builders behind it
- ``heads``             ``residue_mask``, ``mean_pool``, ``MLPHead``
- ``composition``       420 composition features and a linear model on them
- ``classifier``        ``build_model`` and the parameters federated sites exchange
- ``saving``            ``save_model`` / ``load_model``

Plain PyTorch: nothing here imports NVFlare, and transformers/peft are imported only when an
encoder is actually built.
"""

from fedbio.models.amplify import Amplify, AmplifyConfig
from fedbio.models.amplify_folder import amplify_from_folder, save_amplify
from fedbio.models.backbone import Backbone
from fedbio.models.backbone_loading import load_backbone
from fedbio.models.classifier import (
    SequenceModel,
    build_model,
    load_trainable_state_dict,
    trainable_state_dict,
)
from fedbio.models.composition import CompositionModel, composition_features
from fedbio.models.heads import MLPHead, mean_pool, residue_mask
from fedbio.models.presets import PRESETS, ModelPreset, get_preset
from fedbio.models.saving import load_model, save_model
from fedbio.models.shapes import amplify_config, encoder_config, esm_config
from fedbio.models.tokenizer import AmplifyTokenizer, encode, load_tokenizer
from fedbio.models.weights import WeightsNotFound, download_weights, find_local_weights

__all__ = [
    "PRESETS",
    "Amplify",
    "AmplifyConfig",
    "AmplifyTokenizer",
    "Backbone",
    "CompositionModel",
    "MLPHead",
    "ModelPreset",
    "SequenceModel",
    "WeightsNotFound",
    "amplify_config",
    "amplify_from_folder",
    "build_model",
    "composition_features",
    "download_weights",
    "encode",
    "encoder_config",
    "esm_config",
    "find_local_weights",
    "get_preset",
    "load_backbone",
    "load_model",
    "load_tokenizer",
    "load_trainable_state_dict",
    "mean_pool",
    "residue_mask",
    "save_amplify",
    "save_model",
    "trainable_state_dict",
]
