"""The same federation as a plain single-process loop: the same ``Site`` and ``Server`` code, no NVFlare.

    history = simulate_in_loop(cfg, fed, task, run_dir)

Parameters take the path they take through NVFlare (torch at the site, numpy at the server) and
the loop gives torch the threads one site gets in the simulator, so with the same seed the loop
and the simulator agree to float rounding. Used as the reference the
simulator is tested against, and to measure what NVFlare's machinery costs.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from fedbio.federation.audit import AuditedWriter, audit, dp_record, filter_record, split_private
from fedbio.federation.fluid.config import STEPS as FLUID_STEPS
from fedbio.federation.server import Reply, Server
from fedbio.federation.site import failure_meta


def _numpy(state: dict) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def local_ask(sites: dict, audit_dir: str | None = None, writers: dict | None = None):
    """An ``ask`` that calls each ``Site`` in turn, as ``client.py`` would; what a site sends
    passes the same hold-back and audit as NVFlare's ``KeepPrivate`` filter applies, and each
    site streams its curves to ``writers[site]`` (audited ``AuditedWriter``), when given."""
    writers = writers or {}

    def ask(task: str, params: dict, meta: dict, targets: list, rnd: int | None):
        received = {k: torch.as_tensor(v) for k, v in params.items()}
        ok, failed = {}, {}
        for name in targets:
            site = sites[name]
            try:
                if task == "train":
                    out, metrics, extra = site.train(received, meta, rnd, meta["rounds"],
                                                     writers.get(name))
                    out, dropped = split_private(_numpy(out), site.spec.get("private", ()))
                    dp = dp_record(extra, (site.dp or {}).get("clip"))   # the audit's, not sent
                    kept = filter_record(extra)
                    if audit_dir:
                        audit(audit_dir, name, task, out, dropped, dp, kept)
                    ok[name] = Reply(out, metrics, {"NUM_STEPS_CURRENT_ROUND": site.weight, **extra})
                elif task in FLUID_STEPS:
                    out, metrics, extra = site.answer(task, params, meta)
                    if audit_dir:   # what leaves: the arrays, or else the scalars (as NVFlare sends it)
                        audit(audit_dir, name, task, out or metrics, [])
                    ok[name] = Reply(out, metrics, extra)
                elif task == "stats":
                    ok[name] = Reply(_numpy(site.statistics()))
                else:
                    ok[name] = Reply({}, site.evaluate(received, meta))
            except Exception as err:
                meta = failure_meta(err)
                failed[name] = meta["failed"] + (f": {meta['detail']}" if "detail" in meta else "")
        return ok, failed

    return ask


def simulate_in_loop(settings, spec_path: str, sites: list[str], threads: int | None = None) -> dict:
    """Run ``Server(settings)`` against in-process ``Site`` objects; returns the history."""
    from safetensors.numpy import load_file

    from fedbio.federation.fluid.site import FluidSite
    from fedbio.federation.site import Site

    kind = FluidSite if settings.fluid else Site
    local = {name: kind.load(spec_path, name) for name in sites}  # each sets the threads a site gets
    if threads:
        torch.set_num_threads(threads)
    params = load_file(os.path.join(settings.run_dir, "federation", "initial.safetensors"))
    audit_dir = os.path.join(settings.run_dir, "federation", "audit")
    with live_tensorboard(settings.run_dir, local, audit_dir) as (writers, report):
        if settings.fluid:
            from fedbio.federation.fluid.student import student_for
            from fedbio.federation.fluid.workflow import FluidServer

            server = FluidServer(settings, sites, report, student_for(settings, Path(spec_path).parent, len(sites)))
        else:
            server = Server(settings, sites, report)
        return server.run(local_ask(local, audit_dir, writers), params)


@contextmanager
def live_tensorboard(run_dir: str, sites: dict, audit_dir: str):
    """Writers for ``RUN/tb/<site>`` (audited, as NVFlare's path is) and the server's ``report``
    into ``RUN/tb/server`` (flushed every round): the files NVFlare's receiver writes."""
    from torch.utils.tensorboard import SummaryWriter

    tb = Path(run_dir) / "tb"
    writers = {name: AuditedWriter(SummaryWriter(str(tb / name)) if site.spec.get("stream", True)
                                   else None, audit_dir, name)   # no stream, no event file
               for name, site in sites.items()}
    server = SummaryWriter(str(tb / "server"))

    def report(tag: str, value: float, step: int) -> None:
        server.add_scalar(tag, value, step)
        server.flush()

    try:
        yield writers, report
    finally:
        for writer in (*writers.values(), server):
            writer.close()
