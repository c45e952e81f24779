"""fedbio: federated fine-tuning of protein language models, from raw data to a results table.

The folders are the pipeline: ``fedbio.data`` (read, check, split) → ``fedbio.models`` (encoders
and heads) → ``fedbio.training`` (one training loop; local and central runs) →
``fedbio.federation`` (sites, rounds, aggregation; NVFlare only in ``fedbio.federation.nvflare``)
→ ``fedbio.reporting`` (tables and figures). ``fedbio.backends`` holds BioNeMo, ``fedbio.bench``
the benchmarks, ``fedbio.privacy`` differential privacy, and ``fedbio.cli`` the ``fedbio`` command.
"""

import os

__version__ = "0.2.0"

# OpenMP threads that wait for each other by spinning collapse when another process holds a core:
# training an esm2-tiny-shaped model with 2 threads beside one busy core ran at 0.63 steps/s
# spinning, 3.68 passive (1 thread: 3.48). Set before torch is imported, and inherited by every
# site's process; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from fedbio.errors import FedbioError  # noqa: E402

__all__ = ["FedbioError", "__version__"]
