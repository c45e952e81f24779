"""What a running federation shows and what its simulator run cost, read from the files it writes.

    watch = FederationProgress(rounds=3, metric="accuracy")  # the watchdog calls watch(path)
    simulator_phases(run_dir / "federation" / "simulator.json")
    # {"start_up": 9.1, "federation": 30.2, "shutdown": 0.4, "attempts": 1, "cpu_seconds": {...}}

``fedbio.federation.runner.federate`` hands ``FederationProgress`` to the NVFlare simulator's
watchdog (``fedbio.federation.nvflare.watch``, its ``on_progress``), which calls it with every
``history.json`` the server and epoch file a site rewrites; after the run it puts
``simulator_phases`` into the history (``metrics.json``: ``federation.simulator_seconds``).
Nothing here imports NVFlare.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from fedbio.progress import ProgressLines


class FederationProgress:
    """Progress lines of a federated run, from the files it writes as it goes (the watchdog's
    ``on_progress``): one per finished round, and per site and local epoch at most every
    ``fedbio.progress.LINE_INTERVAL`` seconds."""

    def __init__(self, rounds: int, metric: str):
        self.rounds, self.metric = rounds, metric
        self.lines = ProgressLines()
        self.shown = 0  # rounds reported so far
        self.steps: list[str] = []  # FLuID's steps reported so far
        self.start = time.monotonic()

    def _elapsed(self) -> str:
        seconds = int(time.monotonic() - self.start)
        return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"

    def __call__(self, path: Path) -> None:
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            return  # replaced while read: the next change brings it again
        if path.name == "history.json":
            for step, info in list(entry.get("steps", {}).items())[len(self.steps):]:   # FLuID's
                self.lines.say("step", f"{step} done, {self._elapsed()}: {len(info.get('ok', []))} of "
                               f"{len(entry['sites'])} sites" if step != "student" else
                               f"student trained at the server, {self._elapsed()}", force=True)
                self.steps.append(step)
            rows = entry.get("rounds", [])
            for row in rows[self.shown + 1:]:
                before = rows[row["round"] - 1].get("global_valid") or {}
                score = (f"; the global model it started from: valid {self.metric} "
                         f"{before[self.metric]:.4g}" if self.metric in before else "")
                self.lines.say("round", f"round {row['round']}/{self.rounds} done, {self._elapsed()}: "
                               f"{len(row.get('ok', []))} of {len(entry['sites'])} sites trained{score}",
                               force=True)
                self.shown = row["round"]
        elif "epoch" in entry:
            loss = entry.get("train_loss")
            said = f": train loss {loss:.4f}" if isinstance(loss, float) else ""   # none under DP
            where = entry["step"] if "step" in entry else f"round {entry['round']}/{entry['rounds']}"
            self.lines.say(path.stem, f"{path.stem} {where}, epoch "
                           f"{entry['epoch']}/{entry['epochs']}{said}, {self._elapsed()}")


def simulator_phases(path: Path) -> dict | None:
    """Where the simulator's time went (seconds), from the watchdog's ``simulator.json``:
    ``start_up`` (process start to the first local epoch a site finished), ``federation`` (from
    there to the server's ``done.json``), ``shutdown`` (from there until every process was gone),
    and the CPU seconds each process used (``simulator``, ``site-N``)."""
    try:
        t = json.loads(path.read_text())
        first = t.get("first_progress", t["done"])
        return {"start_up": round(first - t["started"], 2), "federation": round(t["done"] - first, 2),
                "shutdown": round(t["ended"] - t["done"], 2), "attempts": t["attempts"],
                "cpu_seconds": t.get("cpu_seconds")}
    except (OSError, ValueError, KeyError, TypeError):
        return None
