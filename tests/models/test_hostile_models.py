"""A hostile user against ``fedbio predict``, ``load_model`` and ``load_backbone``: damaged,
inconsistent or unsafe model folders and checkpoints, bad inputs and bad ``--out`` paths.

Each must end in one FedbioError whose message starts with the file at fault (the CLI: one
``fedbio: error:`` line, exit 2, no traceback) and leave nothing written. Models are tiny and
made here (composition models, a tiny random ESM / AMPLIFY): no network, well under a minute.

Run: .venv/bin/python -m pytest -q -p no:cacheprovider tests/models/test_hostile_models.py
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fedbio.config import DataConfig, ModelConfig, TrainConfig
from fedbio.data.tasks import LabelCodec
from fedbio.errors import FedbioError
from fedbio.models import build_model, composition_features, load_backbone, load_model
from fedbio.training.learner import Learner
from fedbio.training.predict import predict_file, write_predictions

SEQS = ["MKVLAAGIVALLLAAGCSSS", "MKTAYIAKQR", "GSHMLEDPVDAFQLGRNVAW"]
CLASSES = ["Cytoplasm", "Nucleus", "Membrane"]


# --- making models and damaging them ----------------------------------------------------------


def save_composition(folder: Path, codec: LabelCodec) -> Path:
    """A composition model saved as ``fedbio run`` saves one (``Learner.save``)."""
    _, model = build_model(ModelConfig(name="composition"), codec.n_outputs)
    model.fit_scaler(composition_features(SEQS))
    learner = Learner(ModelConfig(name="composition"), DataConfig(), TrainConfig(), codec, None, model)
    return learner.save(folder)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A 3-class composition model folder (never modified: tests damage copies)."""
    return save_composition(tmp_path_factory.mktemp("saved") / "model",
                            LabelCodec("classification", list(CLASSES)))


@pytest.fixture(scope="module")
def regression(tmp_path_factory) -> Path:
    return save_composition(tmp_path_factory.mktemp("reg") / "model",
                            LabelCodec("regression", None, 50.0, 5.0))


@pytest.fixture
def fasta(tmp_path) -> Path:
    path = tmp_path / "in" / "new.fasta"
    path.parent.mkdir()
    path.write_text("".join(f">p{i}\n{s}\n" for i, s in enumerate(SEQS)))
    return path


def damaged(saved: Path, tmp_path: Path, damage: Callable[[Path], None]) -> Path:
    """A copy of ``saved`` with ``damage`` applied."""
    folder = Path(shutil.copytree(saved, tmp_path / "damaged" / "model"))
    damage(folder)
    return folder


def truncate(name: str, keep: int = 40) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        path = folder / name
        path.write_bytes(path.read_bytes()[:keep])
    return damage


def overwrite(name: str, data: bytes | str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        path = folder / name
        path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
    return damage


def edit(name: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    """Rewrite a JSON file through ``change`` (which edits the dict in place)."""
    def damage(folder: Path) -> None:
        path = folder / name
        meta = json.loads(path.read_text())
        change(meta)
        path.write_text(json.dumps(meta))
    return damage


def ten_class_weights(folder: Path) -> None:
    """model.safetensors of a 10-class model, fedbio_model.json of the 3-class one."""
    from safetensors.torch import save_file

    _, other = build_model(ModelConfig(name="composition"), 10)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()},
              str(folder / "model.safetensors"))


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def assert_one_line(err: pytest.ExceptionInfo, file: str | Path) -> str:
    """The message: one line, starting with ``file``, never advising to unpickle."""
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(str(file)), message
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message
    return message


# --- defects 1 and 3: damaged or inconsistent fedbio model folders -----------------------------

MODEL = "model.safetensors"
META = "fedbio_model.json"
TASK = "fedbio_task.json"

# (damage, file the message starts with, words it must hold)
MODEL_CASES = {
    "truncated safetensors": (truncate(MODEL), MODEL, "not a readable safetensors file (truncated or damaged"),
    "garbage safetensors": (overwrite(MODEL, b"\x00" * 500), MODEL, "truncated or damaged"),
    "empty safetensors": (overwrite(MODEL, b""), MODEL, "truncated or damaged"),
    "no safetensors": (lambda folder: (folder / MODEL).unlink(), MODEL, "missing"),
    "invalid meta json": (truncate(META, 30), META, "not valid JSON"),
    "meta is a list": (overwrite(META, "[1, 2]"), META, "expected a JSON object"),
    "no n_outputs": (edit(META, lambda m: m.pop("n_outputs")), META, "n_outputs"),
    "n_outputs a string": (edit(META, lambda m: m.update(n_outputs="3")), META, "n_outputs"),
    "n_outputs vs labels": (edit(META, lambda m: m.update(n_outputs=5)), META, "label"),
    "labels not strings": (edit(META, lambda m: m.update(labels=[1, 2, 3])), META, "labels"),
    "unknown kind": (edit(META, lambda m: m.update(kind="quantum")), META, "unknown kind"),
    "kind vs model_config": (edit(META, lambda m: m.update(kind="sequence", encoder_config={})),
                             META, "model_config"),
    "newer format": (edit(META, lambda m: m.update(format=99)), META, "upgrade fedbio"),
    "model_config a list": (edit(META, lambda m: m.update(model_config=[])), META, "model_config"),
    "model_config field type": (edit(META, lambda m: m["model_config"].update(head_hidden="big")),
                                META, "head_hidden"),
    "10-class weights, 3-class json": (ten_class_weights, MODEL, "linear.weight has shape (10, 420)"),
}


@pytest.mark.parametrize("case", MODEL_CASES)
def test_damaged_model_folder_is_one_line_naming_the_file(saved, tmp_path, case):
    damage, file, words = MODEL_CASES[case]
    folder = damaged(saved, tmp_path, damage)
    with pytest.raises(FedbioError) as err:
        load_model(folder)
    assert words in assert_one_line(err, folder / file)


@pytest.fixture(scope="module")
def esm_saved(tmp_path_factory, tiny_esm_folder) -> Path:
    """A 3-class model on the tiny ESM encoder, head-tuned, saved with its vocab.txt."""
    cfg = ModelConfig(name=str(tiny_esm_folder), tuning="head", head_hidden=8)
    tokenizer, model = build_model(cfg, 3)
    learner = Learner(cfg, DataConfig(), TrainConfig(), LabelCodec("classification", list(CLASSES)),
                      tokenizer, model)
    return learner.save(tmp_path_factory.mktemp("esm_saved") / "model")


ESM_CASES = {
    "binary vocab.txt": (overwrite("vocab.txt", b"\xff\xfe\x00garbage"), "vocab.txt",
                         "not a readable vocabulary"),
    "short vocab.txt": (overwrite("vocab.txt", "A\nC\n"), "vocab.txt", "has 33"),
    "encoder_config value": (edit(META, lambda m: m["encoder_config"].update(hidden_size="x")),
                             META, "cannot rebuild the encoder"),
    "encoder_config heads": (edit(META, lambda m: m["encoder_config"].update(num_attention_heads=3)),
                             META, "cannot rebuild the encoder"),
    "encoder_config type": (edit(META, lambda m: m["encoder_config"].update(model_type="bert")),
                            META, "model_type 'bert'"),
    "head of another size": (edit(META, lambda m: m["model_config"].update(head_hidden=16)),
                             MODEL, "has shape"),
}


@pytest.mark.parametrize("case", ESM_CASES)
def test_damaged_encoder_model_folder(esm_saved, tmp_path, case):
    damage, file, words = ESM_CASES[case]
    folder = damaged(esm_saved, tmp_path, damage)
    with pytest.raises(FedbioError) as err:
        load_model(folder)
    assert words in assert_one_line(err, folder / file)


TASK_CASES = {
    "invalid task json": (overwrite(TASK, '{"codec": '), "not valid JSON"),
    "task is a list": (overwrite(TASK, "[]"), "expected a JSON object"),
    "no codec": (edit(TASK, lambda m: m.pop("codec")), "codec"),
    "codec with 2 classes": (edit(TASK, lambda m: m["codec"].update(classes=CLASSES[:2])),
                             "the codec has 2 classes but fedbio_model.json says the model has 3"),
    "codec names other classes": (edit(TASK, lambda m: m["codec"].update(classes=["x", "y", "z"])),
                                  "the codec names ['x', 'y', 'z']"),
    "unknown task type": (edit(TASK, lambda m: m["codec"].update(task_type="clustering")), "task_type"),
    "classes not a list": (edit(TASK, lambda m: m["codec"].update(classes="abc")), "classes"),
    "regression codec": (edit(TASK, lambda m: m.update(codec={"task_type": "regression"})), "1 value"),
    "non-finite std": (edit(TASK, lambda m: m["codec"].update(std=float("nan"))), "std"),
    "data a list": (edit(TASK, lambda m: m.update(data=[])), "data"),
    "max_length a string": (edit(TASK, lambda m: m["data"].update(max_length="long")), "max_length"),
}


@pytest.mark.parametrize("case", TASK_CASES)
def test_damaged_task_file_is_one_line_before_writing(saved, tmp_path, fasta, case):
    damage, words = TASK_CASES[case]
    folder = damaged(saved, tmp_path, damage)
    out = tmp_path / "out" / "preds.csv"
    with pytest.raises(FedbioError) as err:
        predict_file(folder, fasta, out)
    assert words in assert_one_line(err, folder / TASK)
    assert not out.parent.exists()


# --- defect 1 and 2: encoder checkpoints for `fedbio run --model FOLDER` ----------------------


class RunsCode:
    """A pickle that would run a command if unpickled without torch's guard."""

    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def to_pickle(extra: dict | None = None) -> Callable[[Path], None]:
    """Replace model.safetensors by a pytorch_model.bin (with ``extra`` entries)."""
    def damage(folder: Path) -> None:
        from safetensors.torch import load_file

        state = load_file(str(folder / "model.safetensors"))
        (folder / "model.safetensors").unlink()
        torch.save({**state, **(extra or {})}, folder / "pytorch_model.bin")
    return damage


def raw_pickle(obj: object) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        (folder / "model.safetensors").unlink()
        (folder / "pytorch_model.bin").write_bytes(pickle.dumps(obj))
    return damage


def then(*damages: Callable[[Path], None]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        for step in damages:
            step(folder)
    return damage


def evil_index(folder: Path) -> None:
    """A sharded index sending the loader outside the folder."""
    (folder / "model.safetensors").rename(folder / "shard.safetensors")
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "shard.safetensors", "b": "../../etc/passwd"}}))


def renamed_tensors(folder: Path) -> None:
    """Tensor names that fit no ESM layer: transformers would fill the encoder with noise."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    save_file({f"other.{k}": v for k, v in state.items()}, str(folder / "model.safetensors"))


PICKLE_WORDS = "fedbio will not load because unpickling it can run code"
CKPT_CASES = {
    "truncated safetensors": (truncate(MODEL, 2000), MODEL, "not a readable safetensors file"),
    "garbage safetensors": (overwrite(MODEL, b"garbage" * 50), MODEL, "truncated or damaged"),
    "truncated config.json": (truncate("config.json", 30), "config.json", "not valid JSON"),
    "config.json value type": (edit("config.json", lambda c: c.update(hidden_size="x")),
                               "config.json", "configuration fedbio can build"),
    "config.json heads": (edit("config.json", lambda c: c.update(num_attention_heads=3)),
                          "config.json", "configuration fedbio can build"),
    "pickle with objects": (to_pickle({"args": argparse.Namespace(lr=1)}), "pytorch_model.bin",
                            PICKLE_WORDS),
    "plain pickle": (raw_pickle({"w": [1, 2]}), "pytorch_model.bin", PICKLE_WORDS),
    "garbage pickle": (then(raw_pickle(None), overwrite("pytorch_model.bin", b"garbage" * 20)),
                       "pytorch_model.bin", "truncated or damaged"),
    "truncated pickle": (then(to_pickle(), truncate("pytorch_model.bin", 400)), "pytorch_model.bin",
                         "truncated or damaged"),
    "not a state dict": (then(to_pickle(), lambda f: torch.save([1, 2], f / "pytorch_model.bin")),
                         "pytorch_model.bin", "expected a state dict"),
    "index leaves the folder": (evil_index, "model.safetensors.index.json", "not a file name"),
}


@pytest.fixture(scope="module")
def tiny_amplify_folder(tmp_path_factory) -> Path:
    from fedbio.models import AmplifyConfig, save_amplify
    from fedbio.models.amplify import random_amplify

    config = AmplifyConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32)
    return save_amplify(random_amplify(config), tmp_path_factory.mktemp("amp") / "tiny-amplify")


@pytest.mark.parametrize("family", ["esm", "amplify"])
@pytest.mark.parametrize("case", CKPT_CASES)
def test_damaged_checkpoint_is_one_line_naming_the_file(tiny_esm_folder, tiny_amplify_folder,
                                                        tmp_path, family, case):
    damage, file, words = CKPT_CASES[case]
    base = tiny_esm_folder if family == "esm" else tiny_amplify_folder
    folder = damaged(base, tmp_path, damage)
    with pytest.raises(FedbioError) as err:
        load_backbone(str(folder))
    assert words in assert_one_line(err, folder / file)


def test_a_pickle_that_runs_code_is_refused_unrun(tiny_esm_folder, tmp_path):
    RunsCode.marker = str(tmp_path / "RAN")
    folder = damaged(tiny_esm_folder, tmp_path, raw_pickle({"w": RunsCode()}))
    with pytest.raises(FedbioError) as err:
        load_backbone(str(folder))
    message = assert_one_line(err, folder / "pytorch_model.bin")
    assert PICKLE_WORDS in message and "safetensors.torch.save_file" in message
    assert not (tmp_path / "RAN").exists()


def test_esm_tensors_that_fit_no_layer_are_refused(tiny_esm_folder, tmp_path):
    folder = damaged(tiny_esm_folder, tmp_path, renamed_tensors)
    with pytest.raises(FedbioError) as err:
        load_backbone(str(folder))
    assert "lacks encoder tensor(s)" in assert_one_line(err, folder / MODEL)


def test_a_tensor_only_pickle_still_loads_the_same_encoder(tiny_esm_folder, tmp_path):
    """pytorch_model.bin with tensors only: read with weights_only=True, same weights."""
    folder = damaged(tiny_esm_folder, tmp_path, to_pickle())
    _, from_pickle = load_backbone(str(folder))
    _, reference = load_backbone(str(tiny_esm_folder))
    for (name, a), (_, b) in zip(from_pickle.state_dict().items(), reference.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name


# --- defect 6: folders and inputs that are not what they claim ---------------------------------


def test_model_folders_that_are_not_model_folders(saved, tmp_path, fasta, tiny_esm_folder):
    empty = tmp_path / "empty"
    empty.mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    run = tmp_path / "run"
    shutil.copytree(saved, run / "model")
    cases = {empty: "not a saved fedbio model", a_file: "a file, not a model folder",
             tmp_path / "missing": "no such folder", loop: "symbolic link loop",
             run: f"give {run / 'model'}", tiny_esm_folder: "an encoder checkpoint"}
    out = tmp_path / "out.csv"
    for folder, words in cases.items():
        with pytest.raises(FedbioError) as err:
            predict_file(folder, fasta, out)
        assert words in assert_one_line(err, folder)
    assert not out.exists()


def test_bad_sequence_inputs(saved, tmp_path, fasta):
    empty = tmp_path / "empty.fasta"
    empty.write_text("")
    folder = tmp_path / "folder.fasta"
    folder.mkdir()
    loop = tmp_path / "loop.fasta"
    loop.symlink_to(loop)
    pipe = tmp_path / "pipe.fasta"
    os.mkfifo(pipe)  # opening it would wait for a writer forever
    comments = tmp_path / "comments.csv"
    comments.write_text("id,sequence\n")
    cases = {empty: "empty", folder: "a folder, not a file", loop: "symbolic link loop",
             tmp_path / "missing.fasta": "no such file", pipe: "not a regular file",
             comments: "no records"}
    out = tmp_path / "out" / "preds.csv"
    for path, words in cases.items():
        with pytest.raises(FedbioError) as err:
            predict_file(saved, path, out)
        assert words in assert_one_line(err, path)
    assert not out.parent.exists()


def test_a_regression_model_ignores_class_labels(regression, tmp_path):
    labelled = tmp_path / "labelled.fasta"
    labelled.write_text("".join(f">p{i} TARGET={c} SET=test\n{s}\n"
                                for i, (s, c) in enumerate(zip(SEQS, CLASSES, strict=True))))
    out = tmp_path / "preds.csv"
    assert predict_file(regression, labelled, out) == 3
    lines = out.read_text().splitlines()
    assert lines[0] == "id,predicted" and len(lines) == 4
    assert listing(tmp_path) == ["labelled.fasta", "preds.csv"]


# --- defects 4 and 5: --out follows the output rule --------------------------------------------


def test_out_refusals_write_nothing(saved, tmp_path, fasta):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    existing = tmp_path / "existing.csv"
    existing.write_text("old\n")
    (tmp_path / "a_folder").mkdir()
    cases = {tmp_path / "a_folder": "is a folder", a_file / "preds.csv": "is a file, not a folder",
             existing: "exists; pass --overwrite", fasta: "this command reads",
             saved / "preds.csv": "this command reads"}
    before = listing(tmp_path)
    for out, words in cases.items():
        with pytest.raises(FedbioError, match=words):
            predict_file(saved, fasta, out)
    assert listing(tmp_path) == before and existing.read_text() == "old\n"
    assert listing(saved) == ["fedbio_model.json", "fedbio_task.json", "model.safetensors"]


def test_read_only_out_folder(saved, tmp_path, fasta, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:  # root ignores modes: refuse what a user's write there would meet
        import errno

        import fedbio.outputs

        real_open = os.open

        def refuse(path, *args, **kwargs):
            if str(path).startswith(str(locked)):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(fedbio.outputs.os, "open", refuse)
    try:
        with pytest.raises(FedbioError, match="Permission denied"):
            predict_file(saved, fasta, locked / "preds.csv")
        assert listing(locked) == []
    finally:
        locked.chmod(0o755)


def test_a_second_writer_fails_at_once(saved, tmp_path, fasta):
    from fedbio.outputs import OutputLock

    out = tmp_path / "preds.csv"
    lock = OutputLock(out).acquire()
    try:
        with pytest.raises(FedbioError, match="being written by another fedbio command"):
            predict_file(saved, fasta, out)
    finally:
        lock.release()
    assert listing(tmp_path) == ["in"]


def test_predict_failing_while_writing_leaves_nothing(saved, tmp_path, fasta, monkeypatch):
    import fedbio.training.predict

    def half_then_fail(path, *args, **kwargs):
        Path(path).write_text("id,predicted\n")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fedbio.training.predict, "_write_rows", half_then_fail)
    with pytest.raises(OSError):
        predict_file(saved, fasta, tmp_path / "preds.csv")
    assert listing(tmp_path) == ["in"]


def test_predict_overwrites_only_when_asked_and_whole(saved, tmp_path, fasta):
    out = tmp_path / "preds.csv"
    assert predict_file(saved, fasta, out) == 3
    first = out.read_text()
    assert first.splitlines()[0] == "id,predicted," + ",".join(CLASSES)
    assert predict_file(saved, fasta, out, overwrite=True) == 3
    assert out.read_text() == first and listing(tmp_path) == ["in", "preds.csv"]


class Boom:
    """A record whose id fails half-way through writing."""

    label = "Nucleus"
    task = None

    @property
    def id(self) -> str:
        raise RuntimeError("disk gone")


def test_write_predictions_writes_all_or_nothing(tmp_path):
    import numpy as np

    from fedbio.data.records import Record

    codec = LabelCodec("classification", list(CLASSES))
    records = [Record("a", "MKV", "Nucleus"), Boom()]
    probs = np.full((2, 3), 1 / 3, np.float32)
    with pytest.raises(RuntimeError, match="disk gone"):
        write_predictions(tmp_path / "run" / "test.csv", records, probs, codec, truth=True)
    assert listing(tmp_path / "run") == []
    with pytest.raises(FedbioError, match="does not fit its codec"):  # 5 columns, 3 classes
        write_predictions(tmp_path / "run" / "test.csv", records[:1], np.ones((1, 5)), codec)
    assert listing(tmp_path / "run") == []
    write_predictions(tmp_path / "run" / "test.csv", records[:1], probs[:1], codec, truth=True)
    assert (tmp_path / "run" / "test.csv").read_text().splitlines()[1].startswith("a,Nucleus,")


# --- the command line: one line, exit 2, nothing written --------------------------------------


def cli_predict(capsys, model: Path, fasta: Path, out: Path, *extra: str) -> tuple[int, str]:
    from fedbio.cli import main

    code = main(["predict", "--model", str(model), "--fasta", str(fasta), "--out", str(out), *extra])
    captured = capsys.readouterr()
    return code, captured.err


CLI_CASES = {
    "truncated safetensors": (truncate(MODEL), ()),
    "codec does not fit": (edit(TASK, lambda m: m["codec"].update(classes=CLASSES[:2])), ()),
    "newer format": (edit(META, lambda m: m.update(format=2)), ()),
    "pickle in a model folder": (overwrite(MODEL, pickle.dumps({"w": 1})), ()),
    "precision bf16 on cpu": (lambda folder: None, ("--device", "cpu", "--precision", "bf16-mixed")),
}


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_says_one_line_and_writes_nothing(saved, tmp_path, fasta, capsys, case):
    damage, extra = CLI_CASES[case]
    folder = damaged(saved, tmp_path, damage)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, err = cli_predict(capsys, folder, fasta, out_dir / "preds.csv", *extra)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("fedbio: error: "), err
    assert "Traceback" not in err and "weights_only=False" not in err
    assert listing(out_dir) == []


def test_cli_cuda_on_a_machine_without_one(saved, tmp_path, fasta, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    code, err = cli_predict(capsys, saved, fasta, tmp_path / "preds.csv", "--device", "cuda")
    assert code == 2 and err.count("\n") == 1 and "has none" in err
    assert listing(tmp_path) == ["in"]


def test_cli_out_onto_a_folder_or_under_a_file(saved, tmp_path, fasta, capsys):
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_file").write_text("x")
    for out in (tmp_path / "a_folder", tmp_path / "a_file" / "preds.csv"):
        code, err = cli_predict(capsys, saved, fasta, out)
        assert code == 2 and err.count("\n") == 1 and err.startswith("fedbio: error: --out "), err
    assert listing(tmp_path) == ["a_file", "a_folder", "in"] and listing(tmp_path / "a_folder") == []
