"""AMPLIFY's published folder layout: ``save_amplify`` writes one, ``amplify_from_folder`` reads one.

A folder holds ``config.json`` (``model_type`` "AMPLIFY", the reference's field names, read by
``read_amplify_config``) and ``model.safetensors`` (or a ``pytorch_model.bin``, read with
``weights_only=True``: a pickle holding anything but tensors is refused, never unpickled; see
``fedbio.models.checkpoint_files``), as the Hugging Face checkpoints ``chandar-lab/AMPLIFY_120M``
and ``chandar-lab/AMPLIFY_350M`` have it. ``load_backbone`` uses ``amplify_from_folder`` for any
folder whose ``config.json`` says AMPLIFY.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fedbio.errors import FedbioError
from fedbio.models.amplify import Amplify, AmplifyConfig
from fedbio.models.checkpoint_files import SAFETENSORS_FILE, read_json_object, read_weight_files

CONFIG_FILE = "config.json"


def read_amplify_config(folder: str | Path) -> AmplifyConfig:
    """The ``AmplifyConfig`` in ``folder/config.json``; FedbioError naming the file otherwise."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise FedbioError(f"{Path(folder)} has no {CONFIG_FILE}")
    data = read_json_object(path, "re-save or re-download the checkpoint")
    return AmplifyConfig.from_dict(data, source=path)


def save_amplify(model: Amplify, folder: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (published names, float32 as trained)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(tensors, str(folder / SAFETENSORS_FILE), metadata={"format": "pt"})
    (folder / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    return folder


def _names(keys: list[str]) -> str:
    return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def amplify_from_folder(folder: str | Path) -> Amplify:
    """The ``Amplify`` (float32) saved in ``folder`` in the published layout.

    Every tensor the config implies must be there with its shape, and nothing else: a missing,
    extra or misshapen tensor is a FedbioError naming the file and the keys.
    """
    folder = Path(folder)
    config = read_amplify_config(folder)
    tensors, source = read_weight_files(folder)
    with torch.device("meta"):  # no memory and no init for weights about to be replaced
        model = Amplify(config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    if missing:
        raise FedbioError(f"{source} lacks tensor(s) {_names(missing)} that {CONFIG_FILE} implies")
    extra = [k for k in tensors if k not in expected]
    if extra:
        raise FedbioError(f"{source} has tensor(s) {_names(extra)} that an AMPLIFY model of "
                          f"this {CONFIG_FILE} does not")
    for key, ref in expected.items():
        if tuple(tensors[key].shape) != tuple(ref.shape):
            raise FedbioError(f"{source}: tensor {key} has shape {tuple(tensors[key].shape)}, "
                              f"{CONFIG_FILE} implies {tuple(ref.shape)}")
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, assign=True)
    return model.float()
