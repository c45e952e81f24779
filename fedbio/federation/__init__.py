"""Federated runs on NVFlare: the only part of fedbio that imports NVFlare.

    from fedbio.federation import FedConfig, run_federated
    run_federated(plan(mode="fedavg", model="composition"), FedConfig(rounds=3), "runs/fedavg")

- ``config``      ``FedConfig``: algorithm, rounds, FedProx mu, FedOpt server optimizer, min_sites
- ``site``        one site's local work (plain PyTorch via ``Learner``; no NVFlare)
- ``client.py``   the NVFlare client script: ``flare.init / receive / send`` around ``Site``
- ``aggregate``   weighted averaging in a fixed site order, FedOpt's server step (numpy)
- ``server``      the server workflow: stats, rounds, selection, records (numpy; no NVFlare)
- ``controller``  that workflow as an NVFlare ``ModelController``
- ``job``         the recipe and the simulator environment
- ``runner``      ``run_federated``: run folder in, ``metrics.json`` out
- ``results``     ``metrics.json``, TensorBoard curves and site-scored tests from the server's history
- ``progress``    progress lines while the simulator runs; where its time went (``simulator_phases``)
- ``logs``        the simulator's log config (console at WARNING, full logs per site)
- ``loop``        the same federation as a plain single-process loop (``engine="loop"``)

``FedConfig`` and ``bytes_of`` import without NVFlare; ``run_federated`` imports it when called
(``engine="loop"`` never does).
"""

from fedbio.federation.aggregate import bytes_of
from fedbio.federation.config import ALGORITHMS, FedConfig

__all__ = ["ALGORITHMS", "FedConfig", "bytes_of", "run_federated"]


def __getattr__(name: str):
    if name == "run_federated":
        from fedbio.federation.runner import run_federated

        return run_federated
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
