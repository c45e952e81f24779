"""A site of a fedbio federation: fedbio's PyTorch training plus NVFlare's Client API.

NVFlare starts this script once per site (``fedbio.federation.nvflare.job`` builds the job):

    client.py --config RUN/federation/sites.json      (simulator)
    client.py --config sites.json                      (deployment: the spec travels in the job;
                                                        the site's data folder is in its own kit)

Tasks from the server: ``stats`` (feature/label sums for a shared scaler, composition and
regression only), ``train`` (one round of local epochs), ``validate`` (score a global model on
the site's validation split; under ``--he`` the site also keeps the decrypted model it scored,
``delivered.safetensors``), and, under ``--mode fluid``, FLuID's steps
(``fedbio.federation.fluid.site``). What leaves the site: trainable parameters (under ``--he`` as
CKKS ciphertexts, ``he.py``), the sample count used as FedAvg weight, and scalars; under FLuID,
no parameters: predictions and weights for the public records, and scalars.
"""

import argparse
import json
import logging
from pathlib import Path

import nvflare.client as flare
import torch
from nvflare.client import FLModel
from nvflare.client.tracking import SummaryWriter

from fedbio.federation.fluid.config import STEPS as FLUID_STEPS
from fedbio.federation.fluid.site import FluidSite
from fedbio.federation.nvflare.watch import install_stack_dump
from fedbio.federation.site import Site, failure_meta, site_kit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True, help="RUN/federation/sites.json")
    config = Path(parser.parse_args().config)
    install_stack_dump()                                          # for a watchdog's diagnosis

    flare.init()                                                  # (1) join the federation
    if not config.is_absolute():   # a deployed job carries its spec in its app's custom folder
        config = next((site_kit() / flare.get_job_id()).glob(f"app_*/custom/{config}"), config)
    kind = FluidSite if "fluid" in json.loads(config.read_text()) else Site   # --mode fluid: its steps
    site = kind.load(config, flare.get_site_name(), flare.get_job_id())  # own data + common test
    writer = SummaryWriter()                                      # curves, live, to the server
    while flare.is_running():
        task = flare.receive()                                    # (2) a task and the global model
        if task is None:
            break
        name = flare.get_task_name()
        try:
            if name == "train":                                   # (3) E/R local epochs from the global
                params, metrics, meta = site.train(task.params, task.meta, task.current_round,
                                                   task.total_rounds, writer)
                reply = FLModel(params=params, metrics=metrics,
                                meta={"NUM_STEPS_CURRENT_ROUND": site.weight, **meta})
            elif name in FLUID_STEPS:                             # FLuID: public-set arrays, scalars
                params, metrics, meta = site.answer(name, task.params or {}, task.meta)
                params = {k: torch.from_numpy(v) for k, v in params.items()}   # the Client API sends tensors
                reply = FLModel(params=params or None, metrics=metrics, meta=meta)
            elif name == "stats":
                reply = FLModel(params=site.statistics())
            else:                                                 # validate: scores only
                reply = FLModel(metrics=site.evaluate(task.params, task.meta))
                if task.meta.get("deliver"):   # --he: the decrypted last model, kept at the site
                    site.deliver(task.params)
        except Exception as err:  # report and stay: the server decides whether the run goes on
            logging.getLogger("fedbio.site").exception(f"{name} failed at {site.name}")  # site's own log
            reply = FLModel(metrics={}, meta=failure_meta(err))   # the error's type (+ scalars) only
        flare.send(reply)                                         # (4) back to the server


if __name__ == "__main__":
    main()
