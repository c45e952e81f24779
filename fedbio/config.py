"""Configuration: one small dataclass per concern, defaults commented.

``ModelConfig`` says which network, ``DataConfig`` which data and how sequences are cut,
``TrainConfig`` how a model is optimised. ``fedbio.data.split.SplitConfig`` says how data is spread
over sites, and ``fedbio.federation`` adds its own ``FedConfig``. Profiles
(``fedbio.training.profiles``) fill these in for a machine.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from fedbio.errors import FedbioError

MAX_SEED = 2**32 - 1   # numpy's and torch's seeds: a negative seed is refused, not mapped
TUNING_MODES = ("head", "lora", "full")
TASKS = ("scl", "classification", "regression", "antibody")   # the prediction problems (--task)
TASK_TYPES = ("classification", "regression", "multitask")     # what a model's outputs are
TASK_TYPE = {"scl": "classification", "classification": "classification",
             "regression": "regression", "antibody": "multitask"}
SETUPS = ("multitask", "alltasks")
CROP_POLICIES = ("ends", "start")


@dataclass
class ModelConfig:
    name: str = "esm2-tiny"      # preset name (fedbio.models.PRESETS), a local folder, or "composition"
    backend: str = "hf"          # hf (Hugging Face / PyTorch) | bionemo (BioNeMo container) | auto
                                 # (bionemo on a CUDA machine with BioNeMo, else hf): fedbio.backends.bionemo.backend
    tuning: str = "full"         # head: frozen encoder + cached embeddings; lora; full
    head_hidden: int = 256       # BioNeMo's ESM-2nv head: Linear(h, 256) -> ReLU -> Dropout -> Linear
    dropout: float = 0.1
    lora_r: int = 8              # LoRA rank on query/key/value
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    weights_dir: str | None = None  # where pretrained weights were carried (else $FEDBIO_WEIGHTS)
    trust_remote_code: bool = False  # load a checkpoint whose config.json has ``auto_map`` (e.g.
                                 # NVIDIA's TransformerEngine ESM-2, nvidia/esm2_t33_650M_UR50D):
                                 # this RUNS PYTHON CODE SHIPPED WITH THE CHECKPOINT; only for
                                 # checkpoints whose code you trust

    @property
    def is_composition(self) -> bool:
        return self.name == "composition"


@dataclass
class DataConfig:
    task: str = "scl"            # scl (shipped localisation task) | classification | regression | antibody
    split: str | None = None     # a folder in the split layout; None = make the default split
    max_length: int = 128        # residues kept per sequence (longer ones are cropped, never dropped)
    crop: str = "ends"           # ends: first k/2 + last k/2 residues (signals sit at both termini)
    setup: str = "multitask"     # antibody: multitask (one task per site) | alltasks (every task everywhere)
    source: str = "jain"         # antibody: jain (Jain 2017 + Marks 2021 immunogenicity) | tap


@dataclass
class TrainConfig:
    epochs: int = 3              # E passes over each site's data (federated: R rounds x E/R epochs)
    lr: float = 2e-3
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_frac: float = 0.06    # linear warm-up, then linear decay to zero
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 0             # torch threads per process; 0 = cores() / concurrent processes
    bucket_size: int = 0         # length buckets hold batch_size * this many sequences; 0 = 50
    device: str = "auto"         # auto (cuda if available, else cpu) | cpu | cuda | cuda:N
    precision: str = "auto"      # auto (bf16-mixed on a bf16 GPU, else 32) | 32 | bf16-mixed
                                 # (CUDA only; refused on a CPU): see fedbio.training.device

    def validate(self) -> TrainConfig:
        """Refuse settings that cannot train (a FedbioError naming the option)."""
        check_number("--epochs", self.epochs, low=1)
        check_number("learning rate", self.lr, low=0, strict=True)
        check_number("weight decay", self.weight_decay, low=0)
        check_number("warm-up fraction", self.warmup_frac, low=0, high=1)
        check_number("gradient clip", self.grad_clip, low=0)
        check_number("batch size", self.batch_size, low=1, integer=True)
        check_number("threads", self.threads, low=0, integer=True)
        cores()   # a bad $FEDBIO_THREADS is refused here, before a run writes anything
        check_seed(self.seed)
        return self


def cores() -> int:
    """The cores a run shares between its concurrent processes: ``$FEDBIO_THREADS`` when set
    (``make notebooks`` and ``make test`` pin it, so committed numbers do not depend on the
    machine's core count), else the machine's."""
    asked = os.environ.get("FEDBIO_THREADS", "").strip()
    if not asked:
        return os.cpu_count() or 1
    if not re.fullmatch(r"[0-9]{1,4}", asked) or not 1 <= int(asked) <= 1024:
        raise FedbioError(f"FEDBIO_THREADS must be a whole number from 1 to 1024, not {asked!r}; "
                          "unset it to use every core")
    return int(asked)


def check_number(option: str, value: Any, low: float | None = None, high: float | None = None,
                 strict: bool = False, integer: bool = False) -> None:
    """A finite number within ``[low, high]`` (``(low, ...`` with ``strict``), else one clear error."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (not integer or float(value).is_integer())
    ok = ok and (low is None or (value > low if strict else value >= low))
    ok = ok and (high is None or value <= high)
    if not ok:
        kind = "a whole number" if integer else "a finite number"
        bounds = ([f"> {low:g}" if strict else f">= {low:g}"] if low is not None else []) + \
                 ([f"<= {high:g}"] if high is not None else [])
        raise FedbioError(f"{option} must be {kind}{' ' + ' and '.join(bounds) if bounds else ''}, "
                          f"not {value!r}")


def check_seed(seed: Any, option: str = "--seed") -> None:
    """Seeds are whole numbers from 0 to 2**32 - 1 (what numpy and torch take); others are refused."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise FedbioError(f"{option} must be a whole number from 0 to {MAX_SEED}, not {seed!r}")


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a plain, JSON-ready dict."""
    return asdict(obj)


def from_dict(cls: type, values: dict[str, Any]):
    """Build ``cls`` from a dict, ignoring unknown keys (older or newer config files)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})
