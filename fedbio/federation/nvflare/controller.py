"""The NVFlare server workflow: a ``ModelController`` that runs ``fedbio.federation.server.Server``.

Tasks travel with ``send_model_and_wait`` (FLModel in, FLModel out); a site that raised, timed
out or sent a flagged reply counts as failed for that task, and the run goes on while at least
``min_sites`` sites answer. Writes ``RUN/federation/server/history.json`` and the selected
global model (``global.safetensors``) -- on a deployment, in the job's folder of the server's
workspace, which the job's download returns; each round's scalars go to the live TensorBoard
(``tracking.py``).
"""

from __future__ import annotations

import os
import threading
from dataclasses import replace

from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.app_common.workflows.model_controller import ModelController

from fedbio.federation.server import ABSENT, NO_ANSWER, Reply, RunStopped, Server, ServerSettings

TASK_CHECK_PERIOD = 0.05  # seconds
INITIAL = "initial.safetensors"   # the first global model; in a deployed job, in the server app


class FedbioController(ModelController):
    """Runs ``Server`` with the run's ``ServerSettings``, handed over whole as plain data
    (``settings``, its fields): NVFlare's job export rebuilds the controller from its arguments."""

    def __init__(self, settings: dict):
        # Results with an error return code are dropped, never fatal: Server decides with min_sites.
        # Replies are looked for every TASK_CHECK_PERIOD s (NVFlare's default, 0.5 s, idles every task).
        super().__init__(persistor_id="", ignore_result_error=True, task_check_period=TASK_CHECK_PERIOD)
        self.settings = settings
        self.server_settings = ServerSettings.from_dict(settings)

    def _prepare_task(self, *args, **kwargs):
        self._task = super()._prepare_task(*args, **kwargs)
        return self._task

    def _note_gone(self, report):
        """Wrap the communicator's dead-site report: remember who is gone (see ``_drop_gone``)."""

        def process_dead_client_report(client_name, fl_ctx):
            self._gone.add(client_name)
            return report(client_name, fl_ctx)

        return process_dead_client_report

    def _drop_gone(self, targets: list, done: threading.Event) -> None:
        """On a deployment the server reports a site whose process died (no heartbeat for
        ``heart_beat_timeout`` s); once a task waits only for such sites it is ended here, and
        they count as not answering (NVFlare's own check waits for its grace periods, and a
        site that never comes back would otherwise hold the task forever without a
        ``task_timeout``)."""
        while not done.wait(0.5):
            task = getattr(self, "_task", None)
            if task is None:
                continue
            answered = {ct.client.name for ct in task.client_tasks if ct.result_received_time}
            waiting = set(targets) - answered
            if waiting and waiting <= self._gone:
                self.logger.warning(f"fedbio: {', '.join(sorted(waiting))} left the federation; "
                                    f"task {task.name} goes on without")
                self.cancel_task(task, fl_ctx=self.fl_ctx)
                return

    def _ask(self, task: str, params: dict, meta: dict, targets: list, rnd: int | None):
        model = FLModel(params=params, meta=dict(meta), current_round=rnd,
                        total_rounds=self.server_settings.num_rounds)
        absent = {site: ABSENT for site in targets if site in self._absent}
        targets = [site for site in targets if site not in absent]
        if not targets:
            return {}, absent
        done = threading.Event()
        watcher = threading.Thread(target=self._drop_gone, args=(list(targets), done), daemon=True)
        watcher.start()
        try:
            results = self.send_model_and_wait(task_name=task, data=model, targets=targets,
                                               timeout=self.server_settings.task_timeout)
        finally:
            done.set()
            self._task = None
        ok, failed = {}, {}
        for res in results:
            site = res.meta.get("client_name")
            if res.meta.get("failed"):
                detail = res.meta.get("detail")
                failed[site] = str(res.meta["failed"]) + (f": {detail}" if detail else "")
            else:
                ok[site] = Reply(res.params or {}, res.metrics or {}, res.meta)
        for site in targets:
            if site not in ok and site not in failed:
                failed[site] = NO_ANSWER
        return dict(sorted(ok.items())), dict(sorted({**failed, **absent}.items()))

    def run(self) -> None:
        from safetensors.numpy import load_file

        from fedbio.federation.nvflare.tracking import tracking_report
        from fedbio.federation.nvflare.watch import install_stack_dump

        install_stack_dump()  # the server process answers a watchdog's SIGUSR1 with its stacks
        self._gone: set[str] = set()
        self.communicator.process_dead_client_report = self._note_gone(
            self.communicator.process_dead_client_report)

        initial = os.path.join(self.server_settings.run_dir, "federation", "initial.safetensors")
        if not self.server_settings.run_dir:   # a deployment: the job's folder, its first model inside
            workspace, job_id = self.engine.get_workspace(), self.fl_ctx.get_job_id()
            self.server_settings = replace(self.server_settings, run_dir=workspace.get_run_dir(job_id))
            initial = os.path.join(workspace.get_app_custom_dir(job_id), INITIAL)
        track, rounds = tracking_report(self), self.server_settings.num_rounds

        def report(tag: str, value: float, step: int) -> None:
            track(tag, value, step)
            if tag == "sites/aggregated":   # a line per round in the server's log (a deployment's progress)
                self.logger.info(f"fedbio: round {step}/{rounds}: {int(value)} site(s) aggregated")

        clients = [c.name for c in self.engine.get_clients()]
        expected = list(self.server_settings.sites) or clients
        self._absent = set(expected) - set(clients)   # not in the job: never asked, counted as failed
        combine = None
        if self.server_settings.he:   # the server's context: public keys only, it cannot decrypt
            from fedbio.federation.nvflare.he import SERVER_CONTEXT, encrypted_mean, load_context

            context = load_context(SERVER_CONTEXT, self.fl_ctx)
            combine = lambda updates: encrypted_mean(updates, context)  # noqa: E731
            self.logger.info(f"fedbio: --he: the server's CKKS context can decrypt: {context.is_private()}")
        if self.server_settings.fluid:   # FLuID: the student trains here, from the job's spec and public set
            from fedbio.federation.fluid.student import student_for
            from fedbio.federation.fluid.workflow import FluidServer

            server = FluidServer(self.server_settings, expected, report,   # the spec beside the first model
                                 student_for(self.server_settings, os.path.dirname(initial), len(expected)))
        else:
            server = Server(self.server_settings, expected, report=report, combine=combine)
        if self.server_settings.he:
            from fedbio.federation.nvflare.he import POLY_DEGREE, SLOTS

            server.history["he"] = {"scheme": "CKKS", "poly_modulus_degree": POLY_DEGREE, "slots": SLOTS,
                                    "server_can_decrypt": bool(context.is_private())}
        params = load_file(initial)
        try:
            server.run(self._ask, params)
        except RunStopped as err:
            self.panic(str(err))
        except Exception as err:  # the run's end must be on record, or the watchdog waits for it
            try:
                server.stop(f"the server's workflow failed: {type(err).__name__}: {err}")
            except RunStopped:
                pass
            raise
