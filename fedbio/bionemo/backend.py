"""Which model backend runs: ``hf`` (Hugging Face / PyTorch, anywhere) or ``bionemo`` (GPU container).

    resolve_backend("auto")     # "bionemo" on a CUDA machine with BioNeMo's ESM-2, else "hf"
    resolve_backend("bionemo")  # "bionemo", or a FedbioError saying what is missing
    bionemo_available()         # (True/False, why)

BioNeMo is looked up with ``importlib.util.find_spec("bionemo.esm2")``: nothing of it is
imported here (only the ``bionemo`` namespace package is located, as ``find_spec`` must).
"""

from __future__ import annotations

import importlib.util

from fedbio.errors import FedbioError

BACKENDS = ("auto", "hf", "bionemo")
CONTAINER_HINT = ("run fedbio inside the BioNeMo container on a GPU machine: `docker compose up` "
                  "from the repository root (see docker/README.md), or use backend 'hf'")


def _cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - a broken CUDA install counts as none
        return False


def _bionemo_esm2() -> bool:
    """True when ``bionemo.esm2`` can be imported (located, not imported)."""
    try:
        return importlib.util.find_spec("bionemo.esm2") is not None
    except (ImportError, ValueError):  # no ``bionemo`` parent package at all
        return False


def bionemo_available() -> tuple[bool, str]:
    """Whether the ``bionemo`` backend can run here, and a one-line reason."""
    cuda, esm2 = _cuda(), _bionemo_esm2()
    if cuda and esm2:
        return True, "a CUDA GPU and BioNeMo's ESM-2 (bionemo.esm2) are both present"
    missing = [what for what, ok in (("a CUDA GPU", cuda),
                                     ("BioNeMo Framework (bionemo.esm2 is not importable)", esm2))
               if not ok]
    return False, "missing " + " and ".join(missing)


def resolve_backend(name: str = "auto") -> str:
    """``hf`` or ``bionemo``: the backend ``name`` (auto | hf | bionemo) means on this machine.

    ``auto`` picks ``bionemo`` when ``torch.cuda.is_available()`` and ``bionemo.esm2`` can be
    found, else ``hf``. Asking for ``bionemo`` where it cannot run is a FedbioError naming what
    is missing.
    """
    name = (name or "auto").strip().lower()
    if name not in BACKENDS:
        raise FedbioError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "hf":
        return "hf"
    ok, why = bionemo_available()
    if name == "auto":
        return "bionemo" if ok else "hf"
    if not ok:
        raise FedbioError(f"backend 'bionemo' is not available here ({why}): {CONTAINER_HINT}")
    return "bionemo"
