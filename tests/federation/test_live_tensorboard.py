"""A live TensorBoard: curves appear while a run trains, in ``OUT.running/tb/``, and stay in
``OUT/tb/``. Federated runs stream through NVFlare's experiment tracking (sites -> server), and
every streamed scalar is in the sending site's audit."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

from nvflare.apis.analytix import ANALYTIC_EVENT_TYPE, AnalyticsDataType
from nvflare.apis.fl_constant import FLContextKey, ReservedKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.utils.analytix_utils import create_analytic_dxo

from fedbio.federation import FedConfig, run_federated
from fedbio.federation.audit import read_audit, streamed
from fedbio.federation.nvflare.filters import AuditStream
from fedbio.training.run import plan, run
from fedbio.training.tensorboard import read_scalars

SITES = ["site-1", "site-2", "site-3"]


def composition(split, mode: str, epochs: int):
    cfg = plan(mode=mode, model="composition", profile="quick", split=str(split), epochs=epochs)
    return replace(cfg, train=replace(cfg.train, threads=1))


def counts(folder: Path) -> dict[str, int]:
    return {tag: len(points) for tag, points in read_scalars(folder).items()}


class Watcher(threading.Thread):
    """Reads ``OUT.running/tb`` while the run goes on (the run itself holds the main thread)."""

    def __init__(self, out: Path):
        super().__init__(daemon=True)
        self.running = out.with_name(out.name + ".running")
        self.out, self.seen, self.stop = out, None, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.seen is None:
            time.sleep(0.5)
            tb = self.running / "tb"
            try:
                seen = {name: counts(tb / name) for name in (*SITES, "server")}
            except Exception:  # noqa: BLE001 - a file caught mid-write: look again
                continue
            steps = all(seen[s].get(f"{s}/train_loss_step") for s in SITES)
            if steps and seen["server"].get("global/valid_accuracy"):
                done = (self.running / "federation" / "server" / "done.json").exists()
                self.seen = {"scalars": seen, "job_done": done, "out_exists": self.out.exists()}


def test_a_federated_run_is_watched_while_it_trains(small_split, tmp_path):
    out = tmp_path / "live"
    watcher = Watcher(out)
    watcher.start()
    fed = FedConfig(rounds=3, slow_sites=("site-2",), slow_seconds=5, sim_timeout=120)
    try:
        m = run_federated(composition(small_split, "fedavg", 3), fed, out, progress=False)
    finally:
        watcher.stop.set()
        watcher.join(10)
    assert watcher.seen is not None, "no per-site step loss and global validation before the end"
    assert not watcher.seen["job_done"] and not watcher.seen["out_exists"]  # seen mid-run
    # after the run: the same curves, whole, in OUT/tb
    after = {name: counts(out / "tb" / name) for name in (*SITES, "server")}
    assert after["server"]["global/valid_accuracy"] == 4          # rounds 0..3
    assert after["server"]["sites/aggregated"] == 3
    for site in SITES:
        assert after[site][f"{site}/train_loss"] == 3              # one epoch per round
        assert after[site][f"{site}/global_valid_accuracy"] == 3   # the model each round got
        assert after[site][f"{site}/train_loss_step"] >= 3
        assert after[site][f"{site}/train_loss_step"] >= watcher.seen["scalars"][site][f"{site}/train_loss_step"]
    # every streamed scalar is in its site's audit, and nothing the audit does not list arrived
    audit = read_audit(out / "federation" / "audit")
    assert {site: streamed(audit[site]) for site in SITES} == {site: after[site] for site in SITES}
    assert m["rounds"][-1]["ok"] == SITES


def _event(tag: str, value: float, step: int, site: str = "site-1") -> FLContext:
    ctx = FLContext()
    ctx.set_prop(ReservedKey.IDENTITY_NAME, site, private=False, sticky=True)
    data = create_analytic_dxo(tag, value, AnalyticsDataType.SCALAR, global_step=step).to_shareable()
    ctx.set_prop(FLContextKey.EVENT_DATA, data, private=True, sticky=False)
    return ctx


def test_with_streaming_off_the_audit_shows_each_scalar_held_back(tmp_path):
    """``FedConfig.stream_metrics=False``: the site's widget forwards nothing (forwarding needs an
    NVFlare engine, which this bare context lacks: it would raise) and audits each as held back."""
    widget = AuditStream(str(tmp_path), send=False)
    widget.handle_event(ANALYTIC_EVENT_TYPE, _event("site-1/train_loss_step", 0.5, 7))
    widget.handle_event("some_other_event", _event("site-1/x", 1.0, 1))
    lines = read_audit(tmp_path)["site-1"]
    assert lines == [{"task": "stream", "sent": [], "values": 0,
                      "held_back": ["site-1/train_loss_step"], "step": 7}]
    assert streamed(lines) == {}


def test_a_central_run_shows_its_curve_while_it_trains(small_split, tmp_path):
    out = tmp_path / "central"
    seen = {}

    def after_epoch(name: str, row: dict) -> None:
        if row["epoch"] == 1:
            seen.update(counts(out.with_name("central.running") / "tb" / name))
            seen["out_exists"] = out.exists()

    run(composition(small_split, "central", 3), out, progress=False, on_epoch=after_epoch)
    assert seen["central/train_loss_step"] >= 1 and seen["central/train_loss"] == 1
    assert seen["central/valid_accuracy"] == 1 and not seen["out_exists"]
    final = counts(out / "tb" / "central")
    assert final["central/train_loss"] == 3 and final["central/train_loss_step"] == 3 * seen["central/train_loss_step"]


class Recorder:
    def __init__(self):
        self.points, self.flushes = [], 0

    def add_scalar(self, tag, value, step):
        self.points.append((tag, value, step))

    def flush(self):
        self.flushes += 1


def test_a_sites_step_losses_are_streamed_at_most_once_a_second():
    """A small model trains hundreds of steps a second; a message per step made a composition
    run's rounds 2.5x slower. The stream carries the mean since the last point instead."""
    from fedbio.training.tensorboard import StepsThrottled

    now = [0.0]
    sink = Recorder()
    writer = StepsThrottled(sink, every=1.0, clock=lambda: now[0])
    for step in range(1, 11):               # ten steps in 0.45 s: the first goes out at once
        writer.add_scalar("site-1/train_loss_step", float(step), step)
        now[0] += 0.05
    writer.add_scalar("site-1/train_loss", 5.5, 1)   # anything else passes at once
    now[0] = 1.2
    writer.add_scalar("site-1/train_loss_step", 11.0, 11)   # a second since the last point
    writer.add_scalar("site-1/train_loss_step", 12.0, 12)
    writer.flush()                           # an epoch's end: nothing due yet, the writer flushed
    now[0] = 2.3
    writer.add_scalar("site-1/train_loss_step", 13.0, 13)   # due: the mean of 12 and 13
    writer.add_scalar("site-1/train_loss_step", 14.0, 14)
    writer.finish()                          # the round's end: what is pending goes out
    writer.finish()                          # nothing pending: nothing more
    assert sink.points == [("site-1/train_loss_step", 1.0, 1), ("site-1/train_loss", 5.5, 1),
                           ("site-1/train_loss_step", 6.5, 11), ("site-1/train_loss_step", 12.5, 13),
                           ("site-1/train_loss_step", 14.0, 14)]
    assert sink.flushes == 3
