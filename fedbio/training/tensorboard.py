"""TensorBoard files of a run: written while it trains, read back as plain numbers.

    with run_writer(run_dir, "central") as writer:      # RUN/tb/central (OUT.running/tb/... live)
        learner.fit(train, valid, epochs, writer=writer, tag="central")
    read_scalars("runs/fedavg/tb/site-1")                 # {tag: [(step, value), ...]}

``fedbio.training.trainer.fit`` writes every step's training loss and every epoch's scores and
flushes each epoch, so ``tensorboard --logdir runs/`` shows a run while it goes. A federated
run's files are written by the server from what the sites stream
(``fedbio.federation.nvflare.tracking``); ``read_scalars`` reads either kind, and BioNeMo's own.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path


@contextmanager
def run_writer(run_dir: str | Path, name: str):
    """A TensorBoard ``SummaryWriter`` for ``RUN/tb/<name>``, closed (and flushed) at the end."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(Path(run_dir) / "tb" / name))
    try:
        yield writer
    finally:
        writer.close()


def read_scalars(experiment_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every TensorBoard scalar under ``experiment_dir``: tag -> [(step, value), ...] by step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, dict[int, float]] = {}
    files = sorted(Path(experiment_dir).rglob("events.out.tfevents.*"))
    for path in files:
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            points = series.setdefault(tag, {})
            for event in acc.Scalars(tag):
                points[int(event.step)] = float(event.value)  # a later file wins a step
    return {tag: sorted(points.items()) for tag, points in sorted(series.items())}


STEP_TAG = "train_loss_step"   # the per-step training loss (``fedbio.training.trainer.fit``)


class StepsThrottled:
    """A writer that passes on every scalar but the per-step training loss, which it sends as
    the mean of the steps since its last point, at most one point every ``every`` seconds (and
    the rest at ``finish``, the end of a round). For a stream to a server: a small model trains
    hundreds of steps a second, and a message per step made a composition run's rounds 2.5x
    slower."""

    def __init__(self, writer, every: float = 1.0, clock=None):
        import time

        self.writer, self.every, self.clock = writer, every, clock or time.monotonic
        self.pending: dict[str, list] = {}   # tag -> [sum, count, last step, time of last point]

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        if not tag.endswith(STEP_TAG):
            self.writer.add_scalar(tag, value, step)
            return
        now = self.clock()
        entry = self.pending.setdefault(tag, [0.0, 0, step, now - self.every])
        entry[0], entry[1], entry[2] = entry[0] + float(value), entry[1] + 1, step
        if now - entry[3] >= self.every:
            self._send(tag, entry, now)

    def _send(self, tag: str, entry: list, now: float) -> None:
        if entry[1]:
            self.writer.add_scalar(tag, entry[0] / entry[1], entry[2])
        entry[0], entry[1], entry[3] = 0.0, 0, now

    def flush(self) -> None:
        """Each epoch: what is due goes out, and the writer is flushed."""
        now = self.clock()
        for tag, entry in self.pending.items():
            if now - entry[3] >= self.every:
                self._send(tag, entry, now)
        if hasattr(self.writer, "flush"):
            self.writer.flush()

    def finish(self) -> None:
        """The end of a round: every pending mean goes out."""
        now = self.clock()
        for tag, entry in self.pending.items():
            self._send(tag, entry, now)
        if hasattr(self.writer, "flush"):
            self.writer.flush()
