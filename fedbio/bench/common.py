"""What every benchmark shares: threads and seeds, the shipped data, random models of a preset's
shape, timing, stages, the ``measure | value | goal | ok?`` table, JSON output and the options
every ``fedbio bench`` action takes."""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEED = 0


# -- set-up ------------------------------------------------------------------------------------
def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def setup(threads: int | None, seed: int = SEED) -> int:
    """Set torch's thread count (default: all cores) and seed every generator; returns threads."""
    import numpy as np
    import torch

    n = threads or cpu_count()
    torch.set_num_threads(n)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return n


@dataclass
class Shipped:
    """The shipped DeepLoc records as sequences and class ids."""

    seqs: list[str]
    y: Any  # torch.Tensor of class ids
    classes: list[str]

    def subset(self, n: int, seed: int = SEED) -> Shipped:
        """``n`` records drawn without replacement (all of them if ``n`` is larger)."""
        if n >= len(self.seqs):
            return self
        idx = sorted(rng(seed).choice(len(self.seqs), n, replace=False).tolist())
        return Shipped([self.seqs[i] for i in idx], self.y[idx], self.classes)


def load_shipped() -> Shipped:
    """Every record of ``data/scl/deeploc_valtest.fasta``."""
    import torch

    from fedbio.data.records import class_list, read_records
    from fedbio.paths import shipped

    records = read_records(shipped("scl/deeploc_valtest.fasta"))
    classes = class_list(records)
    index = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index[str(r.label)] for r in records], dtype=torch.long)
    return Shipped([r.sequence for r in records], y, classes)


def random_model(preset: str, n_outputs: int, tuning: str, seed: int = SEED):
    """A ``SequenceModel`` of ``preset``'s shape with random weights (nothing is loaded)."""
    from fedbio.models import SequenceModel
    from fedbio.models.shapes import encoder_config
    from fedbio.training.profiles import resolve_profile

    mcfg = resolve_profile("quick").model
    return SequenceModel(name=preset, n_outputs=n_outputs, tuning=tuning,
                         head_hidden=mcfg.head_hidden, dropout=mcfg.dropout, seed=seed,
                         encoder_config=encoder_config(preset).to_dict())


def laptop_crop() -> int:
    """The laptop profile's ``max_length`` (its model choice needs weights; its crop does not)."""
    from fedbio.training.profiles import LAPTOP_MODELS, laptop_settings

    return laptop_settings(LAPTOP_MODELS[0])[1].max_length


def rng(seed: int):
    """A seeded ``numpy.random.Generator`` (numpy is imported only when a benchmark runs)."""
    import numpy as np

    return np.random.default_rng(seed)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def ratio(slow: float, fast: float) -> float:
    return slow / fast if fast > 0 else math.inf



def run_stages(result: dict, stages: dict, say) -> None:
    """Run each ``(message, measure)`` stage, storing its result and its wall time in ``result``."""
    result["stage_seconds"] = {}
    for key, (message, measure) in stages.items():
        say(message)
        result["stage_seconds"][key], result[key] = timed(measure)



def table(rows: list[dict]) -> str:
    """The rows as an aligned ``measure | value | goal | ok?`` table."""
    cells = [["measure", "value", "goal", "ok?"]]
    cells += [[r["measure"], r["value"], r["goal"],
               "-" if r["ok"] is None else ("yes" if r["ok"] else "NO")] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)



def run_and_print(args, run: Callable, full, small) -> dict:
    """``run(work, sizes, threads=)`` in a scratch folder (``--workdir``), its table printed."""
    from fedbio.outputs import scratch_dir

    with scratch_dir(args.workdir) as work:
        result = run(work, full if args.full else small, threads=args.threads)
    print(table(result["checks"]))
    return result


def finish(result: dict, out: str | None, label: str) -> int:
    """Print the run's size and wall time; write the results as JSON when ``out`` is given."""
    print(f"{result['size']} {label}, {result['threads']} thread(s), "
          f"{result['wall_seconds']:.1f} s wall")
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {path}")
    return 0


def add_options(parser, full_help: str) -> None:
    """The flags every benchmark action takes: --full, --out FILE, --threads N."""
    parser.add_argument("--full", action="store_true", help=full_help)
    parser.add_argument("--out", default=None, metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch threads in this process (default: all cores)")
    parser.add_argument("--workdir", default="runs/bench", metavar="DIR",
                        help="a new folder for the benchmark's own runs, removed when it ends "
                             "(kept as DIR.failed if it fails); default runs/bench")
