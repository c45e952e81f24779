"""Where a model runs and in which precision: ``TrainConfig.device`` and ``TrainConfig.precision``.

    place = placement(train_cfg)            # Placement(device=cpu, precision="32", reason=...)
    model.to(place.device)
    with autocast(place.device, place.precision):
        out = model(*to_device(inputs, place.device))

``device``: ``auto`` (``cuda`` when ``torch.cuda.is_available()``, else ``cpu``), ``cpu``,
``cuda`` or ``cuda:N``. Asking for CUDA on a machine without it is a FedbioError naming the field.

``precision``: ``auto`` (``bf16-mixed`` on a CUDA device that supports bfloat16, else ``32``),
``32`` (float32 everywhere) or ``bf16-mixed`` (float32 weights and optimizer, the forward pass
under ``torch.autocast(device_type="cuda", dtype=torch.bfloat16)``; losses and outputs are
taken in float32). ``bf16-mixed`` is **refused**, not downgraded, where it cannot run: on the CPU
(fedbio's CPU numbers are float32 and stay bit-identical to earlier releases; a silent switch
would make a config file mean different things on different machines) and on a GPU without
bfloat16. ``auto`` never fails: it picks what this device does well.

Nothing here moves data by itself except ``to_device``; everything is a small function so the
choices can be unit-tested on a CPU machine (``autocast_kwargs`` is pure).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any

import torch

from fedbio.errors import FedbioError

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
PRECISIONS = ("auto", "32", "bf16-mixed")
_CUDA_N = re.compile(r"^cuda:(\d+)$")


@dataclass(frozen=True)
class Placement:
    """A resolved device and precision, and a one-line reason for the pair."""

    device: torch.device
    precision: str  # "32" | "bf16-mixed"
    reason: str = ""

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        return autocast(self.device, self.precision)


def cuda_available() -> bool:
    """``torch.cuda.is_available()``; a broken CUDA install counts as none."""
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - a broken CUDA install counts as none
        return False


def _cuda_count() -> int:
    try:
        return int(torch.cuda.device_count())
    except Exception:  # pragma: no cover
        return 0


def _bf16_supported(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    try:
        return bool(torch.cuda.is_bf16_supported())
    except Exception:  # pragma: no cover
        return False


def _no_cuda_why() -> str:
    build = ("a CPU-only build of torch" if torch.version.cuda is None
             else f"torch built for CUDA {torch.version.cuda}, but no GPU is visible")
    return build


def resolve_device(name: str | torch.device | None = "auto", field: str = "device") -> torch.device:
    """The ``torch.device`` that ``name`` means here (``field`` names the setting in errors)."""
    if isinstance(name, torch.device):
        name = str(name)
    text = (name or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda" if cuda_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = _CUDA_N.match(text)
    if text == "cuda" or match:
        if not cuda_available():
            raise FedbioError(f"{field} {name!r} asks for a CUDA GPU, and this machine has none "
                              f"({_no_cuda_why()}); use {field} 'auto' or 'cpu'")
        if match:
            index, count = int(match.group(1)), _cuda_count()
            if index >= count:
                raise FedbioError(f"{field} {name!r}: this machine has {count} CUDA device(s) "
                                  f"(cuda:0..cuda:{count - 1})")
        return torch.device(text)
    raise FedbioError(f"unknown {field} {name!r}; choose one of {', '.join(DEVICES)}")


def resolve_precision(name: str | None, device: torch.device, field: str = "precision") -> str:
    """``32`` or ``bf16-mixed``: what ``name`` means on ``device`` (see the module docstring)."""
    text = str(name if name is not None else "auto").strip().lower()
    if text in ("32", "fp32", "float32"):
        return "32"
    if text == "auto":
        return "bf16-mixed" if _bf16_supported(device) else "32"
    if text == "bf16-mixed":
        if device.type != "cuda":
            raise FedbioError(f"{field} 'bf16-mixed' needs a CUDA device, and this run is on "
                              f"{device}; fedbio does not downgrade it silently: use {field} '32' "
                              "(or 'auto', which is '32' on a CPU)")
        if not _bf16_supported(device):
            raise FedbioError(f"{field} 'bf16-mixed': {device} does not support bfloat16; use "
                              f"{field} '32' (or 'auto')")
        return "bf16-mixed"
    raise FedbioError(f"unknown {field} {name!r}; choose one of {', '.join(PRECISIONS)}")


def placement(train_cfg: Any = None, *, device: str | torch.device | None = None,
              precision: str | None = None) -> Placement:
    """Device and precision from a ``TrainConfig`` (or explicit ``device``/``precision``, which win)."""
    dev_name = device if device is not None else getattr(train_cfg, "device", "auto")
    prec_name = precision if precision is not None else getattr(train_cfg, "precision", "auto")
    dev = resolve_device(dev_name)
    prec = resolve_precision(prec_name, dev)
    asked = f"device {dev_name!s}, precision {prec_name!s}"
    if dev.type == "cuda":
        why = f"{asked} -> {dev} ({torch.cuda.get_device_name(dev)}), {prec}"
    else:
        why = f"{asked} -> cpu, {prec}" + ("" if cuda_available() else " (no CUDA GPU here)")
    return Placement(dev, prec, why)


def placement_for(module: torch.nn.Module, device: str | torch.device | None = None,
                  precision: str | None = None) -> Placement:
    """``device``/``precision`` as given; no device means where ``module`` already is, no
    precision means ``auto`` on that device (what ``predict``/``embed`` use when not told)."""
    return placement(device=module_device(module) if device is None else device,
                     precision=precision or "auto")


def autocast_kwargs(device_type: str, precision: str) -> dict[str, Any] | None:
    """Keyword arguments of ``torch.autocast`` for this pair, or None for no autocast.

    Pure: ``("cuda", "bf16-mixed")`` -> ``{"device_type": "cuda", "dtype": torch.bfloat16}``;
    ``"32"`` anywhere -> None. ``bf16-mixed`` off CUDA is a FedbioError (``resolve_precision``
    refuses it earlier; this guards direct callers).
    """
    if precision == "32":
        return None
    if precision == "bf16-mixed":
        if device_type != "cuda":
            raise FedbioError(f"precision 'bf16-mixed' runs on CUDA only, not on {device_type!r}")
        return {"device_type": "cuda", "dtype": torch.bfloat16}
    raise FedbioError(f"unknown precision {precision!r}; resolved precisions are '32' and 'bf16-mixed'")


def autocast(device: torch.device | str, precision: str):
    """The context the forward pass runs in: ``torch.autocast`` for ``bf16-mixed``, else nothing."""
    kwargs = autocast_kwargs(torch.device(device).type, precision)
    return contextlib.nullcontext() if kwargs is None else torch.autocast(**kwargs)


def to_device(tensors, device: torch.device):
    """A tuple of tensors on ``device`` (a no-op, same objects, when they are already there)."""
    return tuple(t.to(device, non_blocking=True) if isinstance(t, torch.Tensor) else t
                 for t in tensors)


def module_device(module: torch.nn.Module) -> torch.device:
    """Where ``module``'s first parameter (or buffer) lives; cpu for an empty module."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")
