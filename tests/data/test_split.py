"""fedbio.data.split: real label skew, counts that add up, byte-identical outputs for a seed."""

from __future__ import annotations

import json
import shutil
from itertools import combinations

import numpy as np
import pytest
from conftest import HARD, SCL

from fedbio.cli import main
from fedbio.data.split import SplitConfig, js_divergence, make_split
from fedbio.errors import FedbioError


def _ids(records):
    return [r.id for r in records]


@pytest.fixture(scope="module")
def splits():
    return {a: make_split(SCL, SplitConfig(alpha=a, seed=0), hard=HARD) for a in (0.1, 1.0, 100.0)}


def test_divergence_falls_as_alpha_rises(splits):
    js = [splits[a].summary()["js_divergence"] for a in (0.1, 1.0, 100.0)]
    assert js[0] > js[1] > js[2]
    assert js[0] > 0.3 and js[2] < 0.02


def test_label_mixes_really_differ_at_low_alpha(splits):
    summary = splits[0.1].summary()
    mixes = [np.array(list(s["class_counts"].values()), float) for s in summary["sites"].values()]
    # every pair of sites differs, and some class is the majority at one site and rare at another
    assert all(js_divergence(a, b) > 0.2 for a, b in combinations(mixes, 2))
    top = [int(np.argmax(m)) for m in mixes]
    assert len(set(top)) > 1


def test_no_record_lost_or_duplicated(splits):
    for split in splits.values():
        pool = [r for s in split.sites.values() for part in s.values() for r in part]
        assert len(pool) == len(set(_ids(pool))) == 1678
        assert len(split.test) == 2768 and len(split.test_hard) == 490
        assert not set(_ids(pool)) & set(_ids(split.test))
        for parts in split.sites.values():
            assert not set(_ids(parts["train"])) & set(_ids(parts["valid"]))
            assert len(parts["valid"]) >= 1


def test_class_list_is_global(splits):
    split = splits[0.1]
    assert split.classes == sorted(split.classes) and len(split.classes) == 10
    assert "Lysosome/Vacuole" in split.classes
    for s in split.summary()["sites"].values():
        assert list(s["class_counts"]) == split.classes  # every site lists every class


def test_random_pool_uses_all_records():
    split = make_split(SCL, SplitConfig(pool="random", seed=1))
    n_pool = sum(len(p) for s in split.sites.values() for p in s.values())
    assert n_pool + len(split.test) == 4446
    assert abs(len(split.test) - 0.2 * 4446) < 12
    assert "homologous" in split.summary()["note"]


def test_iid_and_quantity_have_little_label_skew():
    iid = make_split(SCL, SplitConfig(partition="iid")).summary()
    qty = make_split(SCL, SplitConfig(partition="quantity", alpha=0.5)).summary()
    assert iid["js_divergence"] < 0.03 and qty["js_divergence"] < 0.05
    sizes = [s["n_train"] for s in qty["sites"].values()]
    assert max(sizes) > 1.5 * min(sizes)


def test_min_site_size_impossible_is_clear():
    with pytest.raises(FedbioError, match="cannot give 10 sites at least 500"):
        make_split(SCL, SplitConfig(sites=10, min_site_size=500))
    with pytest.raises(FedbioError, match="in 5 draws"):
        make_split(SCL, SplitConfig(sites=10, alpha=0.01, min_site_size=150, max_tries=5))


def test_ten_sites_at_alpha_point_one_terminates():
    split = make_split(SCL, SplitConfig(sites=10, alpha=0.1, seed=3))
    assert len(split.sites) == 10


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in (".csv", ".json")}


def test_same_seed_same_bytes_and_cli(tmp_path, capsys):
    args = ["split", "--fasta", str(SCL), "--hard", str(HARD), "--sites", "3", "--alpha", "0.5",
            "--seed", "7"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert "site-1" in capsys.readouterr().out
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a == b and "site-3/valid.csv" in a and "test_hard.csv" in a
    assert (tmp_path / "a" / "split.png").stat().st_size > 1000
    summary = json.loads(a["summary.json"])
    assert set(summary) >= {"pool", "partition", "alpha", "seed", "sites", "js_divergence"}
    assert json.loads(a["classes.json"]) == summary["classes"]
    header = a["site-1/train.csv"].decode().splitlines()[0]
    assert header == "id,sequence,label"
    # another seed gives another split
    assert main([*args[:-1], "8", "--out", str(tmp_path / "c")]) == 0
    assert _files(tmp_path / "c")["site-1/train.csv"] != a["site-1/train.csv"]


def test_existing_out_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["split", "--fasta", str(SCL), "--out", str(out)]
    assert main(args) == 0
    (out / "keep.txt").write_text("x")
    assert main(args) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "keep.txt").exists()
    assert main([*args, "--overwrite"]) == 2          # it would delete keep.txt
    assert "keep.txt, which fedbio did not write" in capsys.readouterr().err
    (out / "keep.txt").unlink()
    assert main([*args, "--overwrite"]) == 0          # a split folder is replaced, whole
    assert (out / "summary.json").exists()


def test_overwrite_never_replaces_a_folder_fedbio_did_not_write(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["split", "--fasta", str(SCL), "--out", str(out), "--overwrite"]) == 2
    assert "not a folder fedbio wrote" in capsys.readouterr().err
    assert (out / "keep.txt").exists()


def test_min_site_size_counts_training_records_after_the_validation_slice(tmp_path, capsys):
    with pytest.raises(FedbioError) as err:   # 0.99 once left sites 3-7 training records
        make_split(SCL, SplitConfig(valid_fraction=0.99, min_site_size=20))
    assert str(err.value).startswith("1678 training records cannot give 3 sites at least 20 "
                                     "training records each once --valid-fraction 0.99 takes")
    assert "lower --valid-fraction or --min-site-size" in str(err.value)
    assert main(["split", "--fasta", str(SCL), "--valid-fraction", "0.99",
                 "--out", str(tmp_path / "out")]) == 2
    assert "lower --valid-fraction or --min-site-size" in capsys.readouterr().err
    for seed in range(3):   # size skew: small sites, half their records for validation
        split = make_split(SCL, SplitConfig(partition="quantity", alpha=1.0, sites=5,
                                            valid_fraction=0.5, min_site_size=100, seed=seed))
        assert min(len(s["train"]) for s in split.sites.values()) >= 100


def test_smallest_site_is_the_least_size_that_keeps_min_site_size():
    from fedbio.data.split import n_valid, smallest_site

    for frac in (0.05, 0.1, 0.3, 0.5, 0.9, 0.99):
        for m in (0, 1, 2, 20, 150):
            least = smallest_site(m, frac)
            assert least - n_valid(least, frac) >= m
            assert least == 0 or least - 1 - n_valid(least - 1, frac) < m
    assert smallest_site(20, 0.1) == 22


def test_summary_says_how_validation_records_are_chosen(tmp_path):
    from fedbio.data.split import write_split

    folder = write_split(make_split(SCL, SplitConfig(valid_fraction=0.15)), tmp_path / "s",
                         plot=False)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["validation"] == ("a random 15% of each site's training records "
                                     "(--valid-fraction); the file's VALIDATION flags are not used")


def test_a_split_folder_with_the_old_header_reads_the_same(tmp_path):
    """fedbio 0.1 wrote ``id,sequences,labels``; such a folder still loads, record for record."""
    from fedbio.data.tasks import load_task

    new = tmp_path / "new"
    assert main(["split", "--fasta", str(SCL), "--sites", "2", "--seed", "1", "--out", str(new)]) == 0
    old = tmp_path / "old"
    shutil.copytree(new, old)
    for path in old.rglob("*.csv"):
        head, rest = path.read_text().split("\n", 1)
        assert head == "id,sequence,label"
        path.write_text("id,sequences,labels\n" + rest)
    a, b = load_task(new), load_task(old)
    assert a.classes == b.classes
    for site in a.sites:
        for part in ("train", "valid"):
            assert [(r.id, r.sequence, r.label) for r in a.sites[site][part]] == \
                   [(r.id, r.sequence, r.label) for r in b.sites[site][part]]
    assert [(r.id, r.sequence, r.label) for r in a.test] == [(r.id, r.sequence, r.label) for r in b.test]


# --public-fraction: an unlabelled transfer set for federated distillation (fedbio.data.public)

# md5 of each site's files for SplitConfig(seed=0) with --hard, written before the public set
# existed: a split without one must stay byte for byte what it was
PINNED_SITES = {"site-1/train.csv": "323d1bb704b87ee422c364e2e3947fe1",
                "site-1/valid.csv": "26f9b4915f31cccb2d3cb8027bc778c9",
                "site-2/train.csv": "ca0560ec6f2d157373e1eed98de31a43",
                "site-2/valid.csv": "44a75239de415b01f43bc7f81657d69a",
                "site-3/train.csv": "7aac9e9b13fa007f2e3b1d9ba3559939",
                "site-3/valid.csv": "94188d5d1f466dd0ed652deb535ed557"}


@pytest.fixture(scope="module")
def with_public():
    return {seed: make_split(SCL, SplitConfig(seed=seed, public_fraction=0.2), hard=HARD)
            for seed in (0, 1)}


def test_public_set_is_stratified_and_leaves_the_rest_to_the_sites(with_public):
    from fedbio.data.records import label_counts, read_records
    from fedbio.data.split import train_pool

    split = with_public[0]
    pool = train_pool(read_records(SCL))
    wanted = {c: min(int(round(0.2 * n)), n - 1) for c, n in label_counts(pool, split.classes).items()}
    assert label_counts(split.public, split.classes) == wanted
    assert sum(wanted.values()) == len(split.public) == 336
    at_sites = [r for s in split.sites.values() for part in s.values() for r in part]
    assert sorted(_ids(at_sites + split.public)) == sorted(_ids(pool))   # nothing lost, nothing twice
    order = {r.id: i for i, r in enumerate(pool)}
    assert [order[r.id] for r in split.public] == sorted(order[r.id] for r in split.public)


def test_public_set_is_seeded(with_public):
    again = make_split(SCL, SplitConfig(seed=0, public_fraction=0.2), hard=HARD)
    assert _ids(again.public) == _ids(with_public[0].public)
    assert {s: _ids(p["train"]) for s, p in again.sites.items()} == \
           {s: _ids(p["train"]) for s, p in with_public[0].sites.items()}
    assert set(_ids(with_public[1].public)) != set(_ids(with_public[0].public))


def test_public_set_is_disjoint_from_sites_and_tests(with_public):
    for split in with_public.values():
        public_ids = set(_ids(split.public))
        public_seqs = {r.sequence for r in split.public}
        for parts in split.sites.values():
            for part in ("train", "valid"):
                assert not public_ids & set(_ids(parts[part]))
                assert not public_seqs & {r.sequence for r in parts[part]}
        for test in (split.test, split.test_hard):
            assert not public_ids & set(_ids(test))
            assert not public_seqs & {r.sequence for r in test}


def test_no_public_fraction_gives_the_split_it_always_gave(tmp_path):
    import hashlib

    from fedbio.data.split import save_split

    split = make_split(SCL, SplitConfig(seed=0, public_fraction=0.0), hard=HARD)
    assert split.public is None and "n_public" not in split.summary()
    folder = save_split(split, tmp_path / "s", plot=False)
    assert not (folder / "public.csv").exists()
    files = _files(folder)
    assert {name: hashlib.md5(files[name]).hexdigest() for name in PINNED_SITES} == PINNED_SITES
    default = make_split(SCL, SplitConfig(seed=0), hard=HARD)   # the field left at its default
    assert {s: _ids(p["train"]) for s, p in default.sites.items()} == \
           {s: _ids(p["train"]) for s, p in split.sites.items()}


def test_public_csv_is_unlabelled_and_summarised(with_public, tmp_path):
    from fedbio.data.split import save_split, split_table

    split = with_public[0]
    folder = save_split(split, tmp_path / "s", plot=False)
    lines = (folder / "public.csv").read_text().splitlines()
    assert lines[0] == "id,sequence"
    assert lines[1:] == [f"{r.id},{r.sequence}" for r in split.public]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["n_public"] == len(split.public) and summary["public_fraction"] == 0.2
    assert "public (unlabelled, for distillation): 336 records" in split_table(summary)
    assert sum(s["n_train"] + s["n_valid"] for s in summary["sites"].values()) == 1678 - 336


@pytest.mark.parametrize("value", ["-0.1", "1", "1.5", "nan", "inf"])
def test_bad_public_fraction_is_one_line_and_writes_nothing(value, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["split", "--fasta", str(SCL), "--public-fraction", value, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedbio: error:") and err.count("\n") == 1
    assert "--public-fraction" in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_cli_writes_public_csv_that_runs_ignore(tmp_path, capsys):
    from fedbio.data.public import read_public, split_public
    from fedbio.data.tasks import load_task

    out = tmp_path / "out"
    assert main(["split", "--fasta", str(SCL), "--hard", str(HARD), "--seed", "3",
                 "--public-fraction", "0.1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "public (unlabelled, for distillation): 168 records" in printed
    assert printed.splitlines()[-1].endswith("split.png, public.csv)")
    split = make_split(SCL, SplitConfig(seed=3, public_fraction=0.1), hard=HARD)
    assert split_public(out) == out / "public.csv"
    assert [(r.id, r.sequence, r.label) for r in read_public(out / "public.csv")] == \
           [(r.id, r.sequence, None) for r in split.public]
    task = load_task(out)   # public.csv is no site's and no test file
    assert list(task.sites) == ["site-1", "site-2", "site-3"]
    for name, parts in split.sites.items():
        for part in ("train", "valid"):
            assert _ids(task.sites[name][part]) == _ids(parts[part])
    assert _ids(task.test) == _ids(split.test) and "public.csv" not in task.checksums
