"""fedbio: federated fine-tuning of protein language models, from raw data to a results table.

The ML code (``fedbio.data.records``, ``fedbio.data.split``, ``fedbio.models``, ``fedbio.train``) is plain
PyTorch and never imports NVFlare; only ``fedbio.federation`` does.
"""

__version__ = "0.1.0"

from fedbio.errors import FedbioError  # noqa: E402

__all__ = ["FedbioError", "__version__"]
