"""fedbio.data.public: the unlabelled transfer set of federated distillation, read and checked."""

from __future__ import annotations

import pytest
from conftest import HARD

from fedbio.data.fields import Record
from fedbio.data.public import (
    PUBLIC_FILE,
    check_public,
    draw_public,
    read_public,
    split_public,
    write_public,
)
from fedbio.errors import DataError, FedbioError

LABELLED_CSV = "id,sequence,label\nP1,MKV,Nucleus\nP2,MKL,Cytoplasm\nP3,MKA,Nucleus\n"
LABELLED_FASTA = (">P1 TARGET=Nucleus SET=train\nMKV\n>P2 TARGET=Cytoplasm SET=test\nMKL\n"
                  ">P3 TARGET=Nucleus SET=train VALIDATION=True\nMKA\n")


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("name, text", [("l.csv", LABELLED_CSV), ("l.fasta", LABELLED_FASTA)])
def test_labelled_files_read_with_their_labels_ignored(write, name, text):
    records = read_public(write(name, text))
    assert [(r.id, r.sequence, r.label) for r in records] == \
           [("P1", "MKV", None), ("P2", "MKL", None), ("P3", "MKA", None)]


def test_the_shipped_fasta_reads_without_labels():
    records = read_public(HARD)
    assert len(records) == 490 and {r.label for r in records} == {None}


def test_unlabelled_csv_and_written_public_csv_read_back(write, tmp_path):
    records = read_public(write("u.csv", "id,sequence\nA,mkv\nB,MKL\n"))
    assert [(r.id, r.sequence, r.label) for r in records] == [("A", "MKV", None), ("B", "MKL", None)]
    path = tmp_path / PUBLIC_FILE
    write_public(path, [Record("X", "MKW", "Nucleus"), Record("Y", "MKY", "Cytoplasm")])
    assert path.read_text() == "id,sequence\nX,MKW\nY,MKY\n"   # no label column
    assert [(r.id, r.sequence) for r in read_public(path)] == [("X", "MKW"), ("Y", "MKY")]


@pytest.mark.parametrize("text, words", [
    ("", "file is empty"),
    ("id,sequence\n", "holds no records, only a header"),
    ("id,sequence\nA,MKV\nA,MKL\n", "record id 'A' appears twice"),
    ("id,sequence\nA,MKV\nB,mkv\n", "records 'A' (line 2) and 'B' have the same sequence"),
])
def test_empty_files_and_repeats_are_refused(write, text, words):
    path = write("p.csv", text)
    with pytest.raises(DataError) as err:
        read_public(path)
    assert _one_line(err).startswith(str(path)) and words in str(err.value)
    assert err.value.path == path


def test_split_public_finds_public_csv_only_when_there(tmp_path):
    assert split_public(tmp_path) is None
    (tmp_path / PUBLIC_FILE).write_text("id,sequence\nA,MKV\n")
    assert split_public(tmp_path) == tmp_path / PUBLIC_FILE


def test_a_public_sequence_in_a_test_set_is_refused(write):
    public = read_public(write("p.csv", "id,sequence\nA,MKV\nB,MKL\nC,MKA\n"))
    test = [Record("T1", "MKA", "Nucleus", line=2)]
    hard = [Record("H1", "MKL", "Nucleus", line=5), Record("H2", "MKW", "Nucleus", line=7)]
    check_public(public, "p.csv", [("test.csv", [Record("T0", "MKC", "Nucleus")])])   # disjoint
    with pytest.raises(DataError) as err:
        check_public(public, "p.csv", [("test.csv", test), ("test_hard.csv", hard)])
    text = _one_line(err)
    assert text.startswith("p.csv:3: 2 public record(s) repeat test sequences (first: 'B', as "
                           "'H1' in test_hard.csv:5)")
    assert text.endswith("drop them from p.csv")


def test_draw_keeps_a_record_of_every_class_in_the_pool():
    pool = [Record(f"{c}{i}", "M" + "A" * i + c.upper(), c)
            for c, n in {"a": 10, "c": 2, "d": 1}.items() for i in range(n)]
    for fraction, wanted in ((0.5, {"a": 5, "c": 1, "d": 0}), (0.99, {"a": 9, "c": 1, "d": 0})):
        public, rest = draw_public(pool, ["a", "c", "d"], fraction, seed=0)
        got = {c: sum(r.label == c for r in public) for c in "acd"}
        assert got == wanted
        assert {r.label for r in rest} == {"a", "c", "d"}
        assert sorted(r.id for r in public + rest) == sorted(r.id for r in pool)
    assert draw_public(pool, ["a", "c", "d"], 0.0, seed=0) == (None, pool)
    with pytest.raises(FedbioError, match="draws no record from the 13 training records"):
        draw_public(pool, ["a", "c", "d"], 0.01, seed=0)
