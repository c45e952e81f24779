"""Progress on long work: bars on a terminal or in Jupyter, a few plain lines everywhere else.

    bar = progress_bar(total=500, desc="site-1", unit="step")   # None when progress is off
    lines = ProgressLines()                                      # throttled, for logs
    lines.say("site-1", "site-1 epoch 3/8: train loss 1.234")

Bars use tqdm's automatic mode (``disable=None``): shown on a terminal and in a notebook, off
when output goes to a file or a pipe (a CI log, ``make demo > log``), where a bar would write a
line per update. There, ``ProgressLines`` prints at most one line per key every ``interval``
seconds (one per site and epoch at most), so a long run shows it is alive without flooding the log.
"""

from __future__ import annotations

import sys
import time

LINE_INTERVAL = 15.0   # seconds between two progress lines for the same key (site, run)


def interactive() -> bool:
    """True on a terminal or in a Jupyter kernel: where progress bars belong."""
    if "ipykernel" in sys.modules:
        return True
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True):
    """A tqdm bar where bars belong (see ``interactive``), else None."""
    if not enabled or not interactive():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, mininterval=1.0, disable=None)


class ProgressLines:
    """One line per ``key`` at most every ``interval`` seconds (``force`` prints regardless)."""

    def __init__(self, interval: float = LINE_INTERVAL, stream=None):
        self.interval = interval
        self.stream = stream
        self.last: dict[str, float] = {}

    def say(self, key: str, text: str, force: bool = False) -> bool:
        now = time.monotonic()
        if not force and now - self.last.get(key, -1e9) < self.interval:
            return False
        self.last[key] = now
        print(text, file=self.stream or sys.stderr, flush=True)
        return True
