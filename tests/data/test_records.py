"""fedbio.data.records: every bad input gives one clear error naming the file and line."""

from __future__ import annotations

import gzip
import subprocess
import sys

import pytest
from conftest import HARD, SCL

from fedbio.data.records import class_list, read_records
from fedbio.errors import DataError

GOOD = """>P1 TARGET=Nucleus SET=train VALIDATION=False
MKTAYIAKQR
>P2 TARGET=Lysosome/Vacuole SET=test VALIDATION=False
mktayiakqrQISFVKSHFS
>P3 TARGET=Cytoplasm SET=train VALIDATION=True
MKTAY
IAKQRX
"""


def test_shipped_files_parse_whole():
    records = read_records(SCL)
    assert len(records) == 4446
    assert sum(r.set == "train" for r in records) == 1678
    assert sum(r.set == "test" for r in records) == 2768
    classes = class_list(records)
    assert len(classes) == 10 and "Lysosome/Vacuole" in classes
    hard = read_records(HARD, classes=classes)
    assert len(hard) == 490


def test_biotrainer_fasta_parses(write):
    records = read_records(write("a.fasta", GOOD))
    assert [r.id for r in records] == ["P1", "P2", "P3"]
    assert records[1].label == "Lysosome/Vacuole"          # '/' kept whole
    assert records[1].sequence == "MKTAYIAKQRQISFVKSHFS"   # lower case upper-cased
    assert records[2].sequence == "MKTAYIAKQRX"            # wrapped lines joined
    assert records[2].validation is True and records[0].validation is False
    assert records[1].line == 3


def test_old_biotrainer_form_and_gzip(tmp_path):
    path = tmp_path / "old.fasta.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(">Sequence1 TARGET=Nucleus SET=val\nMKV\n>Sequence2 TARGET=Plastid SET=train\nMKL\n")
    records = read_records(path)
    assert [r.set for r in records] == ["val", "train"]
    assert records[0].validation is None


def test_csv_forms(write):
    a = read_records(write("a.csv", "sequences,labels\nMKV,Nucleus\nMKL,Plastid\n"))
    b = read_records(write("b.csv", "id,sequence,labels\nx1,MKV,1.5\n"), kind="value")
    assert [r.label for r in a] == ["Nucleus", "Plastid"]
    assert b[0].id == "x1" and b[0].label == 1.5


@pytest.mark.parametrize(
    "name,text,line,words",
    [
        ("notarget.fasta", ">P1 SET=train\nMKV\n", 1, "no TARGET"),
        ("badset.fasta", ">P1 TARGET=A SET=train\nMKV\n>P2 TARGET=A SET=holdout\nMKV\n", 3, "unknown SET"),
        ("empty_seq.fasta", ">P1 TARGET=A SET=train\n>P2 TARGET=A SET=train\nMKV\n", 1, "empty sequence"),
        ("letters.fasta", ">P1 TARGET=A SET=train\nMKV\n>P2 TARGET=A SET=train\nMK1J\n", 3, "outside the protein alphabet"),
        ("dup.fasta", ">P1 TARGET=A SET=train\nMKV\n>P1 TARGET=A SET=train\nMKL\n", 3, "appears twice"),
        ("conflict.fasta", ">P1 TARGET=A SET=train\nMKV\n>P2 TARGET=B SET=train\nMKV\n", 3, "conflicting labels"),
        ("notfasta.fasta", "hello world\n", 1, "not a FASTA file"),
        ("bad.csv", "name,value\nx,1\n", 1, "'sequences'"),
        ("ragged.csv", "sequences,labels\nMKV,A\nMKV\n", 3, "fields"),
        ("csvletters.csv", "sequences,labels\nMKV,A\nMK*,A\n", 3, "outside the protein alphabet"),
    ],
)
def test_bad_input_names_file_and_line(write, name, text, line, words):
    path = write(name, text)
    with pytest.raises(DataError) as err:
        read_records(path)
    assert err.value.line == line
    assert words in str(err.value)
    assert str(err.value).startswith(f"{path}:{line}:")


def test_empty_and_binary_files(write, tmp_path):
    with pytest.raises(DataError, match="empty"):
        read_records(write("empty.fasta", "\n\n"))
    binary = tmp_path / "x.fasta"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(DataError, match="not a FASTA or CSV"):
        read_records(binary)
    with pytest.raises(DataError, match="not found"):
        read_records(tmp_path / "missing.fasta")


def test_label_outside_class_list(write):
    path = write("a.fasta", ">P1 TARGET=Nucleus SET=train\nMKV\n>P2 TARGET=Golgi SET=train\nMKL\n")
    with pytest.raises(DataError, match=r"'Golgi' is not in the class list") as err:
        read_records(path, classes=["Nucleus"])
    assert err.value.line == 3


def test_cli_bad_input_exits_nonzero_without_traceback(write, tmp_path):
    bad = write("bad.fasta", ">P1 SET=train\nMKV\n")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "fedbio", "split", "--fasta", str(bad), "--out", str(out)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{bad}:1: header of record 'P1' has no TARGET" in proc.stderr
    assert not out.exists()  # nothing written


def test_download_offline_says_so_and_leaves_nothing(tmp_path):
    from fedbio.data.download import download_flip_scl
    from fedbio.errors import FedbioError

    with pytest.raises(FedbioError, match="needs the network") as err:
        download_flip_scl(tmp_path, url="http://127.0.0.1:9/mixed_soft.fasta", timeout=2)
    assert "data/scl works offline" in str(err.value)
    assert not list(tmp_path.iterdir())
