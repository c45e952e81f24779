"""Each site's record of the jobs submitted to it: ``JobRequests``, a component of the site.

Every site's ``local/resources.json`` lists ``fedbio.deployment.approval.JobRequests``. It runs
in the site's own process (not a job's) and sees every job the server deploys to the site
before NVFlare's own check (``AUTHORIZE_COMMAND_CHECK`` for ``submit_job``). It weighs the
submitter against the site's live policy (``local/authorization.json``, as NVFlare loaded it at
the site's start) for the rights ``submit_job`` and ``byoc`` (a fedbio job brings its training
script), appends one line to ``KIT/fedbio/job_requests.jsonl``::

    {"time": ..., "job_id": ..., "submitter": ..., "org": ..., "role": ...,
     "decision": "accepted" | "refused", "reason": ...}

and says a refusal in the site's log (``fedbio: refused job J submitted by U (org, role): ...``).
It vetoes nothing: NVFlare's policy does, with the same decision.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from nvflare.apis.event_type import EventType
from nvflare.apis.fl_component import FLComponent
from nvflare.apis.fl_constant import FLContextKey
from nvflare.fuel.sec.authz import AuthorizationService, AuthzContext, Person

from fedbio.deployment.policy import REASON, REQUESTS, RIGHTS


def decide(authorizer, name: str, org: str, role: str, byoc: bool = True) -> tuple[bool, str]:
    """Whether ``authorizer`` (an NVFlare ``Authorizer``) lets a job of this submitter run:
    (True, "") or (False, why)."""
    person = Person(name, org, role)
    for right in RIGHTS if byoc else RIGHTS[:1]:
        if authorizer is None:   # no policy: NVFlare authorizes everything
            return True, ""
        ok, _ = authorizer.authorize(AuthzContext(right=right, user=person, submitter=person))
        if not ok:
            return False, f"{REASON} (right {right})"
    return True, ""


class JobRequests(FLComponent):
    """Records each job submitted to this site and the site's decision (see the module)."""

    def handle_event(self, event_type: str, fl_ctx) -> None:
        if event_type != EventType.AUTHORIZE_COMMAND_CHECK:
            return
        if fl_ctx.get_prop(FLContextKey.COMMAND_NAME) != "submit_job":
            return
        try:
            self._record(fl_ctx)
        except Exception as err:   # a record lost must never stop the site
            self.log_error(fl_ctx, f"fedbio: could not record a job request ({type(err).__name__}: {err})")

    def _record(self, fl_ctx) -> None:
        items = fl_ctx.get_prop(FLContextKey.SECURITY_ITEMS) or {}
        name = str(items.get(FLContextKey.SUBMITTER_NAME) or "")
        org = str(items.get(FLContextKey.SUBMITTER_ORG) or "")
        role = str(items.get(FLContextKey.SUBMITTER_ROLE) or "")
        meta = items.get(FLContextKey.JOB_META) or {}
        job_id = str(meta.get("job_id") or fl_ctx.get_prop(FLContextKey.CURRENT_JOB_ID) or "")
        ok, why = decide(AuthorizationService.get_authorizer(), name, org, role)
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "job_id": job_id, "submitter": name,
                "org": org, "role": role, "decision": "accepted" if ok else "refused", "reason": why}
        path = Path(os.environ.get("FEDBIO_KIT") or os.getcwd()) / REQUESTS
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")
        if ok:
            self.log_info(fl_ctx, f"fedbio: accepted job {job_id} submitted by {name} ({org}, {role})")
        else:
            self.log_warning(fl_ctx, f"fedbio: refused job {job_id} submitted by {name} ({org}, {role}): {why}")

