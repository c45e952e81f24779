"""Federated runs in the real NVFlare simulator (tiny models, a few records, 2 rounds), the same
federation as a plain loop, and the server's arithmetic on its own."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from fedbio.errors import FedbioError
from fedbio.federation import FedConfig, bytes_of, run_federated
from fedbio.federation.aggregate import ServerOptimizer, pooled_scaler, weighted_mean
from fedbio.training.run import plan

SITES = ["site-1", "site-2", "site-3"]


def composition(split, mode: str = "fedavg"):
    cfg = plan(mode=mode, model="composition", profile="quick", split=str(split), epochs=8)
    return replace(cfg, train=replace(cfg.train, threads=1))


def esm_tiny(split):
    cfg = plan(mode="fedavg", model="esm2-tiny", tuning="full", profile="quick", split=str(split), epochs=2)
    return replace(cfg, data=replace(cfg.data, max_length=32), train=replace(cfg.train, threads=1))


def globals_of(run) -> dict[str, np.ndarray]:
    return load_file(str(run / "federation" / "server" / "global.safetensors"))


def assert_close(a: dict, b: dict, tol: float = 1e-6) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=tol, err_msg=k)


@pytest.fixture(scope="module")
def fedavg_run(tmp_path_factory, small_split):
    out = tmp_path_factory.mktemp("fed") / "fedavg"
    metrics = run_federated(composition(small_split), FedConfig(rounds=2), out, progress=False)
    return out, metrics


# -- in the simulator -------------------------------------------------------------------------
def test_fedavg_writes_a_run_folder_like_a_local_run(fedavg_run):
    out, m = fedavg_run
    for name in ("config.json", "manifest.json", "metrics.json", "model/model.safetensors",
                 "test_predictions.csv", "test_hard_predictions.csv"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["mode"] == "fedavg" and "algorithm" not in config["federation"]  # said once: the mode
    assert m["mode"] == "fedavg" and m["federation"]["engine"] == "nvflare"
    assert set(m["per_site"]) == set(SITES)
    for site in SITES:
        assert {"valid", "test", "test_hard"} <= set(m["per_site"][site])
        assert 0 <= m["per_site"][site]["test"]["accuracy"] <= 1
    assert m["test"]["n"] == 60 and m["test_hard"]["n"] == 30
    assert [r["round"] for r in m["rounds"]] == [0, 1, 2]
    assert m["federation"]["selected_round"] in (1, 2)
    assert len(m["bytes_per_round"]) == 2
    for row in m["bytes_per_round"]:
        assert set(row["up"]) == set(SITES) and min(row["up"].values()) > 0
    for folder in ("server", *SITES):
        assert list((out / "tb" / folder).glob("events.out.tfevents.*")), folder
    for site in SITES:  # every site's complete log stays in the run folder
        assert (out / "nvflare" / "fedbio" / site / "log.txt").stat().st_size > 0


def test_global_model_changes_every_round(fedavg_run):
    out, m = fedavg_run
    assert all(r["update_norm"] > 0 for r in m["rounds"][1:])
    initial = load_file(str(out / "federation" / "initial.safetensors"))
    last = load_file(str(out / "federation" / "server" / "last.safetensors"))
    assert max(float(np.abs(initial[k] - last[k]).max()) for k in initial) > 1e-3


def test_only_trainable_parameters_leave_a_site(fedavg_run):
    _, m = fedavg_run
    exchanged = m["federation"]["exchanged"]
    # The server refuses any reply whose names differ; every site was accepted in every round.
    assert exchanged["names"] == ["linear.bias", "linear.weight"]  # never the scaler buffers
    assert all(r["ok"] == SITES for r in m["rounds"][1:])
    assert all(v == exchanged["bytes"] for row in m["bytes_per_round"] for v in row["up"].values())
    shared = m["federation"]["shared_statistics"]  # once, before round 1: 841 sums per site
    assert shared["names"] == ["feature_mean", "feature_std"]
    assert shared["bytes_up"] == {site: (1 + 420 + 420) * 8 for site in SITES}


def test_fedprox_with_mu_zero_matches_fedavg(fedavg_run, small_split, tmp_path):
    out, m = fedavg_run
    prox = run_federated(composition(small_split, "fedprox"), FedConfig(rounds=2, mu=0.0),
                         tmp_path / "fedprox", progress=False)
    assert prox["mode"] == "fedprox"
    assert_close(globals_of(tmp_path / "fedprox"), globals_of(out))
    assert prox["test"]["accuracy"] == pytest.approx(m["test"]["accuracy"], abs=1e-6)


def test_a_raising_site_does_not_stop_the_run(small_split, tmp_path):
    start = time.time()
    m = run_federated(composition(small_split), FedConfig(rounds=2, min_sites=2, fail_sites=("site-2",)),
                      tmp_path / "failing", progress=False)
    assert time.time() - start < 90
    assert m["federation"]["failed_sites"] == {"site-2": {"1": "RuntimeError", "2": "RuntimeError"}}
    assert all(r["ok"] == ["site-1", "site-3"] for r in m["rounds"][1:])
    assert m["per_site"]["site-2"]["failed"] == "RuntimeError"
    assert m["test"]["n"] == 60


def test_esm_tiny_full_tuning_exchanges_learnable_parameters_only(small_split, tmp_path):
    from fedbio.data.tasks import load_task
    from fedbio.models import load_model
    from fedbio.models.classifier import trainable_state_dict
    from fedbio.training.learner import Learner

    cfg = esm_tiny(small_split)
    m = run_federated(cfg, FedConfig(rounds=2), tmp_path / "esm", progress=False)
    learner = Learner.build(cfg.model, cfg.data, cfg.train, load_task(small_split).codec(), progress=False)
    names = m["federation"]["exchanged"]["names"]
    assert names == sorted(trainable_state_dict(learner.model))
    buffers = {n for n, _ in learner.model.named_buffers()}
    assert buffers and not buffers & set(names)
    assert not any("contact_head" in n for n in names)
    assert all(r["ok"] == SITES and r["update_norm"] > 0 for r in m["rounds"][1:])
    assert m["cropped"]["max_length"] == 32
    load_model(tmp_path / "esm" / "model")  # the delivered global model loads like any other


# -- the same federation without NVFlare --------------------------------------------------------
def test_simulator_matches_the_plain_loop(fedavg_run, small_split, tmp_path):
    out, m = fedavg_run
    loop = run_federated(composition(small_split), FedConfig(rounds=2), tmp_path / "loop",
                         progress=False, engine="loop")
    assert loop["federation"]["engine"] == "loop"
    assert_close(globals_of(tmp_path / "loop"), globals_of(out))
    assert loop["test"]["accuracy"] == pytest.approx(m["test"]["accuracy"], abs=1e-6)


def test_fedopt_with_plain_sgd_step_is_fedavg_and_adam_differs(small_split, tmp_path):
    avg = run_federated(composition(small_split), FedConfig(rounds=2), tmp_path / "avg",
                        progress=False, engine="loop")
    sgd = run_federated(composition(small_split, "fedopt"), FedConfig(rounds=2, server_momentum=0.0),
                        tmp_path / "sgd", progress=False, engine="loop")
    adam = run_federated(composition(small_split, "fedopt"),
                         FedConfig(rounds=2, server_optimizer="adam", server_lr=0.05),
                         tmp_path / "adam", progress=False, engine="loop")
    assert sgd["mode"] == "fedopt" and avg["mode"] == "fedavg"
    assert_close(globals_of(tmp_path / "sgd"), globals_of(tmp_path / "avg"))
    a, b = globals_of(tmp_path / "adam"), globals_of(tmp_path / "avg")
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) > 1e-4
    assert adam["test"]["n"] == 60


def test_too_few_answering_sites_stop_the_run(small_split, tmp_path):
    fed = FedConfig(rounds=2, min_sites=2, fail_sites=("site-2", "site-3"))
    with pytest.raises(FedbioError, match="min_sites"):
        run_federated(composition(small_split), fed, tmp_path / "stopped", progress=False, engine="loop")
    assert not (tmp_path / "stopped").exists()


def test_bad_settings_are_refused(small_split, tmp_path):
    with pytest.raises(FedbioError, match="unknown federated --mode"):
        run_federated(composition(small_split, "local"), FedConfig(), tmp_path / "x", progress=False)
    with pytest.raises(FedbioError, match="--min-sites"):
        FedConfig(min_sites=4).validate(3)
    with pytest.raises(FedbioError, match="server optimizer"):
        FedConfig(server_optimizer="rmsprop").validate(3)


# -- server arithmetic ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_server_optimizer_follows_torch(kind):
    rng = np.random.default_rng(0)
    start = rng.normal(size=(4, 3)).astype(np.float32)
    averages = [start + rng.normal(scale=0.1, size=start.shape).astype(np.float32) for _ in range(3)]
    ours = ServerOptimizer(kind, lr=0.5, momentum=0.6, betas=(0.9, 0.99), eps=1e-3)
    param = torch.nn.Parameter(torch.tensor(start))
    ref = (torch.optim.SGD([param], lr=0.5, momentum=0.6) if kind == "sgd"
           else torch.optim.Adam([param], lr=0.5, betas=(0.9, 0.99), eps=1e-3))
    params = {"w": start}
    for avg in averages:
        params = ours.step(params, {"w": avg})
        param.grad = param.detach() - torch.tensor(avg)  # the "gradient" is global - average
        ref.step()
        np.testing.assert_allclose(params["w"], param.detach().numpy(), atol=1e-5)


def test_weighted_mean_is_in_site_order_and_weighted():
    a, b = {"w": np.array([1.0, 2.0], np.float32)}, {"w": np.array([3.0, 6.0], np.float32)}
    one = weighted_mean([("site-2", 3.0, b), ("site-1", 1.0, a)])
    two = weighted_mean([("site-1", 1.0, a), ("site-2", 3.0, b)])
    np.testing.assert_array_equal(one["w"], two["w"])
    np.testing.assert_allclose(one["w"], [2.5, 5.0])
    assert one["w"].dtype == np.float32


def test_pooled_scaler_matches_a_central_fit():
    from fedbio.models.composition import CompositionModel

    rng = np.random.default_rng(1)
    parts = [rng.normal(loc=i, size=(n, 5)).astype(np.float32) for i, n in enumerate((7, 11, 4))]
    stats = [{"n": np.array([len(x)], float), "sum": x.sum(0, dtype=np.float64),
              "sumsq": (x.astype(np.float64) ** 2).sum(0)} for x in parts]
    mean, std = pooled_scaler(stats)
    central = CompositionModel(2, n_features=5).fit_scaler(np.concatenate(parts))
    np.testing.assert_allclose(mean, central.mean.numpy(), atol=1e-5)
    np.testing.assert_allclose(std, central.std.numpy(), atol=1e-5)


def test_bytes_of_counts_numpy_and_torch():
    assert bytes_of({"a": np.zeros((2, 3), np.float32), "b": torch.zeros(4, dtype=torch.float64)}) == 24 + 32


def test_imports_stay_lean():
    code = ("import sys, fedbio.federation, fedbio.federation.site; "
            "assert 'nvflare' not in sys.modules; "
            "heavy = [m for m in ('transformers', 'pandas', 'matplotlib', 'peft') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
