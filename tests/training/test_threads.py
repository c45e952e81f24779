"""Torch threads: the config's, else the cores (``$FEDBIO_THREADS`` pins them) over the processes
that share them; the pin is what makes committed notebook numbers the same on any machine."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from fedbio.config import TrainConfig, cores
from fedbio.errors import FedbioError
from fedbio.training.trainer import set_threads


@pytest.fixture(autouse=True)
def _keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_unset_means_the_machine(monkeypatch):
    monkeypatch.delenv("FEDBIO_THREADS", raising=False)
    assert cores() == (os.cpu_count() or 1)


@pytest.mark.parametrize(("pinned", "concurrent", "expected"), [(4, 1, 4), (4, 2, 2), (4, 3, 1), (1, 3, 1)])
def test_the_pin_is_shared_between_concurrent_processes(monkeypatch, pinned, concurrent, expected):
    monkeypatch.setenv("FEDBIO_THREADS", str(pinned))
    assert set_threads(TrainConfig(), concurrent) == expected
    assert torch.get_num_threads() == expected


def test_a_config_value_wins_over_the_pin(monkeypatch):
    monkeypatch.setenv("FEDBIO_THREADS", "4")
    assert set_threads(TrainConfig(threads=1), 1) == 1


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5", "²", "٣", "99999999999999999999", "1025"])
def test_a_bad_pin_is_refused(monkeypatch, bad):
    monkeypatch.setenv("FEDBIO_THREADS", bad)
    with pytest.raises(FedbioError, match="FEDBIO_THREADS must be a whole number from 1 to 1024"):
        cores()


def test_a_bad_pin_stops_a_run_before_it_writes(tmp_path):
    env = {**os.environ, "FEDBIO_THREADS": "many"}
    done = subprocess.run([sys.executable, "-m", "fedbio", "run", "--mode", "local", "--model", "composition",
                           "--out", str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("fedbio: error: FEDBIO_THREADS must be a whole number")
    assert list(tmp_path.iterdir()) == []


def test_the_sites_of_a_federated_run_share_the_pin(monkeypatch, small_split, tmp_path):
    from fedbio.federation import FedConfig
    from fedbio.federation.runner import site_spec
    from fedbio.training.run import plan, prepare_task

    monkeypatch.setenv("FEDBIO_THREADS", "6")
    cfg = plan(mode="fedavg", model="composition", profile="quick", split=str(small_split))
    task = prepare_task(cfg, tmp_path)
    assert site_spec(cfg, FedConfig(), task, tmp_path)["threads"] == 6 // len(task.sites)
