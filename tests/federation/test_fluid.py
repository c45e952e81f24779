"""FLuID (``--mode fluid``): its arithmetic by hand, what leaves a site in the real NVFlare
simulator, what the student learned from, and the refusals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import HARD, ROOT, SCL

from fedbio.cli import main
from fedbio.federation import FedConfig, run_federated
from fedbio.federation.fluid import FluidConfig
from fedbio.federation.fluid.weighting import (
    balanced_selection,
    combine,
    domain_weights,
    mean_knn_distance,
)
from fedbio.training.metrics import mcc
from fedbio.training.run import plan

SITES = ["site-1", "site-2", "site-3"]


# -- the arithmetic ---------------------------------------------------------------------------
def test_one_teacher_with_uniform_weights_reproduces_its_probabilities():
    probs = np.random.default_rng(0).dirichlet(np.ones(4), size=6)
    for weights in (None, [np.array([0.0, 0.3, 1.0, 0.2, 0.0, 0.9])]):
        soft, share = combine([probs], weights)
        np.testing.assert_allclose(soft, probs)
        np.testing.assert_allclose(share, np.ones((1, 6)))


def test_the_weighting_matches_a_hand_computation():
    # distances of two teachers to two public records; lo = 1, hi = 5 over both teachers
    d1, d2 = np.array([1.0, 3.0]), np.array([2.0, 5.0])
    w1, w2 = domain_weights(d1, 1.0, 5.0), domain_weights(d2, 1.0, 5.0)
    np.testing.assert_allclose(w1, [1.0, 0.25])          # (1 - 0)^2, (1 - 0.5)^2
    np.testing.assert_allclose(w2, [0.5625, 0.0])        # (1 - 0.25)^2, (1 - 1)^2
    p1 = np.array([[0.9, 0.1], [0.2, 0.8]])
    p2 = np.array([[0.3, 0.7], [0.6, 0.4]])
    soft, share = combine([p1, p2], [w1, w2])
    np.testing.assert_allclose(share, [[0.64, 1.0], [0.36, 0.0]])   # 1 / 1.5625, 0.5625 / 1.5625
    np.testing.assert_allclose(soft, [[0.684, 0.316], [0.2, 0.8]])


def test_equal_distances_give_uniform_weights():
    same = np.array([2.0, 2.0, 2.0])
    np.testing.assert_allclose(domain_weights(same, 2.0, 2.0), 1.0)
    p1, p2 = np.eye(3), np.full((3, 3), 1 / 3)
    soft, share = combine([p1, p2], [domain_weights(same, 2.0, 2.0)] * 2)
    np.testing.assert_allclose(share, 0.5)
    np.testing.assert_allclose(soft, (p1 + p2) / 2)
    # a record every teacher is as far from as can be (all weights 0): uniform, not 0 / 0
    soft, share = combine([p1, p2], [np.array([0.0, 1.0, 1.0]), np.array([0.0, 0.0, 1.0])])
    np.testing.assert_allclose(share[:, 0], [0.5, 0.5])
    np.testing.assert_allclose(share[:, 1], [1.0, 0.0])


def test_the_domain_distance_is_the_mean_over_the_nearest_neighbours():
    rng = np.random.default_rng(1)
    reference, queries = rng.normal(size=(40, 5)), rng.normal(size=(7, 5))
    brute = np.sqrt(((queries[:, None, :] - reference[None, :, :]) ** 2).sum(-1))
    np.testing.assert_allclose(mean_knn_distance(reference, queries, 8), np.sort(brute, 1)[:, :8].mean(1))
    np.testing.assert_allclose(mean_knn_distance(reference[:3], queries, 8), brute[:, :3].mean(1))
    np.testing.assert_allclose(mean_knn_distance(reference, queries, 8, chunk=2),
                               mean_knn_distance(reference, queries, 8))


def test_the_balanced_selection_gives_each_class_an_equal_share_at_most():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 5)
    rows = balanced_selection(labels, 3, seed=0)
    counts = np.bincount(labels[rows], minlength=3)
    assert counts.tolist() == [29, 29, 5]        # ceil(85 / 3) = 29; the small class gives all
    assert np.array_equal(rows, balanced_selection(labels, 3, seed=0))
    assert not np.array_equal(rows, balanced_selection(labels, 3, seed=1))


def test_mcc_matches_a_hand_computation():
    truth = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    pred = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 1])   # TP 3, FN 2, TN 4, FP 1
    assert mcc(truth, pred, 2) == pytest.approx((3 * 4 - 1 * 2) / np.sqrt(4 * 5 * 6 * 5))
    assert mcc(truth, truth, 2) == pytest.approx(1.0)
    assert mcc(truth, np.zeros(10, int), 2) == 0.0     # a constant prediction
    assert mcc(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 2]), 3) == pytest.approx(1.0)


# -- the real simulator -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fluid_run(public_split, tmp_path_factory):
    """A tiny ESM-2's head (its embeddings measure the domain), hybrids on, in NVFlare's simulator."""
    out = tmp_path_factory.mktemp("fluid") / "run"
    cfg = plan(mode="fluid", model="esm2-tiny", tuning="head", split=str(public_split), epochs=2)
    metrics = run_federated(cfg, FedConfig(), out=out, progress=False, fluid=FluidConfig(hybrid=True))
    return out, metrics, cfg


def _public_ids(split: Path) -> list[str]:
    with open(split / "public.csv") as handle:
        return [row["id"] for row in csv.DictReader(handle)]


def test_only_public_set_predictions_weights_and_scalars_leave_a_site(fluid_run, public_split):
    out, metrics, _ = fluid_run
    n, classes = len(_public_ids(public_split)), len(metrics["classes"])
    assert n == 60 and metrics["fluid"]["public"]["n"] == n
    for site in SITES:
        lines = [json.loads(line) for line in (out / "federation" / "audit" / f"{site}.jsonl").read_text().splitlines()]
        steps = [line["task"] for line in lines if line["task"] != "stream"]
        assert steps == ["teachers", "annotate", "combine", "hybrid", "evaluate"], steps
        for line in lines:
            arrays = {k: tuple(v) for k, v in line["shapes"].items() if v}
            if line["task"] == "annotate":
                assert arrays == {"probs": (n, classes)}
            elif line["task"] == "combine":
                assert arrays == {"weights": (n,)}
            else:           # scalar metrics only, never a model
                assert arrays == {}, line
    # the server's own record agrees, and knew no weight at any step
    assert metrics["fluid"]["shapes_sent"]["annotate"] == {s: {"probs": [n, classes]} for s in SITES}
    assert metrics["federation"].get("exchanged") is None
    assert all(metrics["fluid"]["bytes_sent"][s]["annotate"] == n * classes * 4 for s in SITES)


def test_the_student_learned_from_the_combined_annotations(fluid_run, public_split):
    from safetensors.numpy import load_file

    from fedbio.data.public import read_public
    from fedbio.federation.fluid.student import StudentTrainer

    out, metrics, cfg = fluid_run
    server = out / "federation" / "server"
    with open(server / "public_labels.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 60
    probs = np.array([[float(r[f"p{c}"]) for c in range(len(metrics["classes"]))] for r in rows])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    weights = np.array([[float(r[f"w_{s}"]) for s in SITES] for r in rows])
    np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-5)
    assert weights.std() > 0          # the domain weighting did weigh the teachers differently
    labels = np.array([int(r["label"]) for r in rows])
    chosen = np.flatnonzero([r["selected"] == "1" for r in rows])
    assert metrics["fluid"]["student"]["rows"] == len(chosen)
    assert metrics["fluid"]["student"]["label_counts"] == np.bincount(labels[chosen], minlength=len(probs[0])).tolist()
    # the same labels and rows train, here, the model the server delivered
    spec = json.loads((out / "federation" / "sites.json").read_text())
    trainer = StudentTrainer(spec, read_public(public_split / "public.csv"), out / "check-cache", threads=1)
    params, _, _ = trainer.train(labels, chosen)
    delivered = load_file(str(server / "global.safetensors"))
    assert sorted(params) == sorted(delivered)
    for name, value in params.items():
        np.testing.assert_allclose(value, delivered[name], rtol=1e-4, atol=1e-5)


def test_metrics_hold_the_student_the_teachers_and_the_hybrids(fluid_run):
    out, metrics, _ = fluid_run
    assert metrics["mode"] == "fluid"
    assert {"accuracy", "macro_f1", "mcc"} <= set(metrics["test"]) and metrics["test_hard"]["n"] == 30
    fluid = metrics["fluid"]
    assert fluid["n_teachers"] == 3 and fluid["weighting"] == "domain"
    assert sorted(fluid["teacher_scores"]) == SITES and sorted(fluid["hybrid_scores"]) == SITES
    for site in SITES:
        assert fluid["teacher_scores"][site]["test"]["n"] == 60
        assert metrics["per_site"][site]["test"] == fluid["teacher_scores"][site]["test"]
        assert (out / "sites" / site / "hybrid" / "test_predictions.csv").is_file()
    assert fluid["student"]["test"] == metrics["test"]
    assert (out / "model" / "fedbio_task.json").is_file()


def test_the_loop_engine_gives_the_simulator_s_numbers(fluid_run, public_split, tmp_path):
    _, metrics, cfg = fluid_run
    loop = run_federated(cfg, FedConfig(), out=tmp_path / "loop", progress=False, engine="loop",
                         fluid=FluidConfig(hybrid=True))
    assert loop["test"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-9)
    for site in SITES:
        for part, scores in metrics["fluid"]["teacher_scores"][site].items():
            assert loop["fluid"]["teacher_scores"][site][part] == pytest.approx(scores)


# -- the command line ---------------------------------------------------------------------------
def _refused(argv, capsys, out: Path, *needles: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fedbio: error:") and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    assert not out.exists() and not Path(f"{out}.running").exists() and not Path(f"{out}.failed").exists()


def test_a_split_without_a_public_set_is_refused_with_what_to_do(small_split, tmp_path, capsys):
    out = tmp_path / "r"
    _refused(["run", "--mode", "fluid", "--model", "composition", "--split", str(small_split), "--out", str(out)],
             capsys, out, "public.csv", "--public-fraction", "--public FILE")


def test_bad_fluid_options_are_refused_before_anything_is_written(public_split, tmp_path, capsys, write):
    out = tmp_path / "r"
    base = ["run", "--model", "composition", "--split", str(public_split), "--out", str(out)]
    _refused([*base, "--mode", "fluid", "--rounds", "3"], capsys, out, "--rounds")
    _refused([*base, "--mode", "fedavg", "--fluid-hybrid"], capsys, out, "--fluid-hybrid", "--mode fluid")
    _refused([*base, "--mode", "local", "--public", str(SCL)], capsys, out, "--public")
    _refused([*base, "--mode", "fluid", "--dp-noise", "1.0"], capsys, out, "--dp-noise")
    # DP-SGD's options apply to local runs too: with --mode fluid the first word is still "not here"
    _refused([*base, "--mode", "fluid", "--dp-sgd-clip", "1"], capsys, out, "--dp-sgd-clip", "--mode fluid")
    _refused([*base, "--mode", "fluid", "--public", ""], capsys, out, "--public is empty")
    # a site's own labelled records as public records: its teacher would send their labels
    _refused([*base, "--mode", "fluid", "--public", str(public_split / "site-1" / "train.csv")], capsys, out,
             "repeat a site's own records", "site-1/train.csv")
    no_sequence = write("noseq.csv", "id,seq\nP1,MKV\n")
    assert main([*base, "--mode", "fluid", "--public", str(no_sequence)]) == 2
    err = capsys.readouterr().err
    assert "needs a 'sequence'" in err and "label" not in err   # a public set needs no label column
    _refused([*base, "--mode", "fluid", "--public", str(tmp_path / "nowhere.fasta")], capsys, out, "nowhere.fasta")
    test_seq = next(line for line in (public_split / "test.csv").read_text().splitlines()[1:2]).split(",")[1]
    leaky = write("leaky.csv", f"id,sequence\nP1,{test_seq}\n")
    _refused([*base, "--mode", "fluid", "--public", str(leaky)], capsys, out, "repeat test sequences")
    assert main([*base, "--mode", "fluid", "--fluid-weighting", "closest"]) == 2
    assert "invalid choice: 'closest'" in capsys.readouterr().err
    _refused(["run", "--task", "antibody", "--mode", "fluid", "--model", "composition", "--out", str(out)],
             capsys, out, "classification")


def test_privacy_options_and_he_are_refused_through_the_api(public_split, tmp_path):
    from fedbio.errors import FedbioError
    from fedbio.privacy.config import PrivacyConfig

    cfg = plan(mode="fluid", model="composition", split=str(public_split), epochs=1)
    for privacy in (PrivacyConfig(clip=1.0, noise=1.0), PrivacyConfig(share_fraction=0.1)):
        with pytest.raises(FedbioError, match="shares no model update"):
            run_federated(cfg, FedConfig(), out=tmp_path / "r", progress=False, privacy=privacy)
    with pytest.raises(FedbioError, match="--he"):
        run_federated(cfg, FedConfig(he=True), out=tmp_path / "r", progress=False)
    with pytest.raises(FedbioError, match="--fluid-weighting"):
        run_federated(cfg, FedConfig(), out=tmp_path / "r", progress=False, fluid=FluidConfig(weighting="nearest"))
    assert not any(tmp_path.iterdir())


def test_without_a_split_the_default_one_gets_a_public_set_and_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FEDBIO_TEST_MAX_EPOCHS", "1")
    out = tmp_path / "r"
    assert main(["run", "--mode", "fluid", "--model", "composition", "--quiet", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "--public-fraction 0.2" in said
    assert "site-1 (teacher)" in said and "fluid student" in said
    metrics = json.loads((out / "metrics.json").read_text())
    summary = json.loads((out / "split" / "summary.json").read_text())
    assert summary["public_fraction"] == 0.2 and metrics["fluid"]["public"]["n"] == summary["n_public"]
    assert (out / "federation" / "public.csv").read_text().splitlines()[0] == "id,sequence"
    assert HARD and ROOT   # the shipped data it split


def test_the_studies_train_students_from_the_same_annotations(public_split, tmp_path):
    cfg = plan(mode="fluid", model="composition", split=str(public_split), epochs=2)
    metrics = run_federated(cfg, FedConfig(), out=tmp_path / "r", progress=False, engine="loop",
                            fluid=FluidConfig(studies=True))
    studies = metrics["fluid"]["studies"]
    kinds = [(s["kind"], s["value"]) for s in studies]
    assert kinds == [("teachers", 1)] * 3 + [("teachers", 2)] * 3 + [
        ("public_share", 0.25), ("public_share", 0.5), ("weighting", "uniform"), ("selection", "all")]
    assert sorted(tuple(s["teachers"]) for s in studies if s["value"] == 1) == [(s,) for s in SITES]
    server = tmp_path / "r" / "federation" / "server"
    for study in studies:
        assert (server / study["file"]).is_file() and 0 <= study["test"]["accuracy"] <= 1
        assert study["test_hard"]["n"] == 30
    rows = {s["value"]: s["rows"] for s in studies if s["kind"] == "public_share"}
    assert rows[0.25] < rows[0.5] < metrics["fluid"]["student"]["rows"]
    # the selection study trains on every public record; the run's balanced one on fewer
    assert next(s["rows"] for s in studies if s["kind"] == "selection") == 60 > metrics["fluid"]["student"]["rows"]


def test_a_failing_site_leaves_the_others_to_distil_when_min_sites_allows(public_split, tmp_path):
    from fedbio.errors import FedbioError

    cfg = plan(mode="fluid", model="composition", split=str(public_split), epochs=2)
    metrics = run_federated(cfg, FedConfig(min_sites=2, fail_sites=("site-2",)), out=tmp_path / "r",
                            progress=False, engine="loop", fluid=FluidConfig(hybrid=True))
    fluid = metrics["fluid"]
    assert fluid["teachers"] == ["site-1", "site-3"] and fluid["n_teachers"] == 2
    assert sorted(fluid["hybrid_scores"]) == ["site-1", "site-3"]
    assert "teachers" in metrics["federation"]["failed_sites"]["site-2"]
    assert metrics["per_site"]["site-2"]["model"] and "failed" in metrics["per_site"]["site-2"]
    with open(tmp_path / "r" / "federation" / "server" / "public_labels.csv") as handle:
        assert next(csv.reader(handle))[-2:] == ["w_site-1", "w_site-3"]
    # needing every site, the same failure stops the run, and says which step
    with pytest.raises(FedbioError, match="teachers: only 2 of 3 sites answered"):
        run_federated(cfg, FedConfig(fail_sites=("site-2",)), out=tmp_path / "all", progress=False,
                      engine="loop", fluid=FluidConfig())
    assert (tmp_path / "all.failed" / "error.txt").is_file()


def test_with_public_file_and_no_split_the_sites_keep_the_whole_pool():
    from fedbio.training.run import read_inputs

    cfg = plan(mode="fluid", model="composition")
    assert len(read_inputs(cfg).split.public) == 336          # the default: a fifth of the pool
    given = read_inputs(cfg, 0.0)                              # --public FILE: no public.csv drawn
    assert given.split.public is None
    assert given.train_counts == read_inputs(plan(mode="local", model="composition")).train_counts
