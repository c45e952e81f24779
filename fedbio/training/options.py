"""``fedbio run`` and ``fedbio predict``'s device options (--device, --precision, --trust-remote-code).

Plain argparse, no torch: ``fedbio --help`` and every usage error stay instant. What the values
mean is ``fedbio.training.device``'s (and ``fedbio.models.remote``'s).
"""

from __future__ import annotations


def add_device_arguments(p, default: str | None) -> None:
    """--device, --precision and --trust-remote-code (fedbio.training.device, fedbio.models.backbone)."""
    keep = "the profile's: auto" if default is None else default
    p.add_argument("--device", default=default,
                   help=f"auto | cpu | cuda | cuda:N (default: {keep})")
    p.add_argument("--precision", default=default,
                   help=f"auto | 32 | bf16-mixed (CUDA only; default: {keep})")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow checkpoints whose config.json has an auto_map (e.g. NVIDIA's "
                        "TransformerEngine ESM-2): RUNS PYTHON CODE SHIPPED WITH THE CHECKPOINT")
