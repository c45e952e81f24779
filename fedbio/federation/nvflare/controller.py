"""The NVFlare server workflow: a ``ModelController`` that runs ``fedbio.federation.server.Server``.

Tasks travel with ``send_model_and_wait`` (FLModel in, FLModel out); a site that raised, timed
out or sent a flagged reply counts as failed for that task, and the run goes on while at least
``min_sites`` sites answer. Writes ``RUN/federation/server/history.json`` and the selected
global model (``global.safetensors``); each round's scalars go to the live TensorBoard
(``tracking.py``).
"""

from __future__ import annotations

import os

from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.app_common.workflows.model_controller import ModelController

from fedbio.federation.server import NO_ANSWER, Reply, RunStopped, Server, ServerSettings

TASK_CHECK_PERIOD = 0.05  # seconds


class FedbioController(ModelController):
    """Runs ``Server`` with the run's ``ServerSettings``, handed over whole as plain data
    (``settings``, its fields): NVFlare's job export rebuilds the controller from its arguments."""

    def __init__(self, settings: dict):
        # Results with an error return code are dropped, never fatal: Server decides with min_sites.
        # Replies are looked for every TASK_CHECK_PERIOD s (NVFlare's default, 0.5 s, idles every task).
        super().__init__(persistor_id="", ignore_result_error=True, task_check_period=TASK_CHECK_PERIOD)
        self.settings = settings
        self.server_settings = ServerSettings.from_dict(settings)

    def _ask(self, task: str, params: dict, meta: dict, targets: list, rnd: int | None):
        model = FLModel(params=params, meta=dict(meta), current_round=rnd,
                        total_rounds=self.server_settings.num_rounds)
        results = self.send_model_and_wait(task_name=task, data=model, targets=targets,
                                           timeout=self.server_settings.task_timeout)
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
        return dict(sorted(ok.items())), dict(sorted(failed.items()))

    def run(self) -> None:
        from safetensors.numpy import load_file

        from fedbio.federation.nvflare.tracking import tracking_report
        from fedbio.federation.nvflare.watch import install_stack_dump

        install_stack_dump()  # the server process answers a watchdog's SIGUSR1 with its stacks

        server = Server(self.server_settings, [c.name for c in self.engine.get_clients()],
                        report=tracking_report(self))
        params = load_file(os.path.join(self.server_settings.run_dir, "federation", "initial.safetensors"))
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
