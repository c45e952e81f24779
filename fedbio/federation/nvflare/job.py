"""The NVFlare job: fedbio's configs -> a recipe (server controller + client script) -> SimEnv,
or, with ``deployment=True``, a job for a real deployment (``fedbio.deployment.jobs`` submits it).

    recipe = FedbioRecipe(settings, fed, "RUN/federation/sites.json")
    recipe.run(simulator(run_dir, sites))

One client per site, ``num_threads`` = number of sites (fewer would restart a worker per
client-round), the workspace inside the run folder, every site's full log in
``RUN/nvflare/<job>/<site>/`` and the simulator's own console output in ``RUN/nvflare/console.txt``.
This folder (``fedbio/federation/nvflare/``) and ``fedbio/deployment/`` are the only places in
fedbio that import NVFlare.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from nvflare.job_config.api import FedJob
from nvflare.job_config.defs import FilterType
from nvflare.job_config.script_runner import ScriptRunner
from nvflare.recipe import SimEnv
from nvflare.recipe.spec import Recipe

from fedbio.federation.config import FedConfig
from fedbio.federation.fluid.config import STEPS as FLUID_STEPS
from fedbio.federation.nvflare.controller import INITIAL, FedbioController
from fedbio.federation.nvflare.filters import AuditStream, KeepPrivate, SparseVector
from fedbio.federation.nvflare.logs import LOG_CONFIG
from fedbio.federation.nvflare.tracking import LiveTensorBoard
from fedbio.federation.server import ServerSettings

CLIENT_SCRIPT = Path(__file__).resolve().parent / "client.py"
JOB_NAME = "fedbio"
TASK_REQUEST_INTERVAL = 0.1  # seconds
# what the controller asks of sites (NVFlare calls them tasks); FLuID's steps after FedAvg's
STEPS = ("stats", "train", "validate", *FLUID_STEPS)


class FedbioRecipe(Recipe):
    """FedAvg / FedProx / FedOpt over trainable parameters only, with fedbio's client script."""

    def __init__(self, settings: ServerSettings, fed: FedConfig, spec_path: str | Path,
                 private: tuple[str, ...] = (), deployment: bool = False):
        # NVFlare's word for min_sites. On a deployment the server starts the job only if that
        # many sites take it (a site's policy may refuse it); else it is FAILED_TO_RUN.
        needed = (settings.min_sites or len(settings.sites)) if deployment else settings.min_sites
        job = FedJob(name=JOB_NAME, min_clients=max(1, needed))
        # Sites run the installed fedbio; NVFlare must not copy (shadow) its modules into the job.
        job.set_app_packages(["fedbio"])
        script = CLIENT_SCRIPT
        if deployment:
            # No path of this machine travels: the first model and the sites' spec go inside the
            # job; the server writes into its job folder, each site into its own kit.
            run_dir = Path(settings.run_dir)
            settings = replace(settings, run_dir="")
            job.to_server(str(run_dir / "federation" / INITIAL))
            job.to_clients(str(spec_path))
            if settings.fluid:   # FLuID's public set travels with the spec, to the server too
                public = Path(spec_path).parent / settings.fluid["public"]
                job.to_clients(str(public))
                job.to_server(str(public))
                job.to_server(str(spec_path))
            spec_path = Path(spec_path).name
            # The script copied beside the spec: NVFlare names a script by its path below a
            # sys.path entry, and custom/fedbio/... would shadow the installed fedbio at the server.
            script = run_dir / "federation" / CLIENT_SCRIPT.name
            shutil.copy2(CLIENT_SCRIPT, script)
        job.to_server(FedbioController(settings.to_dict()))
        job.to_clients(ScriptRunner(script=str(script), script_args=f"--config {spec_path}"))
        # The site's last word on what leaves it: private names held back, every message audited.
        audit_dir = Path(settings.run_dir) / "federation" / "audit" if settings.run_dir else ""
        # Task names listed: NVFlare 2.9 matches filter chains by exact task name ("*" matches none).
        dp_clip = float((settings.dp or {}).get("clip") or 0.0)
        svt = settings.update_filter if (settings.update_filter or {}).get("kind") == "svt" else None
        if svt:   # first in the chain (one chain per task set): KeepPrivate audits what SVT sent
            job.to_clients(SparseVector(svt["fraction"], svt["epsilon"], svt["noise_var"], svt["gamma"],
                                        svt["tau"], svt["release_epsilon"]),
                           filter_type=FilterType.TASK_RESULT, tasks=list(STEPS))
        job.to_clients(KeepPrivate(list(private), str(audit_dir), dp_clip), filter_type=FilterType.TASK_RESULT,
                       tasks=list(STEPS))
        if settings.he:   # last on the way out, first on the way in: the server sees ciphertexts only
            from fedbio.federation.nvflare.he import DecryptModel, EncryptUpdate

            job.to_clients(EncryptUpdate(), filter_type=FilterType.TASK_RESULT, tasks=list(STEPS))
            job.to_clients(DecryptModel(), filter_type=FilterType.TASK_DATA, tasks=list(STEPS))
        # Live TensorBoard: what a site streams is audited there, then written by the server.
        job.to_clients(AuditStream(str(audit_dir), send=bool(fed.stream_metrics)), id="stream_audit")
        job.to_server(LiveTensorBoard(str(Path(settings.run_dir) / "tb") if settings.run_dir else ""),
                      id="tb_receiver")
        super().__init__(job)
        # Sites ask for their next task this often (NVFlare's default, 2 s, idles every round);
        # a site that stops sending heartbeats is dropped after heart_beat_timeout seconds.
        server = {"task_request_interval": TASK_REQUEST_INTERVAL}
        if fed.heartbeat_timeout and not deployment:   # a deployment's is in the server's kit
            server["heart_beat_timeout"] = fed.heartbeat_timeout
        self.add_server_config({"server": server})


class WatchedSimEnv(SimEnv):
    """``SimEnv`` whose simulator runs under ``fedbio.federation.nvflare.watch.run_watched``.

    The same command NVFlare's ``SimEnv`` runs, but with the job exported into the run folder
    (``RUN/federation/job``), arguments passed as a list (paths with spaces work), the run folder
    as working directory and ``RUN/tmp`` as ``TMPDIR`` (NVFlare's job copy stays in the run), a
    limit on silence with retries, and the end of the job taken from the server's ``done.json``.
    """

    def __init__(self, *, run_dir: Path, fed: FedConfig, on_progress=None, **kwargs):
        super().__init__(**kwargs)
        self.run_dir = Path(run_dir)
        self.fed = fed
        self.on_progress = on_progress

    def deploy(self, job) -> str:
        from fedbio.federation.nvflare.watch import run_watched

        workspace = Path(self.workspace_root) / job.name
        self._ensure_default_component_policy(str(workspace))
        job_root = self.run_dir / "federation" / "job"
        job.export_job(str(job_root))
        cmd = [sys.executable, "-m", "fedbio.federation.nvflare.simulate", str(job_root / job.name),
               "-w", str(workspace), "-c", ",".join(self.clients), "-n", str(len(self.clients)),
               "-t", str(self.num_threads), "-l", str(self.log_config)]
        fed_dir = self.run_dir / "federation"
        scratch = Path(os.environ.get("TMPDIR") or self.run_dir / "tmp")
        scratch.mkdir(parents=True, exist_ok=True)
        env = {"TMPDIR": str(scratch),
               "TORCHINDUCTOR_CACHE_DIR": os.environ.get("TORCHINDUCTOR_CACHE_DIR")
               or str(scratch / "torchinductor")}
        timeline: dict = {}
        try:
            code = run_watched(cmd, workspace, fed_dir / "server" / "done.json",
                               progress=[fed_dir / "server" / "history.json", fed_dir / "progress"],
                               timeout=sim_timeout(self.fed), retries=self.fed.sim_retries,
                               grace=self.fed.sim_grace, on_progress=self.on_progress, env=env,
                               cwd=self.run_dir, mark=str(self.run_dir), on_stall=self._keep_state,
                               timeline=timeline, console=self.run_dir / "nvflare" / "console.txt")
        finally:  # where the simulator's time went, kept with the run (failed or not)
            (fed_dir / "simulator.json").write_text(json.dumps(timeline, indent=1) + "\n")
        self.last_run_failed = code != 0
        return job.name

    def _keep_state(self, kept: Path) -> None:
        """A stalled attempt's fedbio records go with its kept workspace; the next starts clean."""
        fed_dir = self.run_dir / "federation"
        for name in ("server", "audit", "progress"):
            if (fed_dir / name).exists():
                (kept / "fedbio").mkdir(parents=True, exist_ok=True)
                (fed_dir / name).rename(kept / "fedbio" / name)


def sim_timeout(fed: FedConfig) -> float:
    """``fed.sim_timeout``, else ``$FEDBIO_SIM_TIMEOUT``, else 0 (no limit): seconds of silence
    (no site finishing an epoch, no round finishing) before the simulator counts as stalled."""
    if fed.sim_timeout:
        return float(fed.sim_timeout)
    return float(os.environ.get("FEDBIO_SIM_TIMEOUT") or 0)


def simulator(run_dir: str | Path, sites: list[str], fed: FedConfig | None = None,
              on_progress=None) -> SimEnv:
    """The NVFlare simulator for ``sites``: one worker per site, workspace in ``RUN/nvflare``."""
    fed = fed or FedConfig()
    run_dir = Path(run_dir)
    log_config = run_dir / "federation" / "log_config.json"
    log_config.parent.mkdir(parents=True, exist_ok=True)
    log_config.write_text(json.dumps(LOG_CONFIG, indent=1) + "\n")
    return WatchedSimEnv(run_dir=run_dir, fed=fed, on_progress=on_progress,
                         clients=list(sites), num_threads=len(sites),
                         workspace_root=str(run_dir / "nvflare"), log_config=str(log_config))
