"""The NVFlare server workflow: a ``ModelController`` that runs ``fedbio.federation.server.Server``.

Tasks travel with ``send_model_and_wait`` (FLModel in, FLModel out); a site that raised, timed
out or sent a flagged reply counts as failed for that task, and the run goes on while at least
``min_clients`` sites answer. Writes ``RUN/federation/server/history.json`` and the selected
global model (``global.safetensors``).
"""

from __future__ import annotations

import os

from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.app_common.workflows.model_controller import ModelController

from fedbio.federation.server import NO_ANSWER, Reply, RunStopped, Server, ServerSettings

TASK_CHECK_PERIOD = 0.05  # seconds


class FedbioController(ModelController):
    """Every constructor argument is plain data kept as a same-named attribute: NVFlare's job
    export rebuilds the controller from them."""

    def __init__(self, run_dir: str, algorithm: str = "fedavg", num_rounds: int = 3, min_clients: int = 0,
                 mu: float = 0.0, server_optimizer: str = "sgd", server_lr: float = 1.0,
                 server_momentum: float = 0.0, server_betas: list | None = None, server_eps: float = 1e-3,
                 task_timeout: int = 0, key_metric: str = "accuracy", higher_is_better: bool = True,
                 feature_stats: bool = False, label_stats: bool = False):
        # Results with an error return code are dropped, never fatal: Server decides with min_clients.
        # Replies are looked for every TASK_CHECK_PERIOD s (NVFlare's default, 0.5 s, idles every task).
        super().__init__(persistor_id="", ignore_result_error=True, task_check_period=TASK_CHECK_PERIOD)
        self.run_dir = run_dir
        self.algorithm = algorithm
        self.num_rounds = num_rounds
        self.min_clients = min_clients
        self.mu = mu
        self.server_optimizer = server_optimizer
        self.server_lr = server_lr
        self.server_momentum = server_momentum
        self.server_betas = server_betas
        self.server_eps = server_eps
        self.task_timeout = task_timeout
        self.key_metric = key_metric
        self.higher_is_better = higher_is_better
        self.feature_stats = feature_stats
        self.label_stats = label_stats

    def _ask(self, task: str, params: dict, meta: dict, targets: list, rnd: int | None):
        model = FLModel(params=params, meta=dict(meta), current_round=rnd, total_rounds=self.num_rounds)
        results = self.send_model_and_wait(task_name=task, data=model, targets=targets, timeout=self.task_timeout)
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

        from fedbio.federation.nvflare.watch import install_stack_dump

        install_stack_dump()  # the server process answers a watchdog's SIGUSR1 with its stacks

        settings = ServerSettings(
            run_dir=self.run_dir, algorithm=self.algorithm, num_rounds=self.num_rounds,
            min_clients=self.min_clients, mu=self.mu, server_optimizer=self.server_optimizer,
            server_lr=self.server_lr, server_momentum=self.server_momentum,
            server_betas=tuple(self.server_betas or (0.9, 0.99)), server_eps=self.server_eps,
            key_metric=self.key_metric, higher_is_better=self.higher_is_better,
            feature_stats=self.feature_stats, label_stats=self.label_stats)
        server = Server(settings, [c.name for c in self.engine.get_clients()])
        params = load_file(os.path.join(self.run_dir, "federation", "initial.safetensors"))
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
