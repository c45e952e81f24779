"""Names of the weights BioNeMo sites exchange: Megatron's state dict <-> the federation's.

A NeMo2 / Megatron model's state dict carries wrapper prefixes that depend on how the model
was wrapped at that site, not on the model: ``module.`` for the DDP wrapper, and a second
``module.`` (the Float16Module) under mixed precision, so the same weight is
``module.module.encoder.layers.0...`` with ``--precision bf16-mixed`` and
``module.encoder.layers.0...`` with ``fp32`` (NVIDIA's NVFlare BioNeMo example adds exactly
these before loading a global model). A Lightning checkpoint may add ``model.`` on top.
TransformerEngine layers also put ``*._extra_state`` entries (pickled FP8 metadata, not weights)
into the state dict; loading another site's copy of those fails.

So what travels is:

- the name without any leading ``module.`` / ``model.`` wrapper segments (``to_exchange``),
- never an ``_extra_state`` entry,
- only what trains: ``head`` -> the task head (``classification_head.*`` /
  ``regression_head.*``), ``lora`` -> LoRA adapters + head, ``full`` -> every weight; and, when
  the caller passes ``trainable`` (names with ``requires_grad``), only those.

``from_exchange`` adds this site's wrapper prefix back (``wrapper_prefix(precision)``) and, given
the local state dict's names, refuses names the local model does not have.

Values are passed through untouched (torch tensors, numpy arrays, anything): nothing here
imports torch, BioNeMo or NVFlare.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fedbio.config import TUNING_MODES
from fedbio.errors import FedbioError

WRAPPER_SEGMENTS = ("module.", "model.")
EXTRA_STATE = "_extra_state"
HEAD_MARKERS = ("classification_head.", "regression_head.")
LORA_MARKERS = (".adapter.", "lora_")
MIXED_PRECISIONS = ("bf16-mixed", "16-mixed", "fp16-mixed", "bf16", "fp16", "16")


def split_prefix(name: str) -> tuple[str, str]:
    """(wrapper prefix, bare name): ``"module.module.encoder.x"`` -> ``("module.module.", "encoder.x")``."""
    prefix, rest = "", name
    while True:
        seg = next((s for s in WRAPPER_SEGMENTS if rest.startswith(s)), None)
        if seg is None or len(rest) == len(seg):
            return prefix, rest
        prefix, rest = prefix + seg, rest[len(seg):]


def wrapper_prefix(precision: str = "bf16-mixed") -> str:
    """The prefix Megatron's wrappers give every name at a site training with ``precision``."""
    return "module.module." if str(precision) in MIXED_PRECISIONS else "module."


def is_extra_state(name: str) -> bool:
    """TransformerEngine's serialized extra state (``...._extra_state``): never a weight."""
    return name == EXTRA_STATE or name.endswith("." + EXTRA_STATE)


def is_head(name: str) -> bool:
    return any(name.startswith(m) or ("." + m) in name for m in HEAD_MARKERS)


def is_lora(name: str) -> bool:
    return any(m in name for m in LORA_MARKERS)


def _keep(name: str, tuning: str) -> bool:
    if tuning == "full":
        return True
    if tuning == "lora":
        return is_head(name) or is_lora(name)
    return is_head(name)


def to_exchange(state_dict: Mapping[str, Any], tuning: str = "full",
                trainable: Iterable[str] | None = None) -> dict[str, Any]:
    """What a site sends: bare names, no ``_extra_state``, only what trains in ``tuning``.

    ``trainable`` (parameter names with ``requires_grad``, with or without wrapper prefixes)
    narrows it further to exactly those. Two names that become equal once their prefixes are
    stripped, or nothing left to send, are FedbioErrors.
    """
    if tuning not in TUNING_MODES:
        raise FedbioError(f"unknown tuning mode {tuning!r}; choose one of {', '.join(TUNING_MODES)}")
    allowed = None if trainable is None else {split_prefix(n)[1] for n in trainable}
    out: dict[str, Any] = {}
    for name, value in state_dict.items():
        if is_extra_state(name):
            continue
        bare = split_prefix(name)[1]
        if allowed is not None and bare not in allowed:
            continue
        if not _keep(bare, tuning):
            continue
        if bare in out:
            raise FedbioError(f"two state-dict entries share the name {bare!r} once their wrapper "
                              "prefixes are stripped")
        out[bare] = value
    if not out:
        raise FedbioError(f"nothing to exchange in {tuning!r} mode: none of the "
                          f"{len(state_dict)} state-dict entries is a trainable weight")
    return out


def from_exchange(params: Mapping[str, Any], prefix: str | None = None, *,
                  precision: str = "bf16-mixed", local: Iterable[str] | None = None) -> dict[str, Any]:
    """What a site loads (``load_state_dict(..., strict=False)``): received names + its prefix.

    ``prefix`` defaults to ``wrapper_prefix(precision)``. ``local`` (the local state dict's names)
    makes a name the local model does not have a FedbioError instead of a silent no-op.
    """
    prefix = wrapper_prefix(precision) if prefix is None else prefix
    out: dict[str, Any] = {}
    for name, value in params.items():
        if is_extra_state(name):
            raise FedbioError(f"received {name!r}: TransformerEngine extra state is never exchanged")
        wrapped, bare = split_prefix(name)
        if wrapped:
            raise FedbioError(f"received {name!r} with a wrapper prefix ({wrapped!r}); exchanged "
                              "names are bare (see to_exchange)")
        out[prefix + bare] = value
    if local is not None:
        local = set(local)
        unknown = sorted(n for n in out if n not in local)
        if unknown:
            shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise FedbioError(f"{len(unknown)} received name(s) are not in the local model "
                              f"(built from a different config or precision?): {shown}")
    return out
