"""Shared fixtures: paths to the shipped data and small hand-written input files; and how nbval
compares the notebooks' checked cells (``pytest_collection_modifyitems``)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCL = ROOT / "data" / "scl" / "deeploc_valtest.fasta"
HARD = ROOT / "data" / "scl" / "deeploc_setHARD.fasta"


# tests/fixtures/ holds inputs of tests (a notebook among them), not tests
collect_ignore_glob = ["fixtures/*"]


def _no_stderr(outputs):
    from fedbio.reporting.notebooks import is_stderr

    return [o for o in outputs if not is_stderr(o)]


def pytest_collection_modifyitems(items):
    """nbval compares a checked cell's stdout, results and errors, never its stderr (progress,
    warnings: ``make notebooks`` commits none); images are already left out by nbval itself."""
    for item in items:
        compare = getattr(item, "compare_outputs", None)
        if compare is not None and type(item).__module__.startswith("nbval"):
            item.compare_outputs = (lambda test, ref, skip_compare=None, _compare=compare:
                                    _compare(_no_stderr(test), _no_stderr(ref), skip_compare))


@pytest.fixture
def write(tmp_path):
    """Write text into a file under tmp_path and return its path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write


def _cut_small(split) -> None:
    """Each site's first 40 train / 8 valid records, 60 test, 30 hard; every class keeps a
    training record somewhere (a class seen only in the test set is refused, rightly)."""
    from fedbio.data.split import restore_classes

    full = {name: parts["train"] for name, parts in split.sites.items()}
    for parts in split.sites.values():
        parts["train"], parts["valid"] = parts["train"][:40], parts["valid"][:8]
    split.test, split.test_hard = split.test[:60], split.test_hard[:30]
    restore_classes(split, full)


@pytest.fixture(scope="session")
def small_split(tmp_path_factory):
    """A split folder of the shipped data, cut small: ~40 train / 8 valid per site (every class
    trained somewhere), 60 test, 30 hard."""
    from fedbio.data.split import SplitConfig, make_split, write_split

    split = make_split(SCL, SplitConfig(seed=0), hard=HARD)
    _cut_small(split)
    return write_split(split, tmp_path_factory.mktemp("split") / "small", plot=False)


@pytest.fixture(scope="session")
def tiny_esm_folder(tmp_path_factory):
    """A tiny randomly initialised ESM-2 saved with ``save_pretrained``, as a user's checkpoint."""
    import torch
    from transformers import EsmConfig, EsmForMaskedLM

    torch.manual_seed(0)
    config = EsmConfig(vocab_size=33, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, max_position_embeddings=1026, pad_token_id=1,
                       mask_token_id=32, position_embedding_type="rotary", token_dropout=True)
    folder = tmp_path_factory.mktemp("ckpt") / "tiny-esm"
    EsmForMaskedLM(config).save_pretrained(folder)
    return folder


def batch(tokenizer, seqs):
    """Right-padded ids and attention mask, as the training code builds them."""
    import torch

    from fedbio.models import encode

    ids = [encode(tokenizer, s) for s in seqs]
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    for row, seq_ids in enumerate(ids):
        input_ids[row, : len(seq_ids)] = torch.tensor(seq_ids)
    return input_ids, (input_ids != tokenizer.pad_token_id).long()


def positive_finite(x) -> bool:
    """A measured float that makes sense as a time or a ratio."""
    import math

    return isinstance(x, float) and math.isfinite(x) and x > 0


@pytest.fixture(scope="session")
def public_split(tmp_path_factory):
    """The small split with a public set for FLuID (``--public-fraction 0.2``, its first 60)."""
    from fedbio.data.split import SplitConfig, make_split, write_split

    split = make_split(SCL, SplitConfig(seed=0, public_fraction=0.2), hard=HARD)
    _cut_small(split)
    split.public = split.public[:60]
    return write_split(split, tmp_path_factory.mktemp("split") / "public", plot=False)


def deployment(tmp_path_factory, split):
    """A real deployment (3 sites on loopback, ``split``, heartbeat 12 s) for a module's
    fixture; ``down`` at the end must leave no process behind."""
    from fedbio.deployment.deploy import deploy_down, deploy_up
    from fedbio.deployment.kits import free_ports
    from fedbio.deployment.processes import participant_processes

    workspace = tmp_path_factory.mktemp("deploy") / "W"
    deploy_up(workspace, 3, split=str(split), port=free_ports(), heartbeat_timeout=12, say=lambda *a: None)
    try:
        yield workspace
    finally:
        deploy_down(workspace)
        assert participant_processes(workspace) == []


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, small_split):
    """A real deployment for one test module (tests/deployment/) on the small split."""
    yield from deployment(tmp_path_factory, small_split)
