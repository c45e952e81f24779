"""Live TensorBoard through NVFlare's experiment tracking: sites stream, the server writes.

    job.to_clients(AuditStream(audit_dir, send=fed.stream_metrics))   # filters.py, at each site
    job.to_server(LiveTensorBoard(str(run_dir / "tb")), id="tb_receiver")
    report = tracking_report(controller)                               # the server's own scalars

A site's client script hands ``fedbio.federation.site.Site`` NVFlare's ``SummaryWriter``
(``nvflare.client.tracking``): each ``add_scalar`` becomes a local ``analytix_log_stats`` event,
which the site's ``AuditStream`` records in the site's audit and only then forwards to the server
as ``fed.analytix_log_stats``. ``LiveTensorBoard`` (NVFlare's ``TBAnalyticsReceiver``, pointed at
the run's ``tb/`` folder) writes each sender's scalars to ``RUN/tb/<site>/`` and the server's own
(``tracking_report``) to ``RUN/tb/server/``, flushing after every write: NVFlare's default writer
holds events for up to 120 s, longer than a quick round.
"""

from __future__ import annotations

import re
from pathlib import Path

from nvflare.apis.analytix import ANALYTIC_EVENT_TYPE, AnalyticsDataType
from nvflare.apis.fl_constant import EventScope, FLContextKey
from nvflare.apis.utils.analytix_utils import create_analytic_dxo, send_analytic_dxo
from nvflare.app_opt.tracking.tb.tb_receiver import TBAnalyticsReceiver

SERVER = "server"                      # RUN/tb/server: the server's own scalars
SENDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")   # a folder name, never a path


class LiveTensorBoard(TBAnalyticsReceiver):
    """NVFlare's TensorBoard receiver writing into ``tb_dir`` (the run's ``tb/``, not NVFlare's
    workspace), one folder per sender, every event flushed when written."""

    def __init__(self, tb_dir: str):
        super().__init__()
        self.tb_dir = tb_dir

    def initialize(self, fl_ctx) -> None:
        if not self.tb_dir:   # a deployment: the job's folder in the server's workspace
            self.tb_dir = str(Path(job_folder(fl_ctx)) / "tb")
        Path(self.tb_dir).mkdir(parents=True, exist_ok=True)
        self.root_log_dir = self.tb_dir

    def _get_record_origin(self, fl_ctx, data):
        if fl_ctx.get_prop(FLContextKey.EVENT_SCOPE) != EventScope.FEDERATION:
            return SERVER   # the server's own event (tracking_report)
        origin = super()._get_record_origin(fl_ctx, data)
        return origin if origin and SENDER.fullmatch(origin) and origin != SERVER else None

    def save(self, fl_ctx, shareable, record_origin) -> None:
        super().save(fl_ctx, shareable, record_origin)
        writer = self.writers_table.get(record_origin)
        if writer is not None:
            writer.flush()


def job_folder(fl_ctx) -> str:
    """This job's folder in the workspace of the process running it (server or site)."""
    return fl_ctx.get_engine().get_workspace().get_run_dir(fl_ctx.get_job_id())


def tracking_report(component):
    """``report(tag, value, step)`` for ``fedbio.federation.server.Server``, run by an NVFlare
    component on the server: each scalar goes the experiment-tracking way, to ``LiveTensorBoard``."""

    def report(tag: str, value: float, step: int) -> None:
        dxo = create_analytic_dxo(tag, float(value), AnalyticsDataType.SCALAR, global_step=int(step))
        with component.engine.new_context() as fl_ctx:
            send_analytic_dxo(component, dxo, fl_ctx, event_type=ANALYTIC_EVENT_TYPE)

    return report
