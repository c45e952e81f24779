"""Filters on a site's update: selective sharing (``--share-fraction``) and NVFlare's SVT
(``--svt``), in the real simulator; what the server received (checked there), what each site's
audit says, the epsilon and cosine reported, and the refusals."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedbio.cli import main
from fedbio.federation import FedConfig, run_federated
from fedbio.federation.audit import read_audit
from fedbio.federation.server import Reply, Server, ServerSettings
from fedbio.privacy.config import PrivacyConfig
from fedbio.privacy.sharing import cosine, nonzero, top_fraction, values
from fedbio.training.run import plan

SITES = ["site-1", "site-2", "site-3"]


def test_top_fraction_keeps_exactly_the_largest_entries_and_clips_them():
    update = {"a": np.array([[0.5, -3.0], [0.1, 2.0]], np.float32), "b": np.array([-1.0, 0.0, 4.0])}
    sent, kept = top_fraction(update, 3 / 7)          # floor(3/7 * 7) = 3 of 7 entries
    assert kept == 3 and nonzero(sent) == 3 and sent["a"].dtype == np.float32
    assert sent["a"].tolist() == [[0.0, -3.0], [0.0, 2.0]] and sent["b"].tolist() == [0.0, 0.0, 4.0]
    clipped, _ = top_fraction(update, 3 / 7, clip=1.0)
    assert clipped["a"].tolist() == [[0.0, -1.0], [0.0, 1.0]] and clipped["b"].tolist() == [0, 0, 1.0]
    ties = {"t": np.ones(10)}
    assert nonzero(top_fraction(ties, 0.25)[0]) == 2   # ties never let more through
    assert nonzero(top_fraction(update, 0.1)[0]) == 0 and cosine(update, update) == pytest.approx(1.0)


def share_settings(tmp_path, limit_fraction: float) -> ServerSettings:
    return ServerSettings(run_dir=str(tmp_path), num_rounds=1, key_metric="accuracy",
                          update_filter={"kind": "share", "fraction": limit_fraction, "clip": None})


def test_the_server_refuses_an_update_with_more_non_zero_entries_than_the_filter_allows(tmp_path):
    """A site that sends a dense update (a site not running the filter, or one that lies) is
    refused for the round on the server's own count; the others are averaged."""
    params = {"w": np.zeros(100, np.float32)}
    sparse = {"w": np.r_[np.ones(10), np.zeros(90)].astype(np.float32)}
    dense = {"w": np.ones(100, np.float32)}

    def ask(task, p, meta, targets, rnd):
        if task != "train":
            return {s: Reply({}, {"valid_accuracy": 0.5, "valid_n": 1}) for s in targets}, {}
        sent = {"site-1": sparse, "site-2": sparse, "site-3": dense}
        return {s: Reply(sent[s], {}, {"NUM_STEPS_CURRENT_ROUND": 1.0}) for s in targets}, {}

    server = Server(replace(share_settings(tmp_path, 0.1), min_sites=2), SITES)
    history = server.run(ask, params)
    row = history["rounds"][1]
    assert row["ok"] == ["site-1", "site-2"] and "100 non-zero entries > 10" in row["failed"]["site-3"]
    assert row["filter"] == {"kind": "share", "entries": 100, "allowed": 10,
                             "nonzero": {"site-1": 10, "site-2": 10}}
    from safetensors.numpy import load_file

    last = load_file(str(tmp_path / "federation" / "server" / "last.safetensors"))["w"]
    assert last.tolist() == sparse["w"].tolist()       # global (zeros) + the mean of the updates


def fed_run(small_split, out: Path, privacy: PrivacyConfig, rounds: int = 2) -> dict:
    cfg = plan(mode="fedavg", model="composition", profile="quick", split=str(small_split), epochs=4)
    cfg = replace(cfg, train=replace(cfg.train, threads=1))
    return run_federated(cfg, FedConfig(rounds=rounds), out, progress=False, privacy=privacy)


def test_selective_sharing_in_the_simulator_sends_at_most_f_of_the_entries(small_split, tmp_path):
    out = tmp_path / "share"
    m = fed_run(small_split, out, PrivacyConfig(share_fraction=0.1, share_clip=0.05))
    history = json.loads((out / "federation" / "server" / "history.json").read_text())
    entries = history["exchanged"]["values"]
    allowed = math.floor(0.1 * entries)
    for row in history["rounds"][1:]:   # what the server received, counted there
        assert row["ok"] == SITES and row["filter"]["allowed"] == allowed
        assert all(0 < n <= allowed for n in row["filter"]["nonzero"].values())
    audit = read_audit(out / "federation" / "audit")
    for site in SITES:
        trains = [e for e in audit[site] if e["task"] == "train"]
        assert len(trains) == 2 and all(e["filter"]["kept"] == allowed for e in trains)
        assert all(0 < e["filter"]["cosine"] <= 1 for e in trains)
    block = m["privacy"]["update_filter"]
    assert block["kind"] == "share" and block["clip"] == 0.05 and block["entries"] == entries
    assert block["received_nonzero_max_fraction"] <= 0.1 and 0 < block["cosine_mean"] < 1
    assert "final_validate" in history   # not DP: the sites still score the global model


def test_svt_in_the_simulator_reports_its_epsilon_and_how_much_of_the_update_survives(small_split, tmp_path):
    out = tmp_path / "svt"
    m = fed_run(small_split, out, PrivacyConfig(svt=True, svt_fraction=0.2, svt_gamma=0.01))
    block = m["privacy"]["update_filter"]
    history = json.loads((out / "federation" / "server" / "history.json").read_text())
    entries = history["exchanged"]["values"]
    n_upload = math.ceil(0.2 * entries)
    # NVFlare's ledger: selection epsilon + release epsilon (n_upload * noise_var) per call
    per_call = 0.1 + n_upload * 0.1
    assert block["epsilon_per_round"] == {s: [pytest.approx(per_call)] * 2 for s in SITES}
    assert block["epsilon_total"] == pytest.approx(2 * per_call)
    assert set(block["cosine_to_true_update"]) == set(SITES)
    assert all(-1 <= c <= 1 for row in block["cosine_to_true_update"].values() for c in row)
    for row in history["rounds"][1:]:
        assert row["ok"] == SITES and all(0 < n <= n_upload for n in row["filter"]["nonzero"].values())
    for lines in read_audit(out / "federation" / "audit").values():
        trains = [e for e in lines if e["task"] == "train"]
        assert [e["filter"]["kind"] for e in trains] == ["svt", "svt"]
        assert all(e["filter"]["sent"] <= n_upload for e in trains)
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    table = (tmp_path / "report" / "results.csv").read_text()
    assert f"{2 * per_call:.1f}" in table and "cosine to true update" in table


def test_svt_noise_is_not_the_seeded_generator_s_and_leaves_it_as_it_was():
    """NVFlare's SVTPrivacy draws from numpy's global generator, which a seeded run makes
    predictable; fedbio's filter draws it from the OS's entropy and restores the generator."""
    from nvflare.apis.dxo import DXO, DataKind, from_shareable
    from nvflare.apis.fl_context import FLContext

    from fedbio.federation.nvflare.filters import SparseVector

    svt = SparseVector(fraction=0.5, epsilon=0.1, noise_var=0.1, gamma=0.01, tau=1e-6)
    update = {"w": np.linspace(-0.02, 0.02, 200).astype(np.float32)}

    def filtered():
        dxo = DXO(DataKind.WEIGHTS, {k: v.copy() for k, v in update.items()},
                  meta={"update": 1, "NUM_STEPS_CURRENT_ROUND": 37.0})
        return from_shareable(svt.process(dxo.to_shareable(), FLContext()))

    np.random.seed(0)
    first = filtered()
    after = np.random.random()
    np.random.seed(0)
    second = filtered()
    assert np.random.random() == after                       # the global generator untouched
    assert not np.array_equal(first.data["w"], second.data["w"])   # noise not from the seed
    assert first.meta["NUM_STEPS_CURRENT_ROUND"] == 37.0 and first.meta["svt_sent"] <= 100
    assert first.meta["svt_epsilon"] == pytest.approx(0.1 + 100 * 0.1)
    assert -1 <= first.meta["svt_cosine"] <= 1 and values(first.data) == 200


@pytest.mark.parametrize("args, words", [
    (["--share-fraction", "0"], "--share-fraction is 0.0"),
    (["--share-fraction", "1.5"], "--share-fraction is 1.5"),
    (["--share-fraction", "nan"], "--share-fraction is nan"),
    (["--share-fraction", "0.1", "--share-clip", "-1"], "--share-clip is -1"),
    (["--share-clip", "0.1"], "applies only to selective sharing"),
    (["--svt-gamma", "0.1"], "applies only to SVT runs"),
    (["--svt", "--svt-gamma", "0"], "--svt-gamma is 0"),
    (["--svt", "--svt-fraction", "2"], "--svt-fraction is 2"),
    (["--svt", "--share-fraction", "0.1"], "choose one filter"),
    (["--svt", "--dp-sgd-clip", "1", "--dp-sgd-noise", "1"], "with --dp-*"),
    (["--svt", "--svt-tau", "1e308"], "a site would loop without end"),
    (["--svt", "--svt-epsilon", "1e6", "--svt-gamma", "1e-5"], "--svt-tau is 1e-06"),
    (["--svt", "--svt-epsilon", "1e308"], "--svt-epsilon is 1e+308"),
    (["--svt", "--svt-gamma", "1e308"], "--svt-gamma is 1e+308"),
    (["--svt", "--svt-noise-var", "1e308"], "--svt-noise-var is 1e+308"),
    (["--svt", "--svt-release-epsilon", "1e308"], "--svt-release-epsilon is 1e+308"),
    (["--mode", "central", "--share-fraction", "0.1"], "applies only to federated runs"),
    (["--mode", "local", "--svt"], "applies only to federated runs"),
])
def test_filter_options_that_cannot_work_are_refused(small_split, tmp_path, capsys, args, words):
    out = tmp_path / "refused"
    mode = [] if "--mode" in args else ["--mode", "fedavg"]
    code = main(["run", *mode, "--model", "composition", "--profile", "quick", "--split",
                 str(small_split), *args, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and words in err and err.startswith("fedbio: error:") and len(err.splitlines()) == 1
    assert not out.exists() and not Path(f"{out}.running").exists() and not Path(f"{out}.failed").exists()


def test_svt_needs_nvflare(small_split, tmp_path):
    from fedbio.errors import FedbioError

    cfg = plan(mode="fedavg", model="composition", profile="quick", split=str(small_split), epochs=2)
    with pytest.raises(FedbioError, match="which only NVFlare applies"):
        run_federated(cfg, FedConfig(rounds=2), tmp_path / "x", progress=False, engine="loop",
                      privacy=PrivacyConfig(svt=True))
    assert not (tmp_path / "x").exists()


def test_a_share_fraction_that_keeps_nothing_is_refused(small_split, tmp_path, capsys):
    out = tmp_path / "none"
    code = main(["run", "--mode", "fedavg", "--model", "composition", "--profile", "quick", "--split",
                 str(small_split), "--rounds", "2", "--epochs", "2", "--share-fraction", "1e-9",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "keeps none of the 4210 entries" in err and not out.exists()


def test_svt_runs_that_differ_in_any_setting_are_told_apart_in_a_report():
    from fedbio.reporting.runs import group_name

    def name(**svt):
        block = {**PrivacyConfig(svt=True, **svt).update_filter()}
        return group_name({"model": "composition", "mode": "fedavg", "privacy": {"update_filter": block}})

    names = {name(), name(svt_tau=0.0), name(svt_noise_var=10.0), name(svt_release_epsilon=5.0),
             name(svt_gamma=0.01)}
    assert len(names) == 5 and name() == "composition · fedavg · SVT F=0.1 γ=1e-05 ε=0.1"


def test_a_non_finite_svt_aggregate_names_the_svt_options(tmp_path):
    from fedbio.federation.server import RunStopped

    settings = ServerSettings(run_dir=str(tmp_path), num_rounds=1, update_filter={
        "kind": "svt", "fraction": 0.5})

    def ask(task, p, meta, targets, rnd):
        return {s: Reply({"w": np.array([np.inf, 0.0])}, {}, {"NUM_STEPS_CURRENT_ROUND": 1.0})
                for s in targets}, {}

    with pytest.raises(RunStopped, match="lower --svt-gamma or raise --svt-noise-var"):
        Server(settings, SITES).run(ask, {"w": np.zeros(2)})
