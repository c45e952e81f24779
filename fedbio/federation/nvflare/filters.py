"""NVFlare filters at the site: ``KeepPrivate`` holds private parameters back and audits the rest.

Runs on each site's outgoing task results (``FilterType.TASK_RESULT``), after fedbio's client
script has produced them and before NVFlare sends them: the last point where the site decides.
"""

from __future__ import annotations

from nvflare.apis.dxo import from_shareable
from nvflare.apis.filter import Filter
from nvflare.apis.fl_constant import FLContextKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable

from fedbio.federation.privacy import audit, split_private


class KeepPrivate(Filter):
    """Remove parameters whose names start with one of ``prefixes``; log every message's names
    to ``audit_dir/<site>.jsonl``. Constructor arguments are plain data (NVFlare's job export
    rebuilds the filter from them)."""

    def __init__(self, prefixes: list[str], audit_dir: str):
        super().__init__()
        self.prefixes = list(prefixes)
        self.audit_dir = audit_dir

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
        audit(self.audit_dir, site, task, kept, dropped)
        return dxo.update_shareable(shareable)
