"""The membership-inference attack: its numbers on known answers (a model that memorised its
records, a model that never saw them), where its members and non-members come from, what it
writes into a run, and the refusals."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedbio.cli import main
from fedbio.config import DataConfig, ModelConfig
from fedbio.data.records import Record
from fedbio.data.tasks import LabelCodec
from fedbio.privacy.attack import AttackConfig, read_target, record_losses
from fedbio.privacy.membership import leakage, roc_auc, tpr_at_fpr
from fedbio.training.learner import Learner
from fedbio.training.profiles import composition_train

AMINO = "ACDEFGHIKLMNPQRSTVWY"


# -- the numbers ----------------------------------------------------------------------------------
def test_auc_and_tpr_on_scores_with_known_answers():
    assert roc_auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert roc_auc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 0.0
    assert roc_auc(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.5          # ties count half
    assert roc_auc(np.array([1.0, 3.0]), np.array([2.0, 0.0])) == 0.75
    nonmembers = np.arange(100, dtype=float)   # 1 % FPR: one non-member (99) may pass, not 98
    assert tpr_at_fpr(np.array([97.5, 98.5, 200.0, 50.0]), nonmembers, 0.01) == 0.5
    assert tpr_at_fpr(np.array([98.0]), nonmembers, 0.01) == 0.0                # a tie is no hit
    assert tpr_at_fpr(np.array([98.0]), nonmembers, 0.5) == 1.0
    rng = np.random.default_rng(0)
    same = leakage(rng.normal(size=3000), rng.normal(size=3000), n_boot=200)
    low, high = same["auc_ci"]
    assert abs(same["auc"] - 0.5) < 0.03 and low < same["auc"] < high and 0.01 < high - low < 0.05
    assert same["tpr_at_fpr"]["0.01"] < 0.03 and "0.001" in same["tpr_at_fpr"]
    few = leakage(np.ones(50), np.zeros(50), n_boot=100)
    assert few["auc"] == 1.0 and few["tpr_at_fpr"] == {} and "0.01" in few["not_resolved"]


# -- on real models with known answers -------------------------------------------------------------
CLASSES = [f"c{k}" for k in range(10)]


def random_records(n: int, start: int, rng) -> list[Record]:
    """Random proteins with random labels (10 classes): nothing to learn, everything to memorise."""
    return [Record(f"r{start + i}", "".join(rng.choice(list(AMINO), rng.integers(40, 90))),
                   str(rng.choice(CLASSES))) for i in range(n)]


def test_a_model_that_memorised_its_records_gives_them_away_and_one_that_never_saw_them_does_not():
    """A linear model on 420 features fits 60 random labels of 10 classes perfectly (members:
    loss ~0) and gets 60 other records of the same distribution right one time in ten; the
    attack then tells them apart every time. A model trained on yet other records cannot tell
    the same two sets apart."""
    rng = np.random.default_rng(0)
    members, nonmembers, others = (random_records(60, k * 100, rng) for k in range(3))
    codec = LabelCodec("classification", CLASSES)

    def trained_on(records):
        train_cfg = replace(composition_train(0), epochs=300, lr=0.05, weight_decay=0.0, threads=1)
        learner = Learner.build(ModelConfig(name="composition"), DataConfig(), train_cfg, codec,
                                None, progress=False)
        learner.fit(learner.inputs(records, fit_scaler=True), None, 300, select=False)
        return learner

    memorised = trained_on(members)
    got = leakage(-record_losses(memorised, members), -record_losses(memorised, nonmembers), n_boot=200)
    assert got["auc"] > 0.98 and got["auc_ci"][0] > 0.95
    unseen = trained_on(others)
    got = leakage(-record_losses(unseen, members), -record_losses(unseen, nonmembers), n_boot=200)
    assert abs(got["auc"] - 0.5) < 0.12 and got["auc_ci"][0] < 0.5 < got["auc_ci"][1]


# -- on runs ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def central_run(small_split, tmp_path_factory):
    out = tmp_path_factory.mktemp("mia") / "central"
    assert main(["run", "--mode", "central", "--model", "composition", "--profile", "quick",
                 "--split", str(small_split), "--epochs", "60", "--quiet", "--out", str(out)]) == 0
    return out


def test_non_members_are_the_sites_validation_records_never_the_test_set(small_split, central_run):
    """Members and non-members come out of the same split procedure (each site's records, the
    validation slice drawn at random), have disjoint ids and sequences, and no test record is
    ever a non-member."""
    from fedbio.data.split import SplitConfig, make_split
    from fedbio.paths import shipped

    target = read_target(central_run)
    (_, members, nonmembers), = target.models.values()
    assert {r.id for r in members} == {r.id for s in target.task.sites.values() for r in s["train"]}
    assert {r.id for r in nonmembers} == {r.id for s in target.task.sites.values() for r in s["valid"]}
    assert not {r.id for r in members} & {r.id for r in nonmembers}
    assert not {r.sequence for r in members} & {r.sequence for r in nonmembers}
    assert not {r.id for r in nonmembers} & {r.id for r in target.task.test + target.task.test_hard}
    # the full split: within each site, validation is a random slice of the site's own records
    split = make_split(shipped("scl/deeploc_valtest.fasta"), SplitConfig(seed=0))
    from scipy.stats import ks_2samp

    for parts in split.sites.values():
        train, valid = parts["train"], parts["valid"]
        assert ks_2samp([len(r.sequence) for r in train], [len(r.sequence) for r in valid]).pvalue > 0.01
        share = lambda recs, c: sum(r.label == c for r in recs) / len(recs)  # noqa: E731
        classes = {r.label for r in train}
        assert sum(abs(share(train, c) - share(valid, c)) for c in classes) / 2 < 0.2


def test_attacking_a_run_writes_its_results_and_the_run_can_still_be_replaced(small_split, central_run,
                                                                              capsys):
    code = main(["attack", "membership", str(central_run), "--n-boot", "100"])
    printed = capsys.readouterr().out
    assert code == 0 and "loss: AUC" in printed and "calibrated: AUC" in printed
    result = json.loads((central_run / "attack" / "membership.json").read_text())
    assert set(result["attacks"]) == {"loss", "calibrated"}
    def count(part: str) -> int:
        return sum(len((small_split / f"site-{k}" / f"{part}.csv").read_text().splitlines()) - 1
                   for k in (1, 2, 3))

    assert (result["members"]["n"], result["nonmembers"]["n"]) == (count("train"), count("valid")) == (128, 24)
    assert result["reference"]["records"].startswith("the split's test.csv")
    privacy = json.loads((central_run / "metrics.json").read_text())["privacy"]
    best = result["attacks"][result["strongest"]]
    assert privacy["membership_auc"] == best["auc"] == max(r["auc"] for r in result["attacks"].values())
    assert privacy["tpr_at_1pct_fpr"] is None      # 24 non-members cannot resolve 1 % FPR
    assert "24 non-members cannot resolve" in best["not_resolved"]["0.01"]
    scores = (central_run / "attack" / "scores.csv").read_text().splitlines()
    assert scores[0] == "id,model,member,loss,reference_loss" and len(scores) == 1 + 128 + 24
    assert (central_run / "attack" / "roc.png").stat().st_size > 1000
    # a second attack is refused, an --overwrite one replaces the first
    assert main(["attack", "membership", str(central_run), "--attack", "loss"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["attack", "membership", str(central_run), "--attack", "loss", "--n-boot", "100",
                 "--overwrite", "--quiet"]) == 0
    capsys.readouterr()
    result = json.loads((central_run / "attack" / "membership.json").read_text())
    assert set(result["attacks"]) == {"loss"} and result["reference"] is None
    # the run folder still holds only what fedbio wrote: a run --overwrite may replace it
    marker = json.loads((central_run / ".fedbio.json").read_text())
    assert marker["parts"] == ["attack"]
    from fedbio.outputs import check_output

    check_output(central_run, overwrite=True, kind="run")


def test_a_local_run_is_attacked_model_by_model_and_a_federated_one_reported(small_split, tmp_path, capsys):
    local = tmp_path / "local"
    assert main(["run", "--mode", "local", "--model", "composition", "--profile", "quick",
                 "--split", str(small_split), "--epochs", "20", "--quiet", "--out", str(local)]) == 0
    assert main(["attack", "membership", str(local), "--attack", "loss", "--n-boot", "100", "--quiet"]) == 0
    result = json.loads((local / "attack" / "membership.json").read_text())
    assert result["models"] == {f"site-{k}": f"site-{k}/model" for k in (1, 2, 3)}
    rows = [line.split(",") for line in (local / "attack" / "scores.csv").read_text().splitlines()[1:]]
    for site in ("site-1", "site-2", "site-3"):   # each model scores its own site's records only
        ids = {r[0] for r in rows if r[1] == site}
        train = (small_split / site / "train.csv").read_text()
        valid = (small_split / site / "valid.csv").read_text()
        assert ids and all(f"{i}," in train or f"{i}," in valid for i in ids)
    assert main(["report", str(local), "--out", str(tmp_path / "report")]) == 0
    capsys.readouterr()
    table = (tmp_path / "report" / "results.csv").read_text()
    assert f"membership AUC,,{result['attacks']['loss']['auc']:.3f}" in table
    assert (tmp_path / "report" / "privacy.png").is_file()


@pytest.mark.parametrize("how, words", [
    ("missing", "no such folder"),
    ("not-a-run", "metrics.json: not found"),
    ("running", "metrics.json: not found"),
    ("changed-split", "changed since the run"),
    ("bad-attack", "--attack lira"),
    ("few-boot", "--n-boot"),
    ("added-site", "site-4/train.csv: added since the run"),
    ("removed-site", "site-2/train.csv: missing: the run trained on it"),
    ("config-model-text", "config.json: not a fedbio run configuration"),
    ("config-split-number", "config.json: data.split is 123"),
    ("config-task", "config.json: task 'nosuch' is not one of"),
    ("manifest-list", "manifest.json: has no data checksums"),
    ("privacy-list", "metrics.json: privacy is not an object"),
    ("seed-range", "--seed + --references - 1"),
])
def test_what_cannot_be_attacked_is_refused_in_one_line(central_run, tmp_path, capsys, how, words):
    import shutil

    run, extra = tmp_path / "run", []
    if how != "missing":
        shutil.copytree(central_run, run)
        shutil.rmtree(run / "attack", ignore_errors=True)
    if how == "not-a-run":
        (run / "metrics.json").unlink()
    if how == "running":
        run = run.rename(tmp_path / "run.running")
        (run / "metrics.json").unlink()
    if how == "changed-split":   # the split the run names has been edited since
        config = json.loads((run / "config.json").read_text())
        split = tmp_path / "split"
        shutil.copytree(config["data"]["split"], split)
        train = split / "site-1" / "train.csv"
        lines = train.read_text().splitlines(keepends=True)
        lines[1], lines[2] = lines[2], lines[1]      # the same records, reordered: a new checksum
        train.write_text("".join(lines))
        config["data"]["split"] = str(split)
        (run / "config.json").write_text(json.dumps(config))
    if how in ("added-site", "removed-site"):   # the split the run names gained or lost a site
        config = json.loads((run / "config.json").read_text())
        split = tmp_path / "split"
        shutil.copytree(config["data"]["split"], split)
        if how == "added-site":
            shutil.copytree(split / "site-1", split / "site-4")
            for part in ("train", "valid"):   # other records, other ids: a valid site of its own
                rows = (split / "site-4" / f"{part}.csv").read_text().splitlines()
                (split / "site-4" / f"{part}.csv").write_text(
                    "\n".join([rows[0]] + [f"x{r}" for r in rows[1:]]) + "\n")
        else:
            shutil.rmtree(split / "site-2")
        config["data"]["split"] = str(split)
        (run / "config.json").write_text(json.dumps(config))
    edits = {"config-model-text": ("config.json", ("model",), "x"),
             "config-split-number": ("config.json", ("data", "split"), 123),
             "config-task": ("config.json", ("task",), "nosuch"),
             "manifest-list": ("manifest.json", ("data_md5",), [1]),
             "privacy-list": ("metrics.json", ("privacy",), [1])}
    if how in edits:
        name, keys, value = edits[how]
        data = json.loads((run / name).read_text())
        inner = data
        for key in keys[:-1]:
            inner = inner[key]
        inner[keys[-1]] = value
        (run / name).write_text(json.dumps(data))
    if how == "seed-range":
        extra = ["--seed", str(2**32 - 1), "--references", "2"]
    if how == "bad-attack":
        extra = ["--attack", "lira"]
    if how == "few-boot":
        extra = ["--n-boot", "5"]
    before = sorted(p.name for p in run.rglob("*")) if run.exists() else None
    code = main(["attack", "membership", str(run), *extra])
    err = capsys.readouterr().err
    assert code == 2 and words in err and err.startswith("fedbio: error:") and len(err.splitlines()) == 1
    assert (sorted(p.name for p in run.rglob("*")) if run.exists() else None) == before


def test_a_multitask_run_is_refused(tmp_path, capsys):
    run = tmp_path / "antibody"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"task_type": "multitask"}))
    (run / "config.json").write_text(json.dumps({"task": "antibody", "mode": "central", "seed": 0,
                                                 "model": {}, "data": {}, "train": {}}))
    assert main(["attack", "membership", str(run)]) == 2
    assert "metrics.json: task_type is 'multitask'" in capsys.readouterr().err


def test_attack_config_is_checked():
    with pytest.raises(Exception, match="--references"):
        AttackConfig(references=0).validate()
    assert AttackConfig().validate().attacks == ("loss", "calibrated")


def test_an_attack_killed_midway_leaves_nothing_that_stops_the_run_being_replaced(small_split, central_run,
                                                                                tmp_path):
    """SIGKILL leaves the attack's lock and running folder inside the run; they are fedbio's
    (registered before the attack wrote anything), so run --overwrite still replaces the run."""
    import shutil
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    shutil.copytree(central_run, run)
    shutil.rmtree(run / "attack", ignore_errors=True)
    before = (run / "metrics.json").read_text()
    child = subprocess.Popen([sys.executable, "-m", "fedbio", "attack", "membership", str(run),
                              "--references", "10", "--quiet"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / "attack.running" / "tmp").exists() and time.time() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert (run / "attack.running").is_dir() and (run / "attack.lock").is_file()
    assert (run / "metrics.json").read_text() == before   # untouched
    assert main(["run", "--mode", "central", "--model", "composition", "--profile", "quick",
                 "--split", str(small_split), "--epochs", "2", "--quiet", "--out", str(run),
                 "--overwrite"]) == 0
    assert not (run / "attack.running").exists() and not (run / "attack.lock").exists()


def test_a_run_being_written_is_not_attacked_whatever_name_leads_to_it(central_run, tmp_path, capsys):
    """The attack locks the run's real path, as fedbio run --out does; and a run --overwrite
    during an attack is told the run is busy, not that the attack's lock is a stranger's."""
    from fedbio.outputs import OutputLock

    link = tmp_path / "link"
    link.symlink_to(central_run)
    lock = OutputLock(central_run).acquire()   # as a running fedbio run --out RUN --overwrite
    try:
        assert main(["attack", "membership", str(link), "--overwrite", "--quiet"]) == 2
        assert "being written by another fedbio command" in capsys.readouterr().err
    finally:
        lock.release()
    (central_run / "attack.lock").write_text("pid 1\n")   # an attack at work
    try:
        lock = OutputLock(central_run).acquire()     # ... which holds the run's lock
        try:
            assert main(["run", "--mode", "central", "--model", "composition", "--profile", "quick",
                         "--out", str(central_run), "--overwrite"]) == 2
            assert "being written by another fedbio command" in capsys.readouterr().err
        finally:
            lock.release()
    finally:
        (central_run / "attack.lock").unlink()


def test_defence_sweep_attacks_again_when_the_attack_asked_for_differs(small_split, tmp_path):
    from fedbio.experiments import defence_sweep, defence_table

    defences = {"central": ("central", None)}
    first = defence_sweep(defences, "quick", tmp_path, split=small_split,
                          attack=AttackConfig(attacks=("loss",), n_boot=100))
    run = Path(first["run"][0])
    assert list(json.loads((run / "attack" / "membership.json").read_text())["attacks"]) == ["loss"]
    again = defence_sweep(defences, "quick", tmp_path, split=small_split, attack=AttackConfig(n_boot=100))
    result = json.loads((run / "attack" / "membership.json").read_text())
    assert set(result["attacks"]) == {"loss", "calibrated"} and result["config"]["n_boot"] == 100
    assert again["membership AUC"][0] == max(a["auc"] for a in result["attacks"].values())
    assert defence_table(again).loc["central", "seeds"] == 1
    with pytest.raises(ValueError, match="defence_sweep's rows"):
        defence_table(again.iloc[0:0])
