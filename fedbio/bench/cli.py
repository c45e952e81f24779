"""``fedbio bench``: its actions (``train``, ``fed``, ``deploy``, ``gpu``) on the command line."""

from __future__ import annotations

from fedbio.bench.common import add_options
from fedbio.bench.deploy import register as register_deploy
from fedbio.bench.fed import register as register_fed
from fedbio.bench.gpu import register as register_gpu
from fedbio.bench.train import cmd_bench_train


def register(subparsers) -> None:
    """Add ``fedbio bench train``, ``fedbio bench fed`` and ``fedbio bench gpu`` to ``fedbio``."""
    p = subparsers.add_parser("bench", help="measure training speed, caching, memory and "
                                            "federation overhead")
    bsub = p.add_subparsers(dest="bench_command", metavar="ACTION", required=True)
    t = bsub.add_parser("train", help="padding, head-mode cache, encoding speed, peak RSS")
    add_options(t, "bigger samples and the full default split (a few minutes)")
    t.set_defaults(func=cmd_bench_train)
    register_fed(bsub)
    register_deploy(bsub)
    register_gpu(bsub)
