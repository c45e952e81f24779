"""fedbio.data.antibody: real counts, antibodies held out across all tasks, real skew, same bytes."""

from __future__ import annotations

import csv
import io
import json
import shutil
from itertools import combinations

import numpy as np
import pytest
from conftest import ROOT

from fedbio.data import antibody as ab
from fedbio.data.records import read_records
from fedbio.data.split import js_divergence
from fedbio.errors import DataError, FedbioError
from fedbio.reporting.antibody_plots import plot_task_distributions

DATA = ROOT / "data" / "antibody"
JAIN_TASKS = ["thermostability", "expression", "aggregation", "polyreactivity", "immunogenicity"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("antibody")
    return {
        "multitask": ab.make_antibody_split(base / "multitask", "multitask", seed=0),
        "alltasks": ab.make_antibody_split(base / "alltasks", "alltasks", seed=0, alpha=1.0),
        "skewed": ab.make_antibody_split(base / "skewed", "alltasks", seed=0, alpha=0.1),
        "even": ab.make_antibody_split(base / "even", "alltasks", seed=0, alpha=100.0),
        "tap": ab.make_antibody_split(base / "tap", "alltasks", source="tap", seed=0),
    }


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_shipped_files_are_the_documented_ones():
    import hashlib

    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in DATA.iterdir()
           if p.suffix in (".csv", ".tab")}
    assert md5 == {"wittrup2017.csv": "cc8655f53c6f8d147c6fb7ddb403a376",
                   "marks2021humanization_immunogenicity.csv": "8dc32365d18b1ae385839a7877808e35",
                   "tap.tab": "0a1b07fe1bdc9f67636f72878097841e"}
    readme = (DATA / "README.md").read_text()
    assert all(m in readme for m in md5.values())


def test_counts_and_merged_duplicates():
    table = ab.load_antibody_table("jain")
    assert list(table.columns) == ["id", "name", "vh", "vl", "sequence", *JAIN_TASKS]
    assert ab.tasks_for("jain") == JAIN_TASKS
    counts = table[JAIN_TASKS].notna().sum().to_dict()
    assert counts == {"thermostability": 137, "expression": 137, "aggregation": 137,
                      "polyreactivity": 137, "immunogenicity": 211}
    assert table.attrs["rows"]["immunogenicity"] == 217        # 217 rows -> 211 distinct pairs
    assert len(table) == 248 and table["id"].is_unique          # 100 antibodies in both files
    assert any("6 (VH, VL) pairs" in note for note in table.attrs["notes"])
    # a repeated Marks pair carries the mean of its rows
    with open(DATA / ab.MARKS_FILE, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    by_pair = {}
    for row in rows:
        by_pair.setdefault((row["heavy"], row["light"]), []).append(float(row["%ADA response"]))
    repeated = {k: v for k, v in by_pair.items() if len(v) > 1}
    assert len(repeated) == 6
    values = table.set_index("id")["immunogenicity"]
    for (vh, vl), vals in repeated.items():
        assert values[ab.antibody_id(vh, vl)] == pytest.approx(np.mean(vals))
    tap = ab.load_antibody_table("tap")
    assert len(tap) == 241 and tap[ab.tasks_for("tap")].notna().all().all()


def test_input_is_heavy_linker_light_and_identity_is_the_pair():
    assert ab.LINKER == "GGGGSGGGGSGGGGS"
    assert ab.join_chains(" evq l\n", "DIQ ") == "EVQL" + ab.LINKER + "DIQ"
    assert ab.antibody_id("evql ", "diq") == ab.antibody_id("EVQL", "DIQ")
    assert ab.antibody_id("EVQL", "DIQ") != ab.antibody_id("DIQ", "EVQL")
    table = ab.load_antibody_table("jain")
    row = table.iloc[0]
    assert row["sequence"] == row["vh"] + ab.LINKER + row["vl"]


def _ids(rows, part):
    return set(rows.loc[rows["part"] == part, "id"])


@pytest.mark.parametrize("name", ["multitask", "alltasks", "skewed", "tap"])
def test_no_antibody_of_any_task_in_both_training_and_test(folders, name):
    rows = ab.read_antibody_split(folders[name])
    held_out = _ids(rows, "test")
    assert held_out and not (_ids(rows, "train") | _ids(rows, "valid")) & held_out
    assert not _ids(rows, "train") & _ids(rows, "valid")
    meta = ab.read_split_meta(folders[name])
    for task, info in meta["tasks"].items():
        sub = rows[rows["task"] == task]
        assert (sub["part"] == "train").sum() == info["n_train"]
        assert (sub["part"] == "valid").sum() == info["n_valid"]
        assert (sub["part"] == "test").sum() == info["n_test"]
        assert sub["id"].is_unique     # each antibody once per task, across sites and parts


def test_multitask_seed0_counts_and_one_task_per_site(folders):
    meta = ab.read_split_meta(folders["multitask"])
    assert meta["setup"] == "multitask" and meta["linker"] == ab.LINKER
    counts = {t: (v["n_train"], v["n_valid"], v["n_test"]) for t, v in meta["tasks"].items()}
    assert counts == {t: (89, 21, 27) for t in JAIN_TASKS[:4]} | {"immunogenicity": (137, 32, 42)}
    assert meta["sites"] == {f"site-{t}": [t] for t in JAIN_TASKS}
    rows = ab.read_antibody_split(folders["multitask"])
    for site, tasks in meta["sites"].items():
        assert set(rows.loc[rows["site"] == site, "task"]) == set(tasks)
    assert set(rows.loc[rows["part"] == "test", "task"]) == set(JAIN_TASKS)


def test_alltasks_every_task_on_every_site(folders):
    meta = ab.read_split_meta(folders["alltasks"])
    assert list(meta["sites"]) == ["site-1", "site-2", "site-3"]
    rows = ab.read_antibody_split(folders["alltasks"])
    for site, tasks in meta["sites"].items():
        assert tasks == JAIN_TASKS
        for task in JAIN_TASKS:
            sub = rows[(rows["site"] == site) & (rows["task"] == task)]
            assert (sub["part"] == "train").sum() >= 3 and (sub["part"] == "valid").sum() >= 1


def _bin_mixes(folder, task):
    """Per-site training counts per label bin, recomputed from the files."""
    rows = ab.read_antibody_split(folder)
    pool = rows[(rows["task"] == task) & (rows["part"] != "test")].reset_index(drop=True)
    bins = ab.quantile_bins(pool["label"].to_numpy(), 4)
    n = bins.max() + 1
    train = (pool["part"] == "train").to_numpy()
    return [np.bincount(bins[train & (pool["site"] == s).to_numpy()], minlength=n)
            for s in sorted(set(pool["site"]))]


def test_label_skew_is_real_at_low_alpha(folders):
    for task in JAIN_TASKS:
        skewed = _bin_mixes(folders["skewed"], task)
        even = _bin_mixes(folders["even"], task)
        js_skewed = np.mean([js_divergence(a, b) for a, b in combinations(skewed, 2)])
        js_even = np.mean([js_divergence(a, b) for a, b in combinations(even, 2)])
        assert js_skewed > 0.3 and js_even < 0.05, (task, js_skewed, js_even)
        assert len({int(np.argmax(m)) for m in skewed}) > 1   # sites' majority bins differ
    meta = ab.read_split_meta(folders["skewed"])
    assert meta["alpha"] == 0.1 and set(meta["label_skew"]) == set(JAIN_TASKS)


def test_same_seed_same_bytes_other_seed_other_split(folders, tmp_path):
    for name, setup in (("multitask", "multitask"), ("alltasks", "alltasks")):
        again = ab.make_antibody_split(tmp_path / name, setup, seed=0)
        assert _files(again) == _files(folders[name])
    other = ab.make_antibody_split(tmp_path / "seed1", "multitask", seed=1)
    test0 = _ids(ab.read_antibody_split(folders["multitask"]), "test")
    assert _ids(ab.read_antibody_split(other), "test") != test0


def test_csv_layout_and_read_records(folders):
    for name in ("multitask", "alltasks", "tap"):
        folder = folders[name]
        meta = json.loads((folder / "tasks.json").read_text(encoding="utf-8"))
        assert {"setup", "source", "seed", "linker", "tasks", "sites"} <= set(meta)
        paths = [folder / "test.csv"] + [folder / s / f"{p}.csv" for s in meta["sites"]
                                         for p in ("train", "valid")]
        for path in paths:
            assert path.read_text(encoding="utf-8").splitlines()[0] == "id,sequence,label,task"
            records = read_records(path, kind="value")
            assert {r.task for r in records} <= set(meta["tasks"])
            assert all(ab.LINKER in r.sequence and isinstance(r.label, float) for r in records)


def _copy_sources(tmp_path):
    root = tmp_path / "src"
    shutil.copytree(DATA, root)
    return root


@pytest.mark.parametrize("file, line, edit, message", [
    (ab.JAIN_FILE, 5, lambda cells: cells[:2] + ["EVQL1VESG"] + cells[3:], "not amino acids"),
    (ab.JAIN_FILE, 9, lambda cells: cells[:3] + [""] + cells[4:], "missing light chain"),
    (ab.JAIN_FILE, 12, lambda cells: cells[:9] + ["n.d."] + cells[10:], "not a number"),
    (ab.MARKS_FILE, 30, lambda cells: cells[:2] + ["high"] + cells[3:], "not a number"),
    (ab.MARKS_FILE, 7, lambda cells: [""] + cells[1:], "missing heavy chain"),
])
def test_malformed_rows_name_file_and_line(tmp_path, file, line, edit, message):
    root = _copy_sources(tmp_path)
    path = root / file
    text = path.read_text(encoding="utf-8")
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.split(newline)
    cells = next(csv.reader([lines[line - 1]]))
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(edit(cells))
    lines[line - 1] = buffer.getvalue()
    path.write_text(newline.join(lines), encoding="utf-8", newline="")
    with pytest.raises(DataError, match=message) as err:
        ab.load_antibody_table("jain", root=root)
    assert err.value.line == line and err.value.path == path
    assert f"{file}:{line}:" in str(err.value)


def test_malformed_tap_row(tmp_path):
    root = _copy_sources(tmp_path)
    path = root / ab.TAP_FILE
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[3] = lines[3].replace("'\\n '", "', '", 1)
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(DataError, match="two chains") as err:
        ab.load_antibody_table("tap", root=root)
    assert err.value.line == 4


def test_refuses_to_overwrite(folders, tmp_path):
    target = tmp_path / "split"
    ab.make_antibody_split(target, "multitask", seed=0)
    with pytest.raises(FedbioError, match="overwrite"):
        ab.make_antibody_split(target, "multitask", seed=1)
    assert _files(target) == _files(folders["multitask"])      # untouched
    ab.make_antibody_split(target, "multitask", seed=1, overwrite=True)
    assert _files(target) != _files(folders["multitask"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_standardise_uses_training_rows_only(folders):
    rows = ab.read_antibody_split(folders["multitask"])
    train = rows[rows["part"] == "train"]
    stats = ab.standardise(train)
    assert list(stats) == JAIN_TASKS
    tm = train.loc[train["task"] == "thermostability", "label"].to_numpy()
    assert stats["thermostability"] == pytest.approx((tm.mean(), tm.std()))
    assert ab.standardise([2.0, 2.0]) == (2.0, 1.0)
    mean, std = ab.standardise(tm)
    assert ab.destandardise((tm - mean) / std, mean, std) == pytest.approx(tm)


def test_summary_and_figure(folders):
    summary = ab.task_summary(folders["multitask"])
    assert list(summary.columns) == ["task", "unit", "part", "n", "mean", "sd", "min", "max"]
    assert len(summary) == 15 and summary["task"].iloc[0] == "thermostability"
    tm = summary[(summary["task"] == "thermostability")].set_index("part")
    assert tm.loc["train", "n"] == 89 and 59.5 <= tm.loc["train", "min"] <= tm.loc["train", "max"] <= 91.5
    by_site = ab.task_summary(folders["alltasks"], by_site=True)
    assert set(by_site["site"]) == {"site-1", "site-2", "site-3", ""}
    fig = plot_task_distributions(folders["tap"])
    assert sum(ax.get_visible() for ax in fig.axes) == 5
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_bad_arguments():
    with pytest.raises(FedbioError, match="setup"):
        ab.build_antibody_split("pertask")
    with pytest.raises(FedbioError, match="source"):
        ab.load_antibody_table("flab-binding")
    with pytest.raises(FedbioError, match="test_frac"):
        ab.build_antibody_split("multitask", test_frac=0.9, valid_frac=0.2)
