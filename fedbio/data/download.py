"""Optional download of FLIP's full subcellular-location file (``mixed_soft.fasta``).

    fedbio data download --to runs/flip

The shipped data in ``data/scl`` needs no network; this adds DeepLoc's training part (~9.5k
records) for users who are online. Offline, it says so in one line.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from fedbio.errors import FedbioError

FLIP_SCL_URL = "http://data.bioembeddings.com/public/FLIP/fasta/scl/mixed_soft.fasta"


def download_flip_scl(to: str | Path, overwrite: bool = False, url: str = FLIP_SCL_URL,
                      timeout: float = 15.0) -> Path:
    """Download ``mixed_soft.fasta`` into ``to``, validate it, and return its path."""
    from tqdm.auto import tqdm

    from fedbio.data.records import read_records

    target = Path(to) / "mixed_soft.fasta"
    if target.exists() and not overwrite:
        raise FedbioError(f"{target} exists; pass --overwrite to download it again")
    part = target.with_suffix(".fasta.part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(part, "wb") as handle, tqdm(total=total, unit="B", unit_scale=True,
                                                  desc="mixed_soft.fasta") as bar:
                while chunk := response.read(1 << 16):
                    handle.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        part.unlink(missing_ok=True)
        raise FedbioError(
            f"could not download {url} ({getattr(err, 'reason', err)}); this needs the network. "
            "The shipped data in data/scl works offline.") from None
    try:
        read_records(part)
    except FedbioError:
        part.unlink(missing_ok=True)
        raise
    part.replace(target)
    return target
