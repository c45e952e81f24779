"""Hostile input: every bad file ends in ONE DataError naming the file (and line), never a
traceback, never silently changed data; what is fine (BOM, CRLF, gzip) reads as its clean twin."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest
from conftest import HARD, SCL

from fedbio.cli import main
from fedbio.data.fields import MAX_SEQUENCE_LENGTH, NA_STRINGS
from fedbio.data.records import read_records
from fedbio.data.split import SplitConfig, make_split, write_split
from fedbio.data.tasks import load_task
from fedbio.errors import DataError, FedbioError

GOOD_FASTA = (">P1 TARGET=Nucleus SET=train\nMKV\n>P2 TARGET=Cytoplasm SET=train\nMKL\n"
              ">P3 TARGET=Nucleus SET=test\nMKA\n>P4 TARGET=Cytoplasm SET=test\nMKC\n")
GOOD_CSV = "id,sequences,labels\nP1,MKV,Nucleus\nP2,MKL,Cytoplasm\nP3,MKA,Nucleus\n"


def _write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _refused(path: Path, line: int | None, words: str, **kwargs) -> DataError:
    """read_records must raise exactly one DataError that names the file and the line."""
    with pytest.raises(DataError) as err:
        read_records(path, **kwargs)
    error = err.value
    assert error.path == path and error.line == line
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    assert str(error).startswith(where), str(error)
    assert words in str(error), str(error)
    assert "\n" not in str(error)
    return error


def _triples(records) -> list[tuple]:
    return [(r.id, r.sequence, r.label, r.set, r.line) for r in records]


# ---------------------------------------------------------------------------------------------
# 1. bytes that are not UTF-8 text


@pytest.mark.parametrize("name, data, line", [
    ("late.fasta", GOOD_FASTA.encode() + b">P5 TARGET=Nucl\xe9us SET=train\nMKW\n", 9),
    ("late.csv", GOOD_CSV.encode() + b"P4,MKW,Cytopl\xe4sm\n", 5),
    ("late_crlf.csv", GOOD_CSV.replace("\n", "\r\n").encode() + b"P4,MKW,Cyto\xff\r\n", 5),
    ("latin1_seq.fasta", b">P1 TARGET=A SET=train\nMK\xc4V\n", 2),
])
def test_non_utf8_byte_names_file_and_line(tmp_path, name, data, line):
    _refused(_write(tmp_path, name, data), line, "save the file as UTF-8")


@pytest.mark.parametrize("name, data, line, words", [
    ("utf16.csv", GOOD_CSV.encode("utf-16"), 1, "UTF-16"),
    ("png.fasta", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 1, "not a FASTA or CSV file"),
    ("nul.fasta", b">P1 TARGET=A SET=train\nMKV\x00\x00\n", 2, "NUL byte"),
])
def test_binary_and_other_encodings_are_refused(tmp_path, name, data, line, words):
    _refused(_write(tmp_path, name, data), line, words)


# ---------------------------------------------------------------------------------------------
# 2. damaged gzip


def _gz(text: str) -> bytes:
    return gzip.compress(text.encode(), mtime=0)


LONG = "".join(f">P{i} TARGET=Nucleus SET=train\nMKV{'A' * (i % 50)}\n" for i in range(3000))


@pytest.mark.parametrize("name, data", [
    ("truncated.fasta.gz", _gz(LONG)[: len(_gz(LONG)) // 2]),
    ("garbage.fasta.gz", b"this is not gzip at all\n"),
    ("damaged.fasta.gz", _gz(LONG)[:30] + b"\x00\xff" * 40 + _gz(LONG)[110:]),
    ("trailing.csv.gz", _gz(GOOD_CSV) + b"junk"),
])
def test_damaged_gzip_is_one_data_error(tmp_path, name, data):
    path = _write(tmp_path, name, data)
    with pytest.raises(DataError) as err:
        read_records(path)
    assert "compressed file is truncated or damaged" in str(err.value)
    assert str(err.value).startswith(f"{path}:{err.value.line}: ") and err.value.line >= 1


def test_empty_gzip_and_gzip_without_gz_name(tmp_path):
    _refused(_write(tmp_path, "zero.fasta.gz", b""), None, "file is empty")
    # a compressed file named without .gz reads as what it holds, not as bad bytes
    hidden = read_records(_write(tmp_path, "hidden.fasta", _gz(GOOD_FASTA)))
    assert _triples(hidden) == _triples(read_records(_write(tmp_path, "plain.fasta", GOOD_FASTA)))


# ---------------------------------------------------------------------------------------------
# 3. byte-order mark, CRLF, CR: read exactly as the clean file


@pytest.mark.parametrize("name, text", [("a.csv", GOOD_CSV), ("a.fasta", GOOD_FASTA)],
                         ids=["csv", "fasta"])
@pytest.mark.parametrize("variant", ["bom", "crlf", "cr", "bom+crlf+gz"])
def test_bom_and_line_ends_read_as_the_clean_file(tmp_path, name, text, variant):
    clean = read_records(_write(tmp_path, "clean_" + name, text))
    data = text.replace("\n", "\r\n") if "crlf" in variant else text
    data = data.replace("\n", "\r") if variant == "cr" else data
    raw = ("\ufeff" if "bom" in variant else "").encode() + data.encode()
    path = _write(tmp_path, f"{variant}_{name}" + (".gz" if "gz" in variant else ""),
                  gzip.compress(raw) if "gz" in variant else raw)
    got = read_records(path)
    assert _triples(got) == _triples(clean)
    assert got[0].id == "P1"   # not 'row2': the id column is seen through the BOM


# ---------------------------------------------------------------------------------------------
# 4. biotrainer headers: KEY=VALUE tokens, nothing else


@pytest.mark.parametrize("header, words", [
    (">P2 TARGET=Cell membrane SET=train", "write e.g. TARGET=Cell_membrane"),
    (">P2 TARGET=Nucleus SET=train extra", "'extra' is not KEY=VALUE"),
    (">P2 TARGET = Nucleus SET=train", "'TARGET' is not KEY=VALUE"),
    (">P2 TARGET= SET=train", "TARGET= has no value"),
    (">P2 TARGET=Nucleus SET=", "SET= has no value"),
    (">P2 TARGET=Nucleus TARGET=Cytoplasm SET=train", "has TARGET= twice"),
    (">P2 TARGET=Nucleus target=Cytoplasm SET=train", "has TARGET= twice"),
    (">P2 =Nucleus SET=train", "has no key"),
    (">P2 TARGET=Nucleus SETT=train", "did you mean SET=?"),
    (">TARGET=Nucleus SET=train", "not a record id"),
])
def test_header_tokens_must_be_key_value(tmp_path, header, words):
    text = f">P1 TARGET=Nucleus SET=train\nMKV\n{header}\nMKL\n"
    _refused(_write(tmp_path, "h.fasta", text), 3, words)


def test_header_forms_that_stay_fine(tmp_path):
    text = ">P1\tTARGET=Nucleus\tSET=Val  VALIDATION=TRUE\nMKV\n>P2 target=Golgi/ER set=TRAIN\nMKL\n"
    records = read_records(_write(tmp_path, "ok.fasta", text))
    assert [(r.id, r.label, r.set, r.validation) for r in records] == [
        ("P1", "Nucleus", "val", True), ("P2", "Golgi/ER", "train", None)]
    # prediction input may carry any header (UniProt's): labels are not read there
    uniprot = ">sp|P1|X_HUMAN Protein kinase OS=Homo sapiens OX=9606\nMKV\n"
    assert read_records(_write(tmp_path, "u.fasta", uniprot), labelled=False)[0].id == "sp|P1|X_HUMAN"


# ---------------------------------------------------------------------------------------------
# 5. missing-value labels


@pytest.mark.parametrize("na", sorted(NA_STRINGS))
def test_missing_class_label_in_csv(tmp_path, na):
    cell = f'"{na}"' if na else ""
    path = _write(tmp_path, "na.csv", f"id,sequences,labels\nP1,MKV,Nucleus\nP2,MKL,{cell}\n")
    _refused(path, 3, f"record 'P2': label {na!r} is a missing value; give every record a class")
    assert read_records(path, labelled=False)[1].label is None   # prediction input: ignored


@pytest.mark.parametrize("na", sorted(s for s in NA_STRINGS if s and " " not in s))
def test_missing_class_label_in_fasta(tmp_path, na):
    path = _write(tmp_path, "na.fasta", f">P1 TARGET=Nucleus SET=train\nMKV\n>P2 TARGET={na}\nMKL\n")
    _refused(path, 3, f"label {na!r} is a missing value")


@pytest.mark.parametrize("value, words", [
    ("nan", "is a missing value"), ("NA", "is a missing value"), ("", "is a missing value"),
    ("inf", "not a finite number"), ("-inf", "not a finite number"),
    ("Infinity", "not a finite number"), ("1e400", "not a finite number"),
    ("1_000", "not a plain decimal number"), ("\u0661\u0662", "not a plain decimal number"),
    ("1,5", "not a number"),
])
def test_regression_value_must_be_a_finite_number(tmp_path, value, words):
    path = _write(tmp_path, "v.csv", f'id,sequence,labels\nx1,MKV,1.5\nx2,MKL,"{value}"\n')
    _refused(path, 3, words, kind="value")
    fasta = _write(tmp_path, "v.fasta", f">x1 TARGET=1.5\nMKV\n>x2 TARGET={value or 'NaN'}\nMKL\n")
    if "," not in value:
        _refused(fasta, 3, "label", kind="value")


def test_plain_numbers_still_read(tmp_path):
    path = _write(tmp_path, "v.csv", "sequence,labels\nMKV,1.5\nMKL,-2e-3\nMKA,+.5\nMKC,7.\n")
    assert [r.label for r in read_records(path, kind="value")] == [1.5, -0.002, 0.5, 7.0]


# ---------------------------------------------------------------------------------------------
# 6. a class the test set holds and no training record does


def test_make_split_refuses_a_test_only_class(tmp_path):
    text = GOOD_FASTA + ">P5 TARGET=Golgi SET=test\nMKD\n>P6 TARGET=Golgi SET=test\nMKE\n"
    path = _write(tmp_path, "t.fasta", text)
    with pytest.raises(DataError) as err:
        make_split(path, SplitConfig(sites=1, min_site_size=1))
    assert str(err.value).startswith(f"{path}:9: class 'Golgi' appears only in the test set; "
                                     "no model can learn it")


def test_make_split_refuses_a_hard_test_class_no_training_record_holds(tmp_path):
    fasta = _write(tmp_path, "t.fasta", GOOD_FASTA)
    hard = _write(tmp_path, "hard.fasta", ">H1 TARGET=Nucleus\nMKE\n>H2 TARGET=Golgi\nMKF\n")
    with pytest.raises(DataError) as err:
        make_split(fasta, SplitConfig(sites=1, min_site_size=1), hard=hard,
                   classes=["Cytoplasm", "Golgi", "Nucleus"])
    assert str(err.value).startswith(f"{hard}:3: class 'Golgi' appears only in the test set")


def _own_split(root: Path, test_rows: str, hard_rows: str | None = None) -> Path:
    """A user's own split folder: two sites of Nucleus / Cytoplasm records."""
    head = "id,sequences,labels\n"
    files = {"site-1/train.csv": "a1,MKV,Nucleus\na2,MKL,Cytoplasm\n",
             "site-1/valid.csv": "a3,MKA,Nucleus\n",
             "site-2/train.csv": "b1,MKC,Nucleus\n", "site-2/valid.csv": "b2,MKD,Cytoplasm\n",
             "test.csv": test_rows}
    if hard_rows is not None:
        files["test_hard.csv"] = hard_rows
    for name, rows in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(head + rows)
    return root


def test_load_task_refuses_a_test_only_class(tmp_path):
    folder = _own_split(tmp_path / "s", "t1,MKE,Nucleus\nt2,MKF,Golgi\n")
    with pytest.raises(DataError) as err:
        load_task(folder)
    assert str(err.value).startswith(f"{folder / 'test.csv'}:3: class 'Golgi' appears only in the test")
    hard = _own_split(tmp_path / "h", "t1,MKE,Nucleus\n", "h1,MKF,Cytoplasm\nh2,MKG,Plastid\n")
    with pytest.raises(DataError) as err:
        load_task(hard)
    assert str(err.value).startswith(f"{hard / 'test_hard.csv'}:3: class 'Plastid'")
    assert load_task(_own_split(tmp_path / "ok", "t1,MKE,Cytoplasm\n")).classes == [
        "Cytoplasm", "Nucleus"]


def test_hard_file_holding_training_records_is_refused(tmp_path):
    fasta = _write(tmp_path, "t.fasta", GOOD_FASTA)
    with pytest.raises(DataError) as err:   # --hard given the training file itself
        make_split(fasta, SplitConfig(sites=1, min_site_size=1), hard=fasta)
    assert str(err.value).startswith(f"{fasta}:1: test record 'P1' has the same sequence as "
                                     f"training record 'P1' ({fasta}:1)")


@pytest.mark.parametrize("data, words", [
    (json.dumps(["Nucleus", "Cytoplasm", "Nucleus"]).encode(), "'Nucleus' is listed twice"),
    (b"[]", "expected a non-empty JSON array"),
    (b'["Nucl\xe9us"]', "not UTF-8 text"),
    (b'{"a": 1}', "expected a non-empty JSON array"),
])
def test_bad_classes_json_is_refused(tmp_path, data, words):
    folder = _own_split(tmp_path / "s", "t1,MKE,Nucleus\n")
    (folder / "classes.json").write_bytes(data)
    with pytest.raises(FedbioError, match=words):
        load_task(folder)
    (folder / "classes.json").write_bytes(b'\xef\xbb\xbf["Cytoplasm", "Nucleus"]')   # BOM: fine
    assert load_task(folder).classes == ["Cytoplasm", "Nucleus"]


# ---------------------------------------------------------------------------------------------
# 7. sequence length: one limit for split and run


def test_sequence_longer_than_the_limit_is_refused_in_both_formats(tmp_path):
    long = "M" * (MAX_SEQUENCE_LENGTH + 1)
    fasta = _write(tmp_path, "long.fasta", ">P1 TARGET=A SET=train\nMKV\n>P2 TARGET=A SET=train\n"
                   + "\n".join(long[i:i + 60] for i in range(0, len(long), 60)) + "\n")
    _refused(fasta, 3, f"more than the {MAX_SEQUENCE_LENGTH} fedbio reads")
    _refused(_write(tmp_path, "long.csv", f"sequences,labels\nMKV,A\n{long},B\n"), 3,
             f"more than the {MAX_SEQUENCE_LENGTH} fedbio reads")
    huge = _write(tmp_path, "huge.csv", f"sequences,labels\nMKV,A\n{long * 5},B\n")
    _refused(huge, 3, f"sequences may hold at most {MAX_SEQUENCE_LENGTH} residues")


def test_longest_allowed_sequence_reads_whatever_the_csv_limit(tmp_path):
    seq = "MK" * (MAX_SEQUENCE_LENGTH // 2)
    path = _write(tmp_path, "max.csv", f"id,sequences,labels\n{'i' * 1000},{seq},{'L' * 1000}\n")
    before = csv.field_size_limit(1000)   # as if something else in the process had lowered it
    try:
        assert read_records(path)[0].sequence == seq
    finally:
        csv.field_size_limit(before)


def test_split_writes_only_what_run_reads(tmp_path):
    seq = "MK" * (MAX_SEQUENCE_LENGTH // 2)
    text = GOOD_FASTA + f">P9 TARGET=Nucleus SET=train\n{seq}\n"
    split = make_split(_write(tmp_path, "max.fasta", text), SplitConfig(sites=1, min_site_size=1))
    folder = write_split(split, tmp_path / "split", plot=False)
    task = load_task(folder)
    assert seq in {r.sequence for r in task.pooled("train") + task.pooled("valid")}


# ---------------------------------------------------------------------------------------------
# 8. split settings


@pytest.mark.parametrize("field, value, words", [
    ("sites", 0, "--sites must be a whole number >= 1"),
    ("sites", 2.5, "--sites must be a whole number >= 1"),
    ("alpha", float("inf"), "--alpha must be a finite number > 0"),
    ("alpha", float("nan"), "--alpha must be a finite number > 0"),
    ("alpha", 0.0, "--alpha must be a finite number > 0"),
    ("valid_fraction", 1.0, "--valid-fraction must be a finite number > 0 and < 1"),
    ("valid_fraction", float("nan"), "--valid-fraction must be a finite number > 0 and < 1"),
    ("valid_fraction", -0.1, "--valid-fraction must be a finite number > 0 and < 1"),
    # 0 wrote empty valid.csv files that run then refused: every site needs validation records
    ("valid_fraction", 0.0, "--valid-fraction must be a finite number > 0 and < 1, not 0.0 "
                            "(every site needs validation records"),
    ("min_site_size", -1, "--min-site-size must be a whole number >= 0"),
    ("min_site_size", 1.5, "--min-site-size must be a whole number >= 0"),
    ("seed", -5, "--seed must be a whole number from 0 to 4294967295"),
    ("seed", 2**32, "--seed must be a whole number from 0 to 4294967295"),
])
def test_split_settings_are_checked(field, value, words):
    with pytest.raises(FedbioError) as err:
        make_split(SCL, SplitConfig(**{field: value}))
    assert str(err.value).startswith(words)


def test_a_site_too_small_to_train_and_validate_is_refused(tmp_path):
    with pytest.raises(FedbioError, match="too few for a training and a validation part"):
        make_split(_write(tmp_path, "t.fasta", GOOD_FASTA), SplitConfig(sites=2, min_site_size=0))


# ---------------------------------------------------------------------------------------------
# 9. everything else a hostile user tries


@pytest.mark.parametrize("name, text, line, words", [
    ("header_only.csv", "id,sequences,labels\n", None, "file holds no records"),
    ("header_only.fasta", ">P1 TARGET=A SET=train\n", 1, "empty sequence"),
    ("quote_mid.csv", 'sequences,labels\nMKV,A\n"MKL"x,B\n', 3, "stray quote"),
    ("quote_open.csv", 'sequences,labels\nMKV,"A\nMKL,B\n', 2, "never closed"),
    ("quote_swallows.csv", 'sequences,labels\nMKV,"A\nMKL,B\nMKA,C"\nMKC,D\n', 2,
     "a quoted field runs from line 2 to line 4"),
    ("two_seq_columns.csv", "sequence,sequences,labels\nMKV,MKL,A\n", 1,
     "columns 'sequence' and 'sequences'; keep one"),
    ("two_label_columns.csv", "sequences,labels,labels\nMKV,A,B\n", 1, "keep one"),
    ("tabs.csv", "sequences\tlabels\nMKV\tA\n", 1, "tab-separated"),
    ("semicolons.csv", "sequences;labels\nMKV;A\n", 1, "';'-separated"),
    ("case.fasta", ">P1 TARGET=Nucleus\nMKV\n>P2 TARGET=nucleus\nMKL\n", 3, "differ only in case"),
    ("case.csv", "sequences,labels\nMKV,Golgi\nMKL,GOLGI\n", 3, "differ only in case"),
    ("tab_in_seq.csv", "sequences,labels\nMK\tV,A\n", 2, "outside the protein alphabet"),
    ("nbsp.fasta", ">P1 TARGET=A\nMK\u00a0V\n", 1, "outside the protein alphabet"),
])
def test_hostile_text_is_one_data_error(tmp_path, name, text, line, words):
    _refused(_write(tmp_path, name, text), line, words)


def test_blank_lines_before_the_csv_header_are_skipped(tmp_path):
    records = read_records(_write(tmp_path, "blank.csv", "\n \n" + GOOD_CSV))
    assert [(r.id, r.line) for r in records] == [("P1", 4), ("P2", 5), ("P3", 6)]
    _refused(_write(tmp_path, "bad.csv", "\n\nname,labels\nMKV,A\n"), 3, "needs a 'sequence'")


def test_folders_and_odd_paths(tmp_path):
    (tmp_path / "dir.fasta").mkdir()
    _refused(tmp_path / "dir.fasta", None, "is a folder, not a file")
    _refused(tmp_path / "missing.fasta", None, "file not found")


def test_case_hint_against_a_class_list(tmp_path):
    path = _write(tmp_path, "h.fasta", ">H1 TARGET=nucleus\nMKV\n")
    _refused(path, 1, "(did you mean 'Nucleus'?)", classes=["Cytoplasm", "Nucleus"])


# ---------------------------------------------------------------------------------------------
# the command line: one line on stderr, exit 2, nothing written


@pytest.mark.parametrize("name, data, line", [
    ("latin1.fasta", GOOD_FASTA.encode() + b">P5 TARGET=Nucl\xe9us SET=train\nMKW\n", 9),
    ("truncated.fasta.gz", _gz(LONG)[: len(_gz(LONG)) // 2], None),
    ("space.fasta", GOOD_FASTA + ">P5 TARGET=Cell membrane SET=train\nMKW\n", 9),
    ("nan.fasta", GOOD_FASTA + ">P5 TARGET=nan SET=train\nMKW\n", 9),
    ("testonly.fasta", GOOD_FASTA + ">P5 TARGET=Golgi SET=test\nMKW\n", 9),
])
def test_cli_split_prints_one_line_and_writes_nothing(tmp_path, capsys, name, data, line):
    bad = _write(tmp_path, name, data)
    out = tmp_path / "out"
    code = main(["split", "--fasta", str(bad), "--out", str(out), "--sites", "1",
                 "--min-site-size", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"fedbio: error: {bad}:"), err
    if line is not None:
        assert err.startswith(f"fedbio: error: {bad}:{line}: "), err
    assert "Traceback" not in err
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("out")]


def test_cli_split_refuses_a_negative_seed_in_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["split", "--fasta", str(SCL), "--hard", str(HARD), "--seed", "-5",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == "fedbio: error: --seed must be a whole number from 0 to 4294967295, not -5\n"
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# 10. class labels that are a missing value or carry quotes; paths that lead nowhere


@pytest.mark.parametrize("na", ["-", "?"])
def test_dash_and_question_mark_are_missing_class_labels(tmp_path, na):
    csv_path = _write(tmp_path, "na.csv", f"id,sequences,labels\nP1,MKV,Nucleus\nP2,MKL,{na}\n")
    _refused(csv_path, 3, f"record 'P2': label {na!r} is a missing value; give every record a class")
    fasta = _write(tmp_path, "na.fasta", f">P1 TARGET=Nucleus SET=train\nMKV\n>P2 TARGET={na}\nMKL\n")
    _refused(fasta, 3, f"label {na!r} is a missing value")
    _refused(_write(tmp_path, "v.csv", f"sequences,labels\nMKV,1.5\nMKL,{na}\n"), 3,
             "is not a number", kind="value")          # a value: refused as not a number
    assert read_records(csv_path, labelled=False)[1].label is None   # prediction input: ignored


@pytest.mark.parametrize("name, text, label", [
    ("dq.fasta", '>P1 TARGET=Nucleus SET=train\nMKV\n>P2 TARGET="Cell_membrane" SET=train\nMKL\n',
     '"Cell_membrane"'),
    ("sq.fasta", ">P1 TARGET=Nucleus SET=train\nMKV\n>P2 TARGET='Nucleus' SET=train\nMKL\n",
     "'Nucleus'"),
    ("smart.fasta", ">P1 TARGET=Nucleus\nMKV\n>P2 TARGET=\u201cNucleus\u201d\nMKL\n",
     "\u201cNucleus\u201d"),
    ("dq.csv", 'sequences,labels\nMKV,Nucleus\nMKL,"""Nucleus"""\n', '"Nucleus"'),   # csv-quoted
    ("sq.csv", "sequences,labels\nMKV,Nucleus\nMKL,'Nucleus'\n", "'Nucleus'"),
])
def test_a_class_label_in_quotes_is_refused(tmp_path, name, text, label):
    path = _write(tmp_path, name, text)
    _refused(path, 3, f"label {label!r} holds a quote character")
    _refused(path, 3, "write the label without quotes")
    assert len(read_records(path, labelled=False)) == 2   # prediction input: labels not read


def test_missing_path_and_symbolic_links_that_lead_nowhere(tmp_path):
    _refused(tmp_path / "missing.fasta", None, "file not found; check the path")
    dangling = tmp_path / "dangling.fasta"
    dangling.symlink_to(tmp_path / "gone.fasta")
    _refused(dangling, None, f"is a symbolic link that leads nowhere ({tmp_path / 'gone.fasta'} "
             "does not exist); point it at the file")
    loop = tmp_path / "loop.fasta"
    loop.symlink_to(loop)
    _refused(loop, None, "is a symbolic link that loops")


@pytest.mark.parametrize("name, text, line, fix", [
    ("conflict.fasta", ">P1 TARGET=A SET=train\nMKV\n>P2 TARGET=B SET=train\nMKV\n", 3,
     "keep one label per sequence (drop or relabel one record)"),
    ("dup.csv", "id,sequences,labels\nP1,MKV,A\nP1,MKL,A\n", 3, "give each record its own id"),
    ("notarget.fasta", ">P1 SET=train\nMKV\n", 1, "add its label (e.g. TARGET=Nucleus)"),
    ("empty_seq.fasta", ">P1 TARGET=A\n>P2 TARGET=A\nMKV\n", 1, "or drop the record"),
    ("letters.csv", "sequences,labels\nMK1,A\n", 2, "fix the sequence or drop the record"),
    ("badset.fasta", ">P1 TARGET=A SET=holdout\nMKV\n", 1, "write one of train, val, test"),
    ("header.csv", "name,value\nx,1\n", 1, "the first row names the columns"),
    ("csv_named.fasta", "sequences,labels\nMKV,A\n", 1, "or name a CSV file .csv"),
    ("empty.csv", "\n\n", None, "give a FASTA or CSV file that holds records"),
    ("header_only.csv", "id,sequences,labels\n", None, "add records or give another file"),
])
def test_every_message_says_what_to_do(tmp_path, name, text, line, fix):
    _refused(_write(tmp_path, name, text), line, fix)


def test_a_label_outside_the_class_list_says_what_to_do(tmp_path):
    path = _write(tmp_path, "h.fasta", ">H1 TARGET=Golgi\nMKV\n")
    _refused(path, 1, "fix the label or drop the record", classes=["Nucleus"])


def test_pool_original_without_sets_names_the_fasta(tmp_path):
    path = _write(tmp_path, "noset.fasta", ">P1 TARGET=A\nMKV\n>P2 TARGET=B\nMKL\n")
    with pytest.raises(DataError) as err:
        make_split(path, SplitConfig(sites=1, min_site_size=1))
    assert str(err.value).startswith(f"{path}: pool 'original' needs records with SET=train and "
                                     "SET=test in the file (found 0 train, 0 test); give the "
                                     "records SET= fields, or use --pool random")
