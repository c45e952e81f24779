"""Which model backend runs: ``hf`` (Hugging Face / PyTorch, anywhere) or ``bionemo`` (GPU container).

    resolve_backend("auto")     # "bionemo" on a CUDA machine with BioNeMo's ESM-2, else "hf"
    resolve_backend("bionemo")  # "bionemo", or a FedbioError saying what is missing
    bionemo_available()         # (True/False, why)
    model_backend(model_cfg)    # what a ModelConfig runs on here (Learner.build, build_model)

BioNeMo is looked up with ``importlib.util.find_spec("bionemo.esm2")``: nothing of it is
imported here (only the ``bionemo`` namespace package is located, as ``find_spec`` must).
"""

from __future__ import annotations

import importlib.util

from fedbio.errors import FedbioError

BACKENDS = ("auto", "hf", "bionemo")
CONTAINER_HINT = ("run fedbio inside the BioNeMo container on a GPU machine: `docker compose up` "
                  "from the repository root (see docker/README.md), or use backend 'hf'")


def bionemo_esm2_available() -> bool:
    """True when ``bionemo.esm2`` can be imported (located, not imported)."""
    try:
        return importlib.util.find_spec("bionemo.esm2") is not None
    except (ImportError, ValueError):  # no ``bionemo`` parent package at all
        return False


def bionemo_available() -> tuple[bool, str]:
    """Whether the ``bionemo`` backend can run here, and a one-line reason."""
    from fedbio.training.device import cuda_available

    cuda, esm2 = cuda_available(), bionemo_esm2_available()
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


def model_backend(model_cfg) -> str:
    """``hf`` or ``bionemo``: the backend that runs this ``ModelConfig`` here.

    ``cfg.backend`` goes through ``resolve_backend``, so ``bionemo`` where BioNeMo cannot run is
    the same FedbioError everywhere (``build_model``, ``Learner.build``, ``env_check``). ``auto``
    only picks ``bionemo`` for a model BioNeMo has a checkpoint for (``esm2-8m``, ``esm2-650m``,
    ``esm2-3b``): the composition baseline, ``esm2-tiny``, AMPLIFY and local folders stay on
    ``hf``. Asking for ``bionemo`` with such a model is a FedbioError.
    """
    from fedbio.backends.bionemo.args import CHECKPOINT_TAGS

    asked = (getattr(model_cfg, "backend", None) or "auto").strip().lower()
    if asked not in BACKENDS:
        raise FedbioError(f"unknown backend {asked!r}; choose one of {', '.join(BACKENDS)}")
    has_checkpoint = not model_cfg.is_composition and model_cfg.name in CHECKPOINT_TAGS
    if asked == "auto" and not has_checkpoint:
        return "hf"
    backend = resolve_backend(asked)
    if backend == "bionemo" and not has_checkpoint:
        what = "the composition model" if model_cfg.is_composition else f"model {model_cfg.name!r}"
        raise FedbioError(f"backend 'bionemo' cannot run {what}: BioNeMo has ESM-2nv checkpoints "
                          f"for {', '.join(CHECKPOINT_TAGS)} only; use backend 'hf' (or 'auto')")
    return backend
