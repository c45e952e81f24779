"""fedbio: federated fine-tuning of protein language models, from raw data to a results table.

The folders are the pipeline: ``fedbio.data`` (read, check, split) → ``fedbio.models`` (encoders
and heads) → ``fedbio.training`` (one training loop; local and central runs) →
``fedbio.federation`` (sites, rounds, aggregation; NVFlare only in ``fedbio.federation.nvflare``)
→ ``fedbio.reporting`` (tables and figures). ``fedbio.backends`` holds BioNeMo, ``fedbio.bench``
the benchmarks, and ``fedbio.cli`` the ``fedbio`` command.
"""

__version__ = "0.2.0"

from fedbio.errors import FedbioError  # noqa: E402

__all__ = ["FedbioError", "__version__"]
