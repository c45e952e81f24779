"""Multi-task regression on the shipped antibody data: codec, scores, runs, and private heads
in the real NVFlare simulator (one task per site, trunk shared, heads never leave)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from fedbio.data.antibody import make_antibody_split
from fedbio.data.records import Record
from fedbio.data.tasks import LabelCodec, load_task
from fedbio.errors import FedbioError
from fedbio.federation import FedConfig, run_federated
from fedbio.federation.audit import private_prefixes, read_audit, split_private
from fedbio.training.metrics import combine_task_scores, multitask_scores
from fedbio.training.run import plan, run
from fedbio.training.trainer import masked_mse

TASKS = ["thermostability", "expression", "aggregation", "polyreactivity", "immunogenicity"]


@pytest.fixture(scope="module")
def ab_split(tmp_path_factory):
    return make_antibody_split(tmp_path_factory.mktemp("ab") / "split", setup="multitask", seed=0)


def _cfg(mode: str, split, model: str = "amplify-tiny", epochs: float = 1):
    cfg = plan(task="antibody", mode=mode, profile="quick", model=model, epochs=epochs, split=str(split))
    # short crops and small batches: these tests check mechanics, not accuracy
    return replace(cfg, data=replace(cfg.data, max_length=48), train=replace(cfg.train, batch_size=16))


def _rec(task, label, rid="a"):
    return Record(rid, "ACDE", label, task=task)


def test_codec_puts_each_label_in_its_task_column_standardised():
    codec = LabelCodec("multitask", ["t1", "t2"], [10.0, 0.0], [2.0, 1.0])
    y = codec.encode([_rec("t1", 14.0), _rec("t2", -1.0, "b")]).numpy()
    assert y[0, 0] == pytest.approx(2.0) and np.isnan(y[0, 1])
    assert np.isnan(y[1, 0]) and y[1, 1] == pytest.approx(-1.0)
    assert codec.decode_values(np.array([[2.0, -1.0]])).tolist() == [[14.0, -1.0]]
    assert codec.n_outputs == 2 and codec.targets == ["t1", "t2"]


def test_masked_mse_ignores_missing_targets_and_their_heads():
    out = torch.tensor([[1.0, 5.0], [0.0, 2.0]], requires_grad=True)
    y = torch.tensor([[0.0, float("nan")], [float("nan"), 0.0]])
    loss = masked_mse(out, y)
    assert loss.item() == pytest.approx((1 + 4) / 2)
    loss.backward()
    assert out.grad[0, 1] == 0 and out.grad[1, 0] == 0
    assert masked_mse(out, torch.full_like(y, float("nan"))).item() == 0.0


def test_multitask_scores_are_per_task_in_original_units():
    y = np.array([[0.0, np.nan], [1.0, np.nan], [np.nan, 2.0], [np.nan, 0.0]])
    out = np.array([[0.0, 9.0], [2.0, 9.0], [9.0, 2.0], [9.0, 1.0]])
    s = multitask_scores(y, out, ["a", "b"], [10.0, 0.0], [2.0, 1.0])
    assert s["a.rmse"] == pytest.approx(math.sqrt((0 + 4) / 2))  # (2 - 1) * sd 2, in original units
    assert s["b.rmse"] == pytest.approx(math.sqrt((0 + 1) / 2))
    assert s["mse_std"] == pytest.approx(np.mean([0.5, 0.5]))
    assert s["n"] == 4 and set(s["per_task"]) == {"a", "b"}
    merged = combine_task_scores([s, multitask_scores(y[:2], out[:2], ["a", "b"], [10.0, 0.0], [2.0, 1.0])])
    assert merged["per_task"]["a"]["models"] == 2 and merged["per_task"]["b"]["models"] == 1


def test_private_names_are_split_off():
    params = {"head.heads.t.net.0.weight": 1, "backbone.x": 2}
    kept, dropped = split_private(params, ("head.",))
    assert kept == {"backbone.x": 2} and dropped == ["head.heads.t.net.0.weight"]
    assert private_prefixes(None, "multitask") == ("head.",)
    assert private_prefixes(None, "classification") == ()
    assert private_prefixes(False, "multitask") == ()


def test_load_task_reads_an_antibody_split(ab_split):
    task = load_task(ab_split, "antibody")
    assert task.task_type == "multitask" and set(task.classes) == set(TASKS)
    assert sorted(task.sites) == sorted(f"site-{t}" for t in TASKS)
    for site, parts in task.sites.items():
        assert {r.task for r in parts["train"]} == {site[len("site-"):]}
    codec = task.codec(task.sites["site-thermostability"]["train"])
    j = codec.classes.index("thermostability")
    assert 60 < codec.mean[j] < 90 and codec.std[j] > 1  # Fab Tm in degrees C


def test_a_split_with_an_unknown_task_is_refused(ab_split, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(ab_split, bad)
    text = (bad / "test.csv").read_text().replace(",aggregation\n", ",solubility\n", 1)
    (bad / "test.csv").write_text(text)
    with pytest.raises(FedbioError, match=r"test\.csv:\d+: .*solubility"):
        load_task(bad, "antibody")


def test_local_run_scores_each_site_on_its_own_task(ab_split, tmp_path):
    m = run(_cfg("local", ab_split), tmp_path / "local", progress=False)
    assert m["task_type"] == "multitask"
    for site, scores in m["per_site"].items():
        assert set(scores["test"]["per_task"]) == {site[len("site-"):]}
    per = m["test"]["per_task"]
    assert set(per) == set(TASKS)
    assert all(math.isfinite(v["rmse"]) and v["rmse"] > 0 for v in per.values())
    rows = list(csv.DictReader(open(tmp_path / "local" / "site-expression" / "test_predictions.csv")))
    assert rows and {r["task"] for r in rows} == {"expression"} and rows[0]["predicted"]


def test_central_run_trains_one_head_per_task(ab_split, tmp_path):
    from fedbio.models import load_model

    m = run(_cfg("central", ab_split, model="esm2-tiny"), tmp_path / "central", progress=False)
    assert set(m["test"]["per_task"]) == set(TASKS)
    _, model, meta = load_model(tmp_path / "central" / "model")
    assert meta["task"] == "multitask" and meta["labels"] == m["classes"]
    names = {n for n, _ in model.named_parameters()}
    assert all(f"head.heads.{t}.net.0.weight" in names for t in TASKS)


def test_multitask_federation_keeps_heads_at_their_sites(ab_split, tmp_path):
    """The real NVFlare simulator, 2 rounds: no head parameter leaves a site or reaches the
    server's models, the shared trunk changes, and every site keeps a trained model of its own."""
    from safetensors.numpy import load_file

    from fedbio.models import load_model

    out = tmp_path / "fed"
    m = run_federated(_cfg("fedavg", ab_split), FedConfig(rounds=2), out=out, progress=False)
    exchanged = m["federation"]["exchanged"]["names"]
    assert exchanged and not any(n.startswith("head.") for n in exchanged)
    assert m["federation"]["private"] == ["head."]
    assert all(not r.get("failed") for r in m["rounds"][1:])  # no reply was refused

    # what left each site, as the NVFlare filter at the site recorded it
    audit = read_audit(out / "federation" / "audit")
    assert sorted(audit) == sorted(f"site-{t}" for t in TASKS)
    for lines in audit.values():
        train = [entry for entry in lines if entry["task"] == "train"]
        assert len(train) == 2
        for entry in train:
            assert sorted(entry["sent"]) == sorted(exchanged)
            assert entry["held_back"] and all(n.startswith("head.heads.") for n in entry["held_back"])

    # the server's models: trunk only, and the trunk moved
    server = out / "federation" / "server"
    initial = load_file(str(out / "federation" / "initial.safetensors"))
    for name in ("global.safetensors", "last.safetensors"):
        assert not any(k.startswith("head.") for k in load_file(str(server / name)))
    assert not any(k.startswith("head.") for k in initial)
    last = load_file(str(server / "last.safetensors"))
    assert any(not np.allclose(last[k], initial[k]) for k in initial)

    # each site's own model: global trunk + its own head, trained on its task
    for t in TASKS:
        _, model, meta = load_model(out / "sites" / f"site-{t}" / "model")
        assert meta["task"] == "multitask"
        head = model.head.heads[t].net[0].weight.detach()
        assert torch.isfinite(head).all()
    per = m["test"]["per_task"]
    assert set(per) == set(TASKS) and all(math.isfinite(v["rmse"]) for v in per.values())
    assert "own model" in m["test"]["scored_by"]
    json.dumps(m)  # metrics.json material only


def test_shared_heads_need_an_encoder_and_refuse_composition(ab_split, tmp_path):
    with pytest.raises(FedbioError, match="composition"):
        run_federated(_cfg("fedavg", ab_split, model="composition"), FedConfig(rounds=1),
                      out=tmp_path / "comp", progress=False)
    assert not (tmp_path / "comp").exists()


def test_alltasks_with_shared_heads_pools_label_scales(tmp_path):
    """Every task at every site, heads shared: one label scale per task pooled from the sites'
    counts and sums (as central training computes it); heads then travel like the trunk."""
    split = make_antibody_split(tmp_path / "split", setup="alltasks", seed=0, sites=2)
    cfg = _cfg("fedavg", split)
    m = run_federated(cfg, FedConfig(rounds=1, private_heads=False), out=tmp_path / "fed",
                      progress=False, engine="loop")
    assert any(n.startswith("head.heads.") for n in m["federation"]["exchanged"]["names"])
    assert m["federation"]["private"] == []
    shared = json.loads((tmp_path / "fed" / "federation" / "server" / "history.json").read_text())["shared"]
    central = load_task(split, "antibody").codec()
    assert shared["label_mean"] == pytest.approx(central.mean, rel=1e-5)
    assert shared["label_std"] == pytest.approx(central.std, rel=1e-4)
    assert set(m["test"]["per_task"]) == set(TASKS)


def test_report_and_predict_for_multitask_runs(ab_split, tmp_path, capsys):
    from fedbio.cli import main
    from fedbio.reporting.tasks import task_table

    runs = {}
    for seed in (0, 1):
        out = tmp_path / f"local{seed}"
        cfg = _cfg("local", ab_split)
        runs[seed] = run(replace(cfg, seed=seed, train=replace(cfg.train, seed=seed)), out, progress=False)
    table = task_table({"local": runs[0]}, "rmse")
    assert list(table.index) == TASKS and table.loc["thermostability", "n test"] == 27
    assert main(["report", str(tmp_path / "local0"), str(tmp_path / "local1"), "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "results.md").read_text()
    assert "RMSE (original units of each task)" in text and " ± " in text and "thermostability" in text
    assert (tmp_path / "rep" / "tasks.png").stat().st_size > 0

    # predict with one site's model on unlabelled antibodies: one column per task
    inp = tmp_path / "new.csv"
    inp.write_text("id,sequence\nab1,EVQLVESGGGLVQPGGSLRLSCAASGFTFSGGGGSGGGGSGGGGSDIQMTQSPSSLSASVGDRVTITC\n")
    assert main(["predict", "--model", str(tmp_path / "local0" / "site-expression" / "model"),
                 "--fasta", str(inp), "--out", str(tmp_path / "p.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    # a site's own model learnt only its task's head: the others' outputs are no predictions
    assert len(rows) == 1 and list(rows[0]) == ["id", "task", "predicted", "expression"]
    assert math.isfinite(float(rows[0]["expression"]))


def test_amplify_runs_the_localisation_task_too(small_split, tmp_path):
    """Model and task are independent choices: AMPLIFY on the 10-class localisation task."""
    cfg = plan(task="scl", mode="central", profile="quick", model="amplify-tiny", epochs=1,
               split=str(small_split))
    cfg = replace(cfg, data=replace(cfg.data, max_length=32))
    m = run(cfg, tmp_path / "scl", progress=False)
    assert m["model"] == "amplify-tiny" and m["task_type"] == "classification"
    assert 0.0 <= m["test"]["accuracy"] <= 1.0 and m["test"]["n"] == 60


def test_private_heads_on_a_frozen_encoder_are_refused(ab_split, tmp_path):
    cfg = _cfg("fedavg", ab_split)
    cfg = replace(cfg, model=replace(cfg.model, tuning="head"))
    with pytest.raises(FedbioError, match="nothing is left to federate"):
        run_federated(cfg, FedConfig(rounds=1), out=tmp_path / "head", progress=False)
    assert not (tmp_path / "head").exists()


def test_a_pooled_label_scale_replaces_the_local_one():
    single = LabelCodec("regression")
    assert single.set_scale([5.0], [2.0]) and (single.mean, single.std) == (5.0, 2.0)
    assert not single.set_scale([5.0], [2.0])
    multi = LabelCodec("multitask", ["t1", "t2"], [0.0, 0.0], [1.0, 1.0])
    assert multi.set_scale([1.0, 2.0], [3.0, 4.0]) and (multi.mean, multi.std) == ([1.0, 2.0], [3.0, 4.0])
    assert not multi.set_scale([1.0, 2.0], [3.0, 4.0])
