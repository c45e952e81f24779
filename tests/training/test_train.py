"""The training core: runs end to end on real data and real (tiny, randomly initialised) models."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import HARD, SCL

from fedbio.cli import main
from fedbio.data.batching import crop, padding_fraction, tokenize
from fedbio.data.records import read_records
from fedbio.training.run import SCHEMA_VERSION, plan, run


def test_ml_modules_never_import_nvflare():
    code = ("import sys, fedbio.data.records, fedbio.data.split, fedbio.models, fedbio.training.trainer, fedbio.training.learner, "
            "fedbio.training.run, fedbio.training.predict, fedbio.training.profiles; "
            "assert 'nvflare' not in sys.modules, 'nvflare imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_crop_keeps_both_ends_and_drops_nothing():
    seq = "M" + "A" * 50 + "KDEL"
    cut = crop(seq, 10)
    assert cut == "MAAAA" + "AKDEL" and len(cut) == 10
    assert crop(seq, 10, "start") == seq[:10]
    assert crop("MKV", 10) == "MKV"


def test_bucketing_cuts_padding():
    from fedbio.models import load_tokenizer

    recs = read_records(SCL)[:1500]
    import torch

    data = tokenize([r.sequence for r in recs], torch.zeros(len(recs)), load_tokenizer(), 512)
    assert data.n_cropped == sum(len(r.sequence) > 512 for r in recs)
    assert len(data) == len(recs)
    bucketed, plain = padding_fraction(data, 32, True), padding_fraction(data, 32, False)
    assert bucketed <= 0.15 < plain


def _run(tmp_path, name, **kw):
    cfg = plan(**kw)
    return run(cfg, tmp_path / name, progress=False), tmp_path / name


def test_composition_central_learns_and_is_reproducible(tmp_path):
    m1, out = _run(tmp_path, "a", mode="central", model="composition", profile="quick", seed=0)
    m2, _ = _run(tmp_path, "b", mode="central", model="composition", profile="quick", seed=0)
    assert m1["test"]["accuracy"] >= 0.37
    assert m1["test"]["accuracy"] > m1["majority_rate"] + 0.05
    strip = lambda m: {k: v for k, v in m.items() if k != "wall_seconds"}  # noqa: E731
    assert strip(m1) == strip(m2)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["schema_version"] == SCHEMA_VERSION
    assert saved["profile"] == "quick" and "asked for" in saved["profile_reason"]
    assert set(saved["n_train"]) == {"site-1", "site-2", "site-3"}
    assert sum(saved["n_train"].values()) == 1510
    assert {"accuracy", "macro_f1"} <= set(saved["test"]) and saved["test_hard"]["n"] == 490
    assert (out / "model" / "model.safetensors").exists()
    assert any((out / "tb" / "central").iterdir())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["packages"]["torch"] and "site-1/train.csv" in manifest["data_md5"]


def test_composition_local_runs_every_site_and_reproduces(tmp_path):
    m1, out = _run(tmp_path, "a", mode="local", model="composition", profile="quick", seed=1)
    m2, _ = _run(tmp_path, "b", mode="local", model="composition", profile="quick", seed=1)
    assert set(m1["per_site"]) == {"site-1", "site-2", "site-3"}
    for site in m1["per_site"]:
        assert (out / site / "model" / "model.safetensors").exists()
    mean = np.mean([s["test"]["accuracy"] for s in m1["per_site"].values()])
    assert m1["test"]["accuracy"] == pytest.approx(mean)
    assert m1["test"]["aggregate"] == "unweighted mean over sites"
    assert m1["per_site"] == m2["per_site"]


def test_predict_writes_one_row_per_record(tmp_path, capsys):
    _, out = _run(tmp_path, "run", mode="central", model="composition", profile="quick", seed=0)
    preds = tmp_path / "preds.csv"
    assert main(["predict", "--model", str(out / "model"), "--fasta", str(HARD), "--out", str(preds)]) == 0
    lines = preds.read_text().splitlines()
    assert len(lines) == 1 + 490
    header = lines[0].split(",")
    assert header[:2] == ["id", "predicted"] and "Lysosome/Vacuole" in header
    row = lines[1].split(",")
    assert abs(sum(float(v) for v in row[2:]) - 1) < 1e-3
    bad = tmp_path / "bad.fasta"
    bad.write_text(">x\nMK1\n")
    assert main(["predict", "--model", str(out / "model"), "--fasta", str(bad),
                 "--out", str(tmp_path / "p2.csv")]) == 2
    assert f"{bad}:1:" in capsys.readouterr().err and not (tmp_path / "p2.csv").exists()


def test_existing_run_refused(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "x").write_text("x")
    assert main(["run", "--model", "composition", "--out", str(out), "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err


@pytest.mark.parametrize("tuning", ["head", "lora", "full"])
def test_user_checkpoint_fine_tunes_in_every_tuning_mode(tmp_path, small_split, tiny_esm_folder, tuning):
    out = tmp_path / tuning
    code = main(["run", "--mode", "central", "--profile", "quick", "--split", str(small_split),
                 "--model", str(tiny_esm_folder), "--tuning", tuning, "--epochs", "2",
                 "--out", str(out), "--quiet"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tuning"] == tuning and metrics["model"] == str(tiny_esm_folder)
    assert metrics["test"]["n"] == 60 and metrics["test_hard"]["n"] == 30
    assert all(np.isfinite(row["train_loss"]) for row in metrics["curves"]["central"])
    if tuning == "head":
        assert list((out / "cache").glob("emb-*.safetensors"))  # encoder ran once, cached
    preds = tmp_path / "p.csv"
    assert main(["predict", "--model", str(out / "model"), "--fasta", str(small_split / "test.csv"),
                 "--out", str(preds)]) == 0
    assert len(preds.read_text().splitlines()) == 61


def test_profile_auto_says_what_it_chose(tmp_path, tiny_esm_folder, monkeypatch):
    import shutil

    from fedbio.training.profiles import resolve_profile

    monkeypatch.delenv("FEDBIO_PROFILE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("FEDBIO_WEIGHTS", raising=False)
    quick = resolve_profile()
    assert quick.name == "quick" and "no pretrained weights" in quick.reason
    weights = tmp_path / "weights"
    shutil.copytree(tiny_esm_folder, weights / "esm2-8m")
    monkeypatch.setenv("FEDBIO_WEIGHTS", str(weights))
    laptop = resolve_profile()
    assert laptop.name == "laptop" and "esm2-8m" in laptop.reason
    assert laptop.model.name == "esm2-8m" and laptop.model.tuning == "head"
    cfg = plan(profile="auto")
    assert cfg.profile == "laptop" and cfg.profile_reason == laptop.reason


def test_transformer_local_and_central_reproduce(tmp_path, small_split):
    for mode in ("local", "central"):
        runs = [run(plan(mode=mode, profile="quick", seed=3, split=str(small_split), epochs=1),
                    tmp_path / f"{mode}{i}", progress=False) for i in range(2)]
        assert runs[0]["per_site"] == runs[1]["per_site"]
        assert runs[0]["curves"] == runs[1]["curves"]


def test_bring_your_own_regression_data(tmp_path):
    """A user's own per-site CSVs with numeric labels: hydrophobic share of real sequences."""
    recs = read_records(SCL)[:400]
    hydro = lambda s: 100 * sum(c in "AILMFVW" for c in s) / len(s)  # noqa: E731
    split = tmp_path / "split"
    rows = [f"{r.id},{r.sequence},{hydro(r.sequence):.3f}" for r in recs]
    parts = {"site-1/train.csv": rows[:120], "site-1/valid.csv": rows[120:150],
             "site-2/train.csv": rows[150:270], "site-2/valid.csv": rows[270:300], "test.csv": rows[300:]}
    for name, lines in parts.items():
        (split / name).parent.mkdir(parents=True, exist_ok=True)
        (split / name).write_text("id,sequences,labels\n" + "\n".join(lines) + "\n")
    out = tmp_path / "run"
    assert main(["run", "--task", "regression", "--mode", "local", "--split", str(split),
                 "--model", "composition", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task_type"] == "regression" and metrics["classes"] is None
    assert set(metrics["per_site"]) == {"site-1", "site-2"}
    assert metrics["test"]["pearson"] > 0.5 and metrics["test"]["rmse"] < 10  # original units (%)
    preds = tmp_path / "p.csv"
    assert main(["predict", "--model", str(out / "site-1" / "model"), "--fasta",
                 str(split / "test.csv"), "--out", str(preds)]) == 0
    lines = preds.read_text().splitlines()
    assert lines[0] == "id,predicted" and len(lines) == 101
    assert 0 < float(lines[1].split(",")[1]) < 100


def test_demo_refuses_a_foreign_non_empty_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path), "--profile", "quick"]) == 2
    assert "not empty" in capsys.readouterr().err and (tmp_path / "notes.txt").exists()


def _regression_fit(y, lr: float, epochs: int = 3, reference: dict | None = None):
    import torch
    from torch import nn

    from fedbio.config import TrainConfig
    from fedbio.data.batching import TensorData
    from fedbio.training.trainer import fit

    torch.manual_seed(0)
    x = torch.randn(64, 8)
    module = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1), nn.Flatten(0))
    cfg = TrainConfig(lr=lr, batch_size=8, epochs=epochs, grad_clip=0.0)
    return fit(module, TensorData(x, y), None, cfg, "regression", epochs, tag="central",
               progress=False, reference=reference)


def test_a_diverging_loss_stops_training_naming_where():
    import torch

    from fedbio.errors import TrainingDiverged

    y, start = torch.randn(64), {}
    assert len(_regression_fit(y, lr=1e-3, reference=start)) == 3  # a sane rate trains on
    assert 0.1 < start["loss"] < 10  # where training started, kept across calls (a site's rounds)
    with pytest.raises(TrainingDiverged, match=r"central, epoch 1 of 3: the training loss rose to "
                                               r".*times where it started"):
        _regression_fit(y, lr=50.0, reference=start)


def test_a_non_finite_loss_stops_training_at_its_step():
    import torch

    from fedbio.errors import TrainingDiverged

    y = torch.randn(64)
    y[5] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"central, epoch 1 of 3, step \d+: the training loss is nan"):
        _regression_fit(y, lr=1e-3)


def test_run_key_follows_every_setting_that_decides_a_result():
    from dataclasses import replace

    from fedbio.training.run import plan, run_key

    cfg = plan(mode="central", model="composition", profile="quick", seed=0)
    key = run_key(cfg)
    assert len(key) == 10 and key == run_key(plan(mode="central", model="composition", profile="quick"))
    assert key != run_key(replace(cfg, train=replace(cfg.train, device="cpu")))
    assert key != run_key(replace(cfg, model=replace(cfg.model, trust_remote_code=True)))
    assert key == run_key(replace(cfg, profile_reason="another reason"))  # says why, decides nothing
    assert plan(profile="quick", device="cpu", precision="32", backend="auto").train.device == "cpu"
