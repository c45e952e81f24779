"""load_task on a split folder a user has changed: every change that would silently lose, add or
leak data is one clear error naming the file (and line) and saying what to do."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import HARD, SCL

from fedbio.data.tasks import load_task
from fedbio.errors import DataError, FedbioError

HEAD = "id,sequences,labels\n"
FILES = {
    "site-1/train.csv": "a1,MKV,Nucleus\na2,MKL,Cytoplasm\n",
    "site-1/valid.csv": "a3,MKA,Nucleus\n",
    "site-2/train.csv": "b1,MKC,Nucleus\nb2,MKW,Cytoplasm\n",
    "site-2/valid.csv": "b3,MKD,Cytoplasm\n",
    "test.csv": "t1,MKE,Nucleus\nt2,MKF,Cytoplasm\n",
}


def _split(root: Path, changes: dict[str, str] | None = None) -> Path:
    """A user's own two-site split folder; ``changes``: file -> its rows (or text, for JSON)."""
    files = {**FILES, **(changes or {})}
    for name, rows in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(rows if name.endswith(".json") else HEAD + rows)
    return root


def _refused(folder: Path, start: str, *words: str, task: str = "scl") -> str:
    """load_task must raise one FedbioError whose message starts with ``start`` (the file) and
    holds ``words``; the message."""
    with pytest.raises(FedbioError) as err:
        load_task(folder, task)
    text = str(err.value)
    assert text.startswith(start), text
    assert "\n" not in text
    for word in words:
        assert word in text, text
    return text


def test_the_good_split_loads(tmp_path):
    task = load_task(_split(tmp_path / "s"))
    assert list(task.sites) == ["site-1", "site-2"] and task.classes == ["Cytoplasm", "Nucleus"]


# -- 1. every sub-folder is a site ---------------------------------------------------------------


def test_a_renamed_site_folder_is_refused_not_skipped(tmp_path):
    folder = _split(tmp_path / "s")
    (folder / "site-2").rename(folder / "hospital-A")
    _refused(folder, f"{folder / 'hospital-A'}: folder 'hospital-A' in the split folder is not a "
             "site folder (site-*), so its data would be left out; rename it to site-2 or move it "
             "out of the split folder")


def test_a_file_named_like_a_site_is_refused(tmp_path):
    folder = _split(tmp_path / "s")
    (folder / "site-3").write_text("x")
    _refused(folder, f"{folder / 'site-3'}: not a folder", "move it out of the split folder")


def test_known_files_and_hidden_folders_are_fine(tmp_path):
    folder = _split(tmp_path / "s")
    for name in ("split.png", "summary.json", "README", "notes.txt"):
        (folder / name).write_text("x")
    (folder / ".ipynb_checkpoints").mkdir()   # an editor's, next to any file it opened
    (folder / "classes.json").write_text('["Cytoplasm", "Nucleus"]')
    assert list(load_task(folder).sites) == ["site-1", "site-2"]


# -- 2. classes.json lists only classes the records carry ----------------------------------------


def test_a_class_no_record_carries_is_refused(tmp_path):
    folder = _split(tmp_path / "s", {"classes.json": '["Cytoplasm", "Nucleus", "Zzz"]'})
    _refused(folder, f"{folder / 'classes.json'}: class 'Zzz' is listed, but no record of the "
             "split (train, valid, test or test_hard) carries it; remove it from classes.json")


def test_a_class_only_a_validation_record_carries_is_still_listed(tmp_path):
    folder = _split(tmp_path / "s", {"site-2/valid.csv": "b3,MKD,Golgi\n",
                                     "classes.json": '["Cytoplasm", "Golgi", "Nucleus"]'})
    assert load_task(folder).classes == ["Cytoplasm", "Golgi", "Nucleus"]


# -- 3. one record, one file; no test record that is a training record ---------------------------


@pytest.mark.parametrize("key, rows, where, first", [
    ("site-2/train.csv", "a1,MKY,Nucleus\nb2,MKW,Cytoplasm\n", "site-2/train.csv:2",
     "site-1/train.csv:2"),                                   # the same protein at two sites
    ("test.csv", "t1,MKE,Nucleus\na2,MKH,Cytoplasm\n", "test.csv:3",
     "site-1/train.csv:3"),                                   # in a site's train and in test
    ("site-2/valid.csv", "a3,MKD,Cytoplasm\n", "site-2/valid.csv:2",
     "site-1/valid.csv:2"),
])
def test_a_record_id_in_two_files_is_refused(tmp_path, key, rows, where, first):
    folder = _split(tmp_path / "s", {key: rows})
    file, line = where.split(":")
    rid = rows.splitlines()[int(line) - 2].split(",")[0]
    _refused(folder, f"{folder / file}:{line}: record id {rid!r} is also in {folder / first.split(':')[0]}:"
             f"{first.split(':')[1]}; a record belongs to one file of a split")


def test_a_copied_site_folder_is_refused(tmp_path):
    folder = _split(tmp_path / "s")
    shutil.copytree(folder / "site-2", folder / "site-4")
    _refused(folder, f"{folder / 'site-4' / 'train.csv'}:2: record id 'b1' is also in "
             f"{folder / 'site-2' / 'train.csv'}:2", "move a copied site folder out")


def test_hard_test_record_in_test_too_is_refused(tmp_path):
    folder = _split(tmp_path / "s", {"test_hard.csv": "t2,MKF,Cytoplasm\n"})
    _refused(folder, f"{folder / 'test_hard.csv'}:2: record id 't2' is also in "
             f"{folder / 'test.csv'}:3")


@pytest.mark.parametrize("key, rows, where, twin", [
    ("test.csv", "t1,MKE,Nucleus\nt2,MKL,Cytoplasm\n", "test.csv:3", "'a2' (site-1/train.csv:3)"),
    ("test_hard.csv", "h1,MKD,Cytoplasm\n", "test_hard.csv:2", "'b3' (site-2/valid.csv:2)"),
])
def test_a_test_record_with_a_training_sequence_is_refused(tmp_path, key, rows, where, twin):
    folder = _split(tmp_path / "s", {key: rows})
    file, line = where.split(":")
    rid, path = twin.split(" (")
    _refused(folder, f"{folder / file}:{line}: test record", "has the same sequence as training "
             f"record {rid} ({folder / path.split(':')[0]}:{path.split(':')[1][:-1]}); drop one")


def test_csvs_without_an_id_column_are_not_matched_by_row_number(tmp_path):
    folder = _split(tmp_path / "s")
    for path in folder.rglob("*.csv"):   # 'row2' at every file: ids the reader made up
        rows = [line.split(",", 1)[1] for line in path.read_text().splitlines()]
        path.write_text("\n".join(rows) + "\n")
    assert [r.id for r in load_task(folder).test] == ["row2", "row3"]


def _antibody_rows(task_rows: list[tuple[str, str, float, str]]) -> str:
    return "".join(f"{rid},{seq},{value},{task}\n" for rid, seq, value, task in task_rows)


def _multitask_split(root: Path, test_rows: list[tuple[str, str, float, str]]) -> Path:
    """A two-task split: site-a holds task a, site-b task b; the same antibody in both tasks."""
    head = "id,sequence,label,task\n"
    files = {"site-a/train.csv": [("x1", "MKV", 1.0, "a"), ("x2", "MKL", 2.0, "a")],
             "site-a/valid.csv": [("x3", "MKA", 1.5, "a")],
             "site-b/train.csv": [("x1", "MKV", 7.0, "b"), ("x2", "MKL", 8.0, "b")],
             "site-b/valid.csv": [("x4", "MKC", 7.5, "b")],
             "test.csv": test_rows}
    for name, rows in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(head + _antibody_rows(rows))
    (root / "tasks.json").write_text(json.dumps({"tasks": {"a": {}, "b": {}}}))
    return root


def test_multitask_ids_and_sequences_are_checked_per_task(tmp_path):
    ok = _multitask_split(tmp_path / "ok", [("x5", "MKE", 1.0, "a"), ("x5", "MKE", 7.0, "b")])
    assert len(load_task(ok, "antibody").test) == 2   # one antibody, one row per task: fine
    same_id = _multitask_split(tmp_path / "id", [("x3", "MKE", 1.0, "a")])
    _refused(same_id, f"{same_id / 'test.csv'}:2: record id 'x3' (task 'a') is also in "
             f"{same_id / 'site-a' / 'valid.csv'}:2", task="antibody")
    same_seq = _multitask_split(tmp_path / "seq", [("x9", "MKC", 7.0, "b")])
    _refused(same_seq, f"{same_seq / 'test.csv'}:2: test record 'x9' has the same sequence as "
             f"training record 'x4' ({same_seq / 'site-b' / 'valid.csv'}:2)", task="antibody")


# -- empty and missing files ---------------------------------------------------------------------


@pytest.mark.parametrize("file, words", [
    ("site-1/valid.csv", "every site needs validation records (training keeps the epoch that "
     "scores best on them)"),
    ("site-2/train.csv", "every site needs training records"),
    ("test.csv", "the split needs test records"),
    ("test_hard.csv", "add records, or delete test_hard.csv (it is optional)"),
])
def test_an_empty_file_says_what_it_should_hold(tmp_path, file, words):
    folder = _split(tmp_path / "s", {file: ""})
    _refused(folder, f"{folder / file}: file holds no records; {words}")


@pytest.mark.parametrize("missing, start", [
    ("site-1/valid.csv", "site-1/valid.csv: not found; every site folder holds train.csv and "
     "valid.csv; a split folder holds"),
    ("site-2/train.csv", "site-2/train.csv: not found; every site folder holds"),
    ("test.csv", "test.csv: not found; a split folder holds site-*/train.csv"),
])
def test_a_missing_file_names_its_path_and_the_layout(tmp_path, missing, start):
    folder = _split(tmp_path / "s")
    (folder / missing).unlink()
    _refused(folder, f"{folder}/{start}", "fedbio split writes one")


def test_no_site_folders_and_not_a_folder(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "test.csv").write_text(HEAD + FILES["test.csv"])
    _refused(folder, f"{folder}: holds no site-*/ folders; a split folder holds site-*/train.csv",
             "fedbio split writes one")
    _refused(tmp_path / "nowhere", f"--split {tmp_path / 'nowhere'} is not a folder; a split "
             "folder holds")


def test_a_run_folder_given_as_the_split_points_at_its_split(tmp_path):
    run_dir = tmp_path / "run"
    _split(run_dir / "split")
    (run_dir / "site-1" / "model").mkdir(parents=True)   # a run's own site folders
    _refused(run_dir, f"--split {run_dir} is a run's folder, not a split folder; give the split "
             f"folder it holds: --split {run_dir / 'split'}")


def test_a_dangling_optional_file_is_refused_not_skipped(tmp_path):
    folder = _split(tmp_path / "s")
    os.symlink(tmp_path / "gone.csv", folder / "test_hard.csv")
    _refused(folder, f"{folder / 'test_hard.csv'}: is a symbolic link that leads nowhere")
    (folder / "test_hard.csv").unlink()
    os.symlink(tmp_path / "gone.json", folder / "classes.json")
    _refused(folder, f"{folder / 'classes.json'}: cannot read the file", "check that it is a file")


# -- the shipped data's splits still load --------------------------------------------------------


def test_shipped_splits_load(tmp_path):
    from fedbio.data.antibody import make_antibody_split
    from fedbio.data.split import SplitConfig, make_split, save_split

    scl = save_split(make_split(SCL, SplitConfig(seed=1), hard=HARD), tmp_path / "scl", plot=False)
    task = load_task(scl, "scl")
    assert len(task.sites) == 3 and len(task.test) == 2768 and len(task.test_hard) == 490
    for setup in ("multitask", "alltasks"):
        folder = make_antibody_split(tmp_path / setup, setup=setup, seed=1)
        assert load_task(folder, "antibody").task_type == "multitask"


def test_a_split_run_reads_is_also_what_a_broken_copy_is_refused_from(tmp_path):
    """The checks see through nothing fedbio writes itself: its own split loads, and the same
    split with one record copied into another site is refused."""
    from fedbio.data.split import SplitConfig, make_split, save_split

    folder = save_split(make_split(SCL, SplitConfig(seed=0)), tmp_path / "s", plot=False)
    load_task(folder)
    row = (folder / "site-1" / "train.csv").read_text().splitlines()[1]
    with open(folder / "site-3" / "train.csv", "a") as handle:
        handle.write(row + "\n")
    with pytest.raises(DataError, match=r"site-3/train\.csv:\d+: record id .* is also in .*site-1/"
                                        r"train\.csv:2"):
        load_task(folder)


def test_multitask_tasks_must_be_carried_and_trained(tmp_path):
    extra = _multitask_split(tmp_path / "extra", [("x5", "MKE", 1.0, "a")])
    (extra / "tasks.json").write_text(json.dumps({"tasks": {"a": {}, "b": {}, "zzz": {}}}))
    _refused(extra, f"{extra / 'tasks.json'}: task 'zzz' is listed, but no record of the split "
             "carries it; remove it from tasks.json", task="antibody")
    untrained = _multitask_split(tmp_path / "untrained", [("x5", "MKE", 1.0, "a")])
    shutil.rmtree(untrained / "site-b")   # task b's only site gone; its test row stays
    test = untrained / "test.csv"
    test.write_text(test.read_text() + "x6,MKG,7.0,b\n")
    _refused(untrained, f"{test}:3: record 'x6' has task 'b', which no site's train.csv holds",
             "add training rows of the task to a site, or drop its test rows", task="antibody")


def test_make_split_refuses_a_class_list_class_no_record_carries(tmp_path):
    from fedbio.data.split import SplitConfig, make_split

    fasta = tmp_path / "t.fasta"
    fasta.write_text(">P1 TARGET=Nucleus SET=train\nMKV\n>P2 TARGET=Nucleus SET=train\nMKL\n"
                     ">P3 TARGET=Nucleus SET=test\nMKA\n")
    with pytest.raises(DataError) as err:
        make_split(fasta, SplitConfig(sites=1, min_site_size=1), classes=["Nucleus", "Zzz"])
    assert str(err.value) == (f"{fasta}: class 'Zzz' of the class list is carried by no record of "
                              "this file; drop it from the class list")
