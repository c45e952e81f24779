"""The remote-code policy: which checkpoints run their own Python, and the refusal without opt-in.

A checkpoint is ``remote`` when its ``config.json`` has an ``auto_map`` and a ``model_type``
fedbio does not implement itself (``BUILT_IN_MODEL_TYPES``), such as NVIDIA's TransformerEngine
ESM-2 (``nvidia/esm2_t6_8M_UR50D``, ``nvidia/esm2_t33_650M_UR50D``, model_type "nv_esm"). It
loads with ``transformers.AutoModel.from_pretrained(..., trust_remote_code=True)``, which imports
and runs the Python files shipped with the checkpoint, so fedbio does it only with
``ModelConfig.trust_remote_code=True`` (``--trust-remote-code``); without it such a checkpoint is
``remote_code_refusal``'s FedbioError, raised before any of its code is downloaded or run
(``fedbio.models.weights.hub_checkpoint``, ``fedbio.models.backbone_loading``).

The remote model must take ``input_ids``/``attention_mask`` and return ``last_hidden_state``
[B, L, H], and use ESM's 33-token vocabulary (or ship a ``vocab.txt`` of its own). NVIDIA's
TransformerEngine models build their layers on CUDA and need TransformerEngine (the BioNeMo / NGC
PyTorch containers have it); they fuse query/key/value into one projection, so ``lora`` is
refused for them (use ``head`` or ``full``). Plain data checks only: no torch, no transformers.
"""

from __future__ import annotations

from pathlib import Path

from fedbio.errors import FedbioError

# config.json model_types fedbio builds itself (``fedbio.models.backbone.FAMILIES``); any other
# with an ``auto_map`` is remote code.
BUILT_IN_MODEL_TYPES = ("esm", "AMPLIFY")
REMOTE = "remote"  # the family of checkpoints loaded with trust_remote_code


def is_remote_config(config: dict) -> bool:
    """True for a config.json fedbio cannot build itself but its ``auto_map`` can (remote code)."""
    return (isinstance(config, dict) and config.get("model_type") not in BUILT_IN_MODEL_TYPES
            and isinstance(config.get("auto_map"), dict) and "AutoModel" in config["auto_map"])


def remote_code_refusal(source: str | Path, config: dict) -> FedbioError:
    """The error for a remote-code checkpoint loaded without the opt-in."""
    target = config.get("auto_map", {}).get("AutoModel", "?")
    return FedbioError(
        f"{source}: config.json has model_type {config.get('model_type')!r} and an auto_map "
        f"(AutoModel -> {target}): loading it runs Python code shipped with the checkpoint. "
        "Only if you trust that code, opt in with ModelConfig(trust_remote_code=True) "
        "(`--trust-remote-code` on the command line); otherwise use an ESM-2 or AMPLIFY "
        "checkpoint fedbio loads itself (e.g. facebook/esm2_t33_650M_UR50D, preset esm2-650m)"
    )


def auto_map_modules(config: dict) -> set[str]:
    """The Python files (module names) a config.json's ``auto_map`` points into."""
    out = set()
    for ref in (config.get("auto_map") or {}).values():
        for item in ref if isinstance(ref, (list, tuple)) else [ref]:
            if isinstance(item, str) and "." in item:
                out.add(item.split("--")[-1].rsplit(".", 1)[0])
    return out
