"""Site-level DP-FedAvg end to end: epsilon as Opacus computes it, the clip in every site's audit,
z = 0 equal to the unweighted mean, nothing released that is not accounted, refusals."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedbio.cli import main
from fedbio.errors import FedbioError
from fedbio.federation import FedConfig, run_federated
from fedbio.federation.audit import read_audit
from fedbio.privacy.accounting import fedavg_epsilon
from fedbio.privacy.config import PrivacyConfig
from fedbio.training.run import plan

SITES = ["site-1", "site-2", "site-3"]
ROUNDS = 3


def composition(split, epochs: int = 3, model: str = "composition"):
    cfg = plan(mode="fedavg", model=model, profile="quick", split=str(split), epochs=epochs,
               tuning=None if model == "composition" else "head")
    return replace(cfg, train=replace(cfg.train, threads=1))


def last_model(run) -> dict:
    return load_file(str(run / "federation" / "server" / "last.safetensors"))


def test_a_dp_run_in_the_simulator_is_accounted_clipped_and_audited(small_split, tmp_path):
    out = tmp_path / "dp"
    privacy = PrivacyConfig(clip=0.5, noise=1.5)
    m = run_federated(composition(small_split), FedConfig(rounds=ROUNDS), out, progress=False,
                      privacy=privacy)
    p = m["privacy"]
    assert p["epsilon"] == pytest.approx(fedavg_epsilon(1.5, ROUNDS, 1e-5), rel=1e-6)
    assert (p["noise_multiplier"], p["clip"], p["delta"], p["rounds"], p["sample_rate"]) == \
        (1.5, 0.5, 1e-5, ROUNDS, 1.0)
    assert p["accountant"]["name"].startswith("opacus") and p["accountant"]["version"]
    assert p["where"] == "server" and m["federation"]["selected_round"] == ROUNDS   # the last model
    handled = {r["release"]: r["handled"] for r in p["releases"]}
    assert all(h.startswith(("accounted", "not sent", "sent, not accounted")) for h in handled.values())
    assert any("feature statistics" in r for r in handled)            # composition: fixed scaling
    # every update each site sent was clipped to S, and the audit says by how much
    audit = read_audit(out / "federation" / "audit")
    for site in SITES:
        trains = [e for e in audit[site] if e["task"] == "train"]
        assert len(trains) == ROUNDS and all(e["dp"]["clip"] == 0.5 for e in trains)
        assert all(e["dp"]["clipped_norm"] <= 0.5 * (1 + 1e-6) for e in trains)
        assert all(e["dp"]["norm"] > 0 and e["dp"]["noise_sd"] == 0 for e in trains)
        assert not [e for e in audit[site] if e["task"] in ("stats", "validate", "stream")]
    # nothing but the update left: no scores, no curve, no record count, no streamed scalars
    history = json.loads((out / "federation" / "server" / "history.json").read_text())
    for row in history["rounds"][1:]:
        for info in row["sites"].values():
            assert info["metrics"] == {} and info["curve"] == [] and info["n_train"] == 1.0
    assert "final_validate" not in history and not (out / "tb" / "site-1").exists()
    # the watchdog's progress files say only that a site goes on, not its loss
    for site in SITES:
        progress = json.loads((out / "federation" / "progress" / f"{site}.json").read_text())
        assert progress["train_loss"] is None and progress["round"] == ROUNDS
    config = json.loads((out / "config.json").read_text())
    assert config["privacy"]["clip"] == 0.5 and config["federation"]["stream_metrics"] is False
    # fedbio report: epsilon in the table
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    table = (tmp_path / "report" / "results.csv").read_text()
    assert f"ε (site-level DP),,{p['epsilon']:.3g} (δ 1e-05)" in table


def test_with_no_noise_and_a_loose_clip_dp_is_the_unweighted_mean(small_split, tmp_path):
    """An encoder model's head: no scaler, so nothing differs but the aggregation (the composition
    model's scaler is pooled from the sites in plain FedAvg, fixed under DP)."""
    cfg = composition(small_split, model="esm2-tiny")
    run_federated(cfg, FedConfig(rounds=ROUNDS, weighted=False), tmp_path / "plain",
                          progress=False, engine="loop")
    dp = run_federated(cfg, FedConfig(rounds=ROUNDS), tmp_path / "dp0", progress=False, engine="loop",
                       privacy=PrivacyConfig(clip=1e6, noise=0.0))
    a, b = last_model(tmp_path / "plain"), last_model(tmp_path / "dp0")
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-4, atol=1e-6)
    assert dp["privacy"]["epsilon"] is None            # z = 0: no privacy, and it says so
    noisy = run_federated(cfg, FedConfig(rounds=ROUNDS), tmp_path / "dp2", progress=False,
                          engine="loop", privacy=PrivacyConfig(clip=0.5, noise=0.2))
    # z > 0: other predictions on the test set (this tiny split's labels are too easy to move
    # accuracy, so the per-record probabilities are compared)
    assert noisy["privacy"]["epsilon"] > 0
    assert (tmp_path / "dp2" / "test_predictions.csv").read_text() != \
        (tmp_path / "plain" / "test_predictions.csv").read_text()
    # the comparison can fail: sample-weighted FedAvg is another model
    run_federated(cfg, FedConfig(rounds=ROUNDS), tmp_path / "weighted", progress=False,
                             engine="loop")
    name = sorted(a)[-1]
    assert not np.allclose(last_model(tmp_path / "weighted")[name], a[name])


def test_site_side_noise_is_split_over_the_sites_and_secret(small_split, tmp_path):
    """The noise is never the run's seed's (which metrics.json records: anyone could draw the
    same noise and subtract it); only an explicit noise_seed repeats it, and says so."""
    cfg = composition(small_split, epochs=2)
    runs = {}
    for name, seed in (("a", None), ("b", None), ("c", 5), ("d", 5)):
        privacy = PrivacyConfig(clip=0.5, noise=2.0, where="site", noise_seed=seed)
        runs[name] = run_federated(cfg, FedConfig(rounds=2), tmp_path / name, progress=False,
                                   engine="loop", privacy=privacy)
    audit = read_audit(tmp_path / "a" / "federation" / "audit")
    sds = [e["dp"]["noise_sd"] for lines in audit.values() for e in lines]
    assert len(sds) == 6 and all(sd == pytest.approx(2.0 * 0.5 / math.sqrt(3)) for sd in sds)
    model = {name: last_model(tmp_path / name) for name in runs}
    assert not np.array_equal(model["a"]["linear.weight"], model["b"]["linear.weight"])
    assert all(np.array_equal(model["c"][k], model["d"][k]) for k in model["c"])
    assert "never recorded" in runs["a"]["privacy"]["noise"]
    assert "NOT private" in runs["c"]["privacy"]["noise"]


def test_the_command_line_solves_z_for_a_target_epsilon(small_split, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["run", "--mode", "fedavg", "--model", "composition", "--profile", "quick",
                 "--split", str(small_split), "--epochs", "2", "--rounds", "2", "--dp-clip", "1",
                 "--dp-epsilon", "8", "--quiet", "--out", str(out)])
    assert code == 0 and "privacy: site-level DP-FedAvg" in capsys.readouterr().out
    eps = json.loads((out / "metrics.json").read_text())["privacy"]["epsilon"]
    assert 0.98 * 8 <= eps <= 8


@pytest.mark.parametrize(("args", "words"), [
    (["--task", "regression"], "label scale is fitted"),
    (["--dp-where", "site", "--min-sites", "2"], "every site must answer"),
])
def test_dp_runs_that_would_release_more_are_refused(small_split, tmp_path, capsys, args, words):
    out = tmp_path / "refused"
    code = main(["run", "--mode", "fedavg", "--model", "composition", "--profile", "quick",
                 "--split", str(small_split), "--dp-clip", "1", "--dp-noise", "1", *args,
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and words in err and err.startswith("fedbio: error:") and len(err.splitlines()) == 1
    assert not out.exists() and not out.with_name("refused.running").exists()


def test_the_report_keeps_runs_of_other_dp_settings_apart():
    """Two runs that differ in clip and delta used to be averaged as two seeds of one run."""
    from fedbio.reporting.runs import group_name

    base = {"model": "composition", "mode": "fedavg"}
    dp = {"noise_multiplier": 2.0, "clip": 5.0, "delta": 1e-5, "where": "server"}
    names = {group_name({**base, "privacy": dict(dp, **change)})
             for change in ({}, {"clip": 0.01}, {"delta": 1e-3}, {"where": "site"})}
    assert len(names) == 4 and group_name(base) not in names


def test_streaming_cannot_be_forced_on_under_dp(small_split, tmp_path):
    with pytest.raises(FedbioError, match="not accounted under DP"):
        run_federated(composition(small_split), FedConfig(stream_metrics=True), tmp_path / "s",
                      progress=False, engine="loop", privacy=PrivacyConfig(clip=1.0, noise=1.0))
