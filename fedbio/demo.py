"""``make demo``: the subcellular-location story on the shipped data, printed as tables.

    fedbio demo --out runs/demo
"""

from __future__ import annotations

from pathlib import Path

from fedbio.paths import shipped


def run_demo(out: str | Path, overwrite: bool = False, profile: str | None = None) -> int:
    from fedbio.split import SplitConfig, make_split, split_table, write_split

    out = Path(out)
    cfg = SplitConfig(sites=3, alpha=1.0, seed=0)
    print("== 1. Split the shipped DeepLoc data over 3 sites (Dirichlet label skew, alpha 1.0)")
    split = make_split(shipped("scl/deeploc_valtest.fasta"), cfg,
                       hard=shipped("scl/deeploc_setHARD.fasta"))
    write_split(split, out / "split", overwrite=overwrite)
    print(split_table(split.summary()))
    return 0
