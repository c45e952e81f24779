"""What the measures of ``fedbio bench fed`` run on: their sizes and the data and models they make.

    sizes = FULL if full else SMALL                      # FedSizes: how much work each measure does
    split = split_subset(work / "split", 0.2)            # the default split, 20 % of each part
    model_dir = shaped_checkpoint("esm2-8m", work / "m")  # random-init checkpoint of that shape
    warm_up()                                            # first-call costs out of the timings

``fedbio.bench.fed_measures`` measures with these; ``fedbio.bench.fed`` picks the sizes, runs the
measures and writes the table. Models are randomly initialised (nothing is downloaded).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedbio.bench.common import SEED, random_model, rng
from fedbio.paths import shipped

CONTEXT = {"flower_simulation": 2.40, "nvflare_raw": 3.53}  # same job, measured (ANCHORS.md)
ROUNDS = 3
TINY_EPOCHS = 3       # the quick profile's model, 3 epochs = 1 per round
BYTES_MODEL = "esm2-8m"


@dataclass(frozen=True)
class FedSizes:
    """How much work each measure does; ``SMALL`` is the default, ``FULL`` is ``--full``."""

    name: str
    sim_fraction: float    # share of every part of the default split for measure 1 (1 = all)
    floor_model: str       # preset whose shape the head-mode checkpoint of measure 3 has
    floor_fraction: float  # share of every part of the default split for measure 3
    floor_crop: int
    floor_engine: str      # "loop" (this process) or "nvflare" (the simulator)
    floor_passes: int      # encoder passes timed for the floor; it is the fastest one
    fixed_runs: int = 1    # simulator runs of the composition model; its row is their median


SMALL = FedSizes("small", sim_fraction=0.2, floor_model="esm2-8m", floor_fraction=0.01,
                 floor_crop=128, floor_engine="loop", floor_passes=2)
FULL = FedSizes("full", sim_fraction=1.0, floor_model="esm2-8m", floor_fraction=0.15,
                floor_crop=256, floor_engine="nvflare", floor_passes=2, fixed_runs=3)


def split_subset(folder: Path, fraction: float, seed: int = SEED) -> Path:
    """The default split (3 sites, Dirichlet 1.0, ``seed``) with ``fraction`` of each part kept.

    Every site's train and valid and both test sets keep ``round(fraction * n)`` records (at
    least one) drawn at random, so the subset keeps the default split's proportions, plus one
    training record of any class the cut left untrained; with ``fraction=1`` it is the default
    split itself.
    """
    from fedbio.data.split import SplitConfig, make_split, restore_classes, write_split

    split = make_split(shipped("scl/deeploc_valtest.fasta"), SplitConfig(seed=seed),
                       hard=shipped("scl/deeploc_setHARD.fasta"))
    if fraction < 1:
        draw = rng(seed)

        def cut(records: list) -> list:
            keep = draw.choice(len(records), max(1, round(fraction * len(records))), replace=False)
            return [records[i] for i in sorted(keep.tolist())]

        full = {name: parts["train"] for name, parts in split.sites.items()}
        for parts in split.sites.values():
            parts["train"], parts["valid"] = cut(parts["train"]), cut(parts["valid"])
        split.test, split.test_hard = cut(split.test), cut(split.test_hard)
        restore_classes(split, full)  # every class the test sets hold is trained somewhere
    return write_split(split, folder, plot=False)


def split_name(fraction: float) -> str:
    """How the results name ``split_subset(..., fraction)``."""
    return "default split" if fraction >= 1 else f"{fraction:.0%} of the default split"


def shaped_checkpoint(preset: str, folder: Path, seed: int = SEED) -> Path:
    """A random-init ``EsmForMaskedLM`` of ``preset``'s shape saved with ``save_pretrained``:
    a local checkpoint folder that works as ``ModelConfig.name``."""
    import torch
    from transformers import EsmForMaskedLM

    from fedbio.models import esm_config
    from fedbio.models.backbone_loading import quiet_transformers

    with torch.random.fork_rng(devices=[]), quiet_transformers():
        torch.manual_seed(seed)
        EsmForMaskedLM(esm_config(preset)).save_pretrained(folder)
    return folder


def warm_up() -> None:
    """First-call costs (imports, first model build) out of the timed in-process runs."""
    from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (runs write curves)

    import fedbio.federation.loop  # noqa: F401
    import fedbio.federation.nvflare.job  # noqa: F401  (NVFlare's job API, imported once per process)

    random_model("esm2-tiny", 2, "full")
