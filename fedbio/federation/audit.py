"""What stays at a site (private parameters: the task heads of a multi-task federation) and
the audit of what leaves it.

With ``FedConfig.private_heads`` (the default for multi-task data), every parameter under
``head.`` stays where it was trained: the server's first model has none, the NVFlare filter
``fedbio.federation.nvflare.filters.KeepPrivate`` removes them from whatever a site sends, and the
server refuses a reply whose names differ from its own model's. Each site then trains the shared
trunk with its own head. Every outgoing message's parameter names are appended to
``RUN/federation/audit/<site>.jsonl`` by the same filter, so what left a site can be read back.
So is every scalar a site streams for a live TensorBoard (``audit_stream``; NVFlare's widget
``fedbio.federation.nvflare.filters.AuditStream``, or ``AuditedWriter`` in the plain loop), and
with ``FedConfig.stream_metrics`` off nothing is streamed: the audit then shows it held back.
Under DP an update's line adds its norm and noise (``dp``); under selective sharing or SVT the
entries kept or sent, their cosine to the true update and SVT's epsilon (``filter``).

Plain Python: nothing here imports NVFlare (the plain loop engine uses the same functions).
"""

from __future__ import annotations

import json
from pathlib import Path

HEAD_PREFIX = "head."
STREAM = "stream"   # the audit's name for a scalar streamed to the server's TensorBoard


def private_prefixes(private_heads: bool | None, task_type: str) -> tuple[str, ...]:
    """The name prefixes that never leave a site: heads, when asked or (None) for multi-task data."""
    keep = (task_type == "multitask") if private_heads is None else private_heads
    return (HEAD_PREFIX,) if keep else ()


def is_private(name: str, prefixes) -> bool:
    return any(name.startswith(p) for p in prefixes)


def split_private(params: dict, prefixes) -> tuple[dict, list[str]]:
    """``params`` without the private names, and the names removed."""
    if not prefixes or not params:
        return dict(params or {}), []
    kept = {k: v for k, v in params.items() if not is_private(k, prefixes)}
    return kept, sorted(set(params) - set(kept))


def audit(folder: str | Path, site: str, task: str, params: dict, dropped: list[str],
          dp: dict | None = None, update_filter: dict | None = None) -> None:
    """Append one line to ``folder/<site>.jsonl``: the names and sizes that left, what was held
    back, and under DP the update's norm before clipping, the clip and the noise the site added."""
    import numpy as np

    entry = {"task": task, "sent": sorted(params), "values": int(sum(np.size(v) for v in params.values())),
             "shapes": {k: list(np.shape(v)) for k, v in sorted(params.items())}, "held_back": dropped}
    if dp is not None:
        entry["dp"] = dp
    if update_filter is not None:
        entry["filter"] = update_filter
    _append(folder, site, entry)


def _append(folder: str | Path, site: str, entry: dict) -> None:
    """One JSON line appended to ``folder/<site>.jsonl`` (the folder made if needed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{site}.jsonl", "a") as handle:
        handle.write(json.dumps(entry) + "\n")


DP_KEYS = ("dp_norm", "dp_scale", "dp_noise_sd",   # a DP reply's meta for the audit, never sent
           "dp_sgd_steps", "dp_sgd_epsilon")
FILTER_KEYS = ("share_kept", "share_cosine",         # a filtered update's, for the audit only
               "svt_epsilon", "svt_cosine", "svt_sent")


def dp_record(meta: dict, clip: float | None) -> dict | None:
    """Remove a DP reply's ``dp_*`` meta (in place) and say it as the audit's ``dp`` entry:
    site-level, the update's norm before clipping, the clip S, the norm after clipping, the
    site's noise sd; DP-SGD, the steps taken so far and the site's epsilon after them."""
    found = {k: meta.pop(k) for k in DP_KEYS if k in meta}
    if not found:
        return None
    out = {}
    if "dp_norm" in found:
        norm, scale = float(found["dp_norm"]), float(found.get("dp_scale", 1.0))
        out.update(norm=norm, clip=clip, scale=scale, clipped_norm=norm * scale,
                   noise_sd=float(found.get("dp_noise_sd", 0.0)))
    if "dp_sgd_steps" in found:
        out["dp_sgd"] = {"steps": int(found["dp_sgd_steps"]), "epsilon": found.get("dp_sgd_epsilon")}
    return out


def filter_record(meta: dict) -> dict | None:
    """Remove a filtered update's ``share_*``/``svt_*`` meta (in place) and say it as the
    audit's ``filter`` entry: entries kept (selective sharing) or sent (SVT), the cosine
    similarity between what was sent and the true update, and SVT's epsilon for this message."""
    found = {k: meta.pop(k) for k in FILTER_KEYS if k in meta}
    meta.pop("update", None)
    if not found:
        return None
    if "share_kept" in found:
        return {"kind": "share", "kept": int(found["share_kept"]), "cosine": found.get("share_cosine")}
    return {"kind": "svt", "sent": found.get("svt_sent"), "cosine": found.get("svt_cosine"),
            "epsilon": found.get("svt_epsilon")}


def audit_stream(folder: str | Path, site: str, tag: str, step, sent: bool) -> None:
    """Append one line to ``folder/<site>.jsonl`` for a streamed scalar: its tag and step, sent
    or held back (``task`` is ``stream``; the value itself is not repeated here)."""
    _append(folder, site, {"task": STREAM, "sent": [tag] if sent else [], "values": int(sent),
                           "held_back": [] if sent else [tag], "step": step})


class AuditedWriter:
    """A site's TensorBoard writer in the plain loop: every scalar audited, then written to
    ``writer``; with ``writer=None`` (the site does not stream) only audited as held back, as
    NVFlare's ``AuditStream`` does."""

    def __init__(self, writer, folder: str | Path, site: str):
        self.writer, self.folder, self.site = writer, folder, site

    def add_scalar(self, tag: str, value: float, step=None) -> None:
        audit_stream(self.folder, self.site, tag, step, self.writer is not None)
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def streamed(lines: list[dict]) -> dict[str, int]:
    """``{tag: scalars sent}`` from one site's audit lines (``read_audit(...)[site]``)."""
    out: dict[str, int] = {}
    for entry in lines:
        if entry.get("task") == STREAM:
            for tag in entry["sent"]:
                out[tag] = out.get(tag, 0) + 1
    return out


def read_audit(folder: str | Path) -> dict[str, list[dict]]:
    """Every site's audit lines, by site."""
    out = {}
    for path in sorted(Path(folder).glob("*.jsonl")):
        out[path.stem] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out
