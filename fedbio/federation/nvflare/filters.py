"""What leaves a site, decided at the site: ``KeepPrivate`` and ``AuditStream``.

``KeepPrivate`` runs on each site's outgoing task results (``FilterType.TASK_RESULT``), after
fedbio's client script has produced them and before NVFlare sends them: the last point where the
site decides. ``AuditStream`` does the same for the scalars a site streams to the server's live
TensorBoard (``fedbio.federation.nvflare.tracking``), which travel as events, not task results:
it is the one component that turns a site's local tracking event into a federated one, so
nothing is streamed that its audit does not list.
"""

from __future__ import annotations

import os

from nvflare.apis.analytix import ANALYTIC_EVENT_TYPE, AnalyticsData
from nvflare.apis.dxo import from_shareable
from nvflare.apis.filter import Filter
from nvflare.apis.fl_constant import EventScope, FLContextKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.app_common.filters.svt_privacy import SVTPrivacy
from nvflare.app_common.widgets.convert_to_fed_event import ConvertToFedEvent

from fedbio.federation.audit import audit, audit_stream, dp_record, filter_record, split_private


def audit_folder(audit_dir: str, fl_ctx: FLContext) -> str:
    """``audit_dir``; on a deployment (``""``), the site's own: ``KIT/<job>/fedbio/federation/audit``,
    beside the rest of what the site keeps of the job."""
    if audit_dir:
        return audit_dir
    from fedbio.federation.nvflare.tracking import job_folder

    return os.path.join(job_folder(fl_ctx), "fedbio", "federation", "audit")


class KeepPrivate(Filter):
    """Remove parameters whose names start with one of ``prefixes``; log every message's names
    to ``audit_dir/<site>.jsonl`` (under DP with the update's norm before clipping, ``dp_clip``
    and the site's noise, which the site's reply carries this far and no further). Constructor arguments are plain data (NVFlare's job export
    rebuilds the filter from them)."""

    def __init__(self, prefixes: list[str], audit_dir: str, dp_clip: float = 0.0):
        super().__init__()
        self.prefixes = list(prefixes)
        self.audit_dir = audit_dir
        self.dp_clip = dp_clip

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        try:
            dxo = from_shareable(shareable)
        except ValueError:  # an error reply carries no DXO: nothing to hold back
            return shareable
        site = fl_ctx.get_identity_name()
        task = fl_ctx.get_prop(FLContextKey.TASK_NAME, "")
        params = dxo.data if isinstance(dxo.data, dict) else {}
        kept, dropped = split_private(params, self.prefixes)
        if dropped:
            dxo.data = kept
            self.log_info(fl_ctx, f"{site}: held back {len(dropped)} private parameter(s) "
                                  f"({', '.join(self.prefixes)})")
        dp = dp_record(dxo.meta, self.dp_clip or None)   # for the audit only: removed here
        audit(audit_folder(self.audit_dir, fl_ctx), site, task, kept, dropped, dp, filter_record(dxo.meta))
        return dxo.update_shareable(shareable)


class SparseVector(Filter):
    """NVFlare's ``SVTPrivacy`` on a site's update (the ``train`` reply), run before
    ``KeepPrivate`` so the audit sees what is sent. Around NVFlare's filter:

    - ``SVTPrivacy`` divides by the reply's ``NUM_STEPS_CURRENT_ROUND`` (meant as local steps;
      fedbio puts FedAvg's record count there), so it is set to 1 for the call: ``gamma`` is then
      the bound on each entry itself;
    - its noise comes from numpy's global generator, which a seeded training run has made
      predictable; it is drawn here from 128 bits of the OS's entropy, and the generator's
      state is put back afterwards;
    - the epsilon NVFlare's ledger charged, the entries sent and the cosine similarity between
      what is sent and the true update go to the site's audit (``svt_*`` meta, removed there).
    """

    def __init__(self, fraction: float, epsilon: float, noise_var: float, gamma: float, tau: float,
                 release_epsilon: float | None = None):
        super().__init__()
        # kept under their own names: NVFlare's job export rebuilds the filter from them
        self.fraction, self.epsilon, self.noise_var = fraction, epsilon, noise_var
        self.gamma, self.tau, self.release_epsilon = gamma, tau, release_epsilon
        self.svt = SVTPrivacy(fraction=fraction, epsilon=epsilon, noise_var=noise_var, gamma=gamma,
                              tau=tau, epsilon_release=release_epsilon)

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        import secrets

        import numpy as np
        from nvflare.apis.dxo import MetaKey

        from fedbio.privacy.sharing import cosine, nonzero

        try:
            dxo = from_shareable(shareable)
        except ValueError:  # an error reply carries no DXO
            return shareable
        if not dxo.meta.get("update") or not isinstance(dxo.data, dict) or not dxo.data:
            return shareable
        dxo.data = {k: np.array(v, copy=True) for k, v in dxo.data.items()}
        true = {k: v.copy() for k, v in dxo.data.items()}
        steps = dxo.get_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND, None)
        dxo.set_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND, 1)
        state = np.random.get_state()
        np.random.seed([secrets.randbits(32) for _ in range(4)])   # 128 bits
        try:
            out = self.svt.process_dxo(dxo, shareable, fl_ctx)
        finally:
            np.random.set_state(state)
        out = out if out is not None else dxo
        out.set_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND, steps)
        budget = out.meta.pop("svt_privacy_budget", None) or {}
        out.meta.pop("svt_privacy_accountant", None)
        out.set_meta_prop("svt_epsilon", budget.get("epsilon_total"))
        out.set_meta_prop("svt_sent", nonzero(out.data))
        out.set_meta_prop("svt_cosine", cosine(out.data, true))
        return out.update_shareable(shareable)


class AuditStream(ConvertToFedEvent):
    """At a site: every streamed scalar (a local ``analytix_log_stats`` event) is written to
    ``audit_dir/<site>.jsonl`` and then, when ``send``, forwarded to the server; with
    ``send=False`` (``FedConfig.stream_metrics`` off) nothing is forwarded."""

    def __init__(self, audit_dir: str, send: bool = True):
        super().__init__(events_to_convert=[ANALYTIC_EVENT_TYPE])
        self.audit_dir = audit_dir
        self.send = send

    def handle_event(self, event_type: str, fl_ctx: FLContext) -> None:
        if event_type not in self.events_to_convert:
            return
        if fl_ctx.get_prop(FLContextKey.EVENT_SCOPE, EventScope.LOCAL) == EventScope.FEDERATION:
            return
        data = fl_ctx.get_prop(FLContextKey.EVENT_DATA, None)
        try:
            record = AnalyticsData.from_dxo(from_shareable(data))
        except (TypeError, ValueError, KeyError):
            self.log_error(fl_ctx, "a streamed event without analytics data was not sent")
            return
        if record is None:
            return
        audit_stream(audit_folder(self.audit_dir, fl_ctx), fl_ctx.get_identity_name(), record.tag,
                     record.step, self.send)
        if self.send:
            super().handle_event(event_type, fl_ctx)
