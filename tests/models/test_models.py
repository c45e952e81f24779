"""Tests of fedbio.models on real (tiny, random) ESM models: no mocks, no network.

Run: .venv/bin/pytest -q tests/models/test_models.py
"""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import torch
from conftest import batch

from fedbio.config import ModelConfig
from fedbio.errors import FedbioError
from fedbio.models import (
    PRESETS,
    Backbone,
    CompositionModel,
    MLPHead,
    WeightsNotFound,
    build_model,
    composition_features,
    download_weights,
    encode,
    esm_config,
    find_local_weights,
    load_backbone,
    load_model,
    load_tokenizer,
    load_trainable_state_dict,
    mean_pool,
    residue_mask,
    save_model,
    trainable_state_dict,
)

SEQS = ["MKVLAAGIVALLLAAGCSSS", "MKTAYIAKQR", "GSHMLEDPVDAFQLGRNVAW"]


def tiny_config():
    """An ESM-2-like config far smaller than any preset: keeps checkpoint tests fast."""
    from transformers import EsmConfig

    return EsmConfig(
        vocab_size=33, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, pad_token_id=1, mask_token_id=32, eos_token_id=2,
        position_embedding_type="rotary", token_dropout=True, emb_layer_norm_before=False,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, layer_norm_eps=1e-5,
        max_position_embeddings=1026,
    )


@pytest.fixture(scope="module")
def mlm_checkpoint(tmp_path_factory):
    """A random EsmForMaskedLM saved with save_pretrained, and the model itself."""
    from transformers import EsmForMaskedLM

    torch.manual_seed(0)
    model = EsmForMaskedLM(tiny_config()).eval()
    folder = tmp_path_factory.mktemp("ckpt") / "esm_tiny_mlm"
    model.save_pretrained(folder)
    return folder, model


@pytest.fixture
def no_weights_anywhere(tmp_path, monkeypatch):
    """An environment where no pretrained weights exist and the hub is off limits."""
    monkeypatch.setenv("FEDBIO_WEIGHTS", str(tmp_path / "carried"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --- presets, tokenizer -------------------------------------------------------------------


def test_presets_have_the_published_shapes():
    assert PRESETS["esm2-tiny"].hf_id is None and not PRESETS["esm2-tiny"].pretrained
    p = PRESETS["esm2-8m"]
    assert (p.hf_id, p.num_layers, p.hidden_size, p.num_heads, p.ffn_size) == (
        "facebook/esm2_t6_8M_UR50D", 6, 320, 20, 1280)
    assert (PRESETS["esm2-3b"].hidden_size, PRESETS["esm2-3b"].num_heads) == (2560, 40)
    cfg = esm_config("esm2-650m")
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (33, 1280, 5120)
    assert (cfg.vocab_size, cfg.pad_token_id, cfg.mask_token_id) == (33, 1, 32)
    assert cfg.position_embedding_type == "rotary" and cfg.token_dropout


def test_encode_agrees_with_the_hf_tokenizer():
    tok = load_tokenizer()
    assert len(tok) == 33 and tok.convert_ids_to_tokens(32) == "<mask>"
    for seq in [*SEQS, "XBUZO", "MJKV", "A"]:
        assert encode(tok, seq) == tok(seq)["input_ids"]
    # Where the HF tokenizer merges a run of unknowns, encode keeps one <unk> per residue.
    assert encode(tok, "MJJK") == [0, 20, 3, 3, 15, 2]
    assert encode(tok, "mk v") == encode(tok, "MKV")


def test_residue_mask_and_mean_pool():
    tok = load_tokenizer()
    ids, attn = batch(tok, ["MKV", "MK"])
    mask = residue_mask(ids, tok)
    assert mask.tolist() == [[False, True, True, True, False], [False, True, True, False, False]]
    assert torch.equal(mask, residue_mask(ids, [0, 1, 2]))
    hidden = torch.arange(10, dtype=torch.float32).reshape(2, 5, 1)
    assert mean_pool(hidden, mask).flatten().tolist() == [2.0, 6.5]


# --- backbones ----------------------------------------------------------------------------


def test_folder_checkpoint_loads_with_identical_hidden_states(mlm_checkpoint):
    folder, original = mlm_checkpoint
    tok, backbone = load_backbone(str(folder))
    assert isinstance(backbone, Backbone) and backbone.hidden_size == 32
    assert backbone.pad_token_id == 1 and backbone.name == str(folder)
    ids, attn = batch(tok, SEQS)
    with torch.no_grad():
        expected = original.esm(input_ids=ids, attention_mask=attn).last_hidden_state
        got = backbone.eval()(ids, attn)
    assert got.shape == (3, ids.shape[1], 32)
    torch.testing.assert_close(got, expected)
    assert not any(p.requires_grad for p in backbone.esm.contact_head.parameters())


def test_sequence_classification_checkpoint_gives_its_encoder(tmp_path):
    from transformers import EsmForSequenceClassification

    torch.manual_seed(1)
    original = EsmForSequenceClassification(tiny_config()).eval()
    original.save_pretrained(tmp_path / "cls")
    tok, backbone = load_backbone(str(tmp_path / "cls"))
    ids, attn = batch(tok, SEQS)
    with torch.no_grad():
        torch.testing.assert_close(backbone.eval()(ids, attn), original.esm(ids, attn).last_hidden_state)


def test_preset_weights_found_in_fedbio_weights(mlm_checkpoint, tmp_path, monkeypatch):
    folder, original = mlm_checkpoint
    carried = tmp_path / "carried"
    shutil.copytree(folder, carried / "esm2-8m")
    monkeypatch.setenv("FEDBIO_WEIGHTS", str(carried))
    assert find_local_weights("esm2-8m") == carried / "esm2-8m"
    assert find_local_weights("esm2-tiny") is None
    tok, backbone = load_backbone("esm2-8m")
    assert backbone.name == "esm2-8m"
    ids, attn = batch(tok, SEQS[:1])
    with torch.no_grad():
        torch.testing.assert_close(backbone.eval()(ids, attn), original.esm(ids, attn).last_hidden_state)


def test_weights_dir_takes_hf_style_names(mlm_checkpoint, tmp_path, no_weights_anywhere):
    folder, _ = mlm_checkpoint
    shutil.copytree(folder, tmp_path / "w" / "esm2_t12_35M_UR50D")
    shutil.copytree(folder, tmp_path / "w" / "facebook" / "esm2_t30_150M_UR50D")
    w = str(tmp_path / "w")
    assert find_local_weights("esm2-35m", weights_dir=w) == tmp_path / "w" / "esm2_t12_35M_UR50D"
    assert find_local_weights("esm2-150m", w) == tmp_path / "w" / "facebook" / "esm2_t30_150M_UR50D"
    assert find_local_weights("esm2-35m") is None
    assert load_backbone("esm2-35m", weights_dir=w)[1].hidden_size == 32


def test_missing_weights_give_one_clear_line_fast(no_weights_anywhere):
    assert find_local_weights("esm2-8m") is None
    start = time.perf_counter()
    with pytest.raises(WeightsNotFound) as caught:
        load_backbone("esm2-8m")
    assert time.perf_counter() - start < 5
    message = str(caught.value)
    assert "fedbio weights download esm2-8m" in message and "FEDBIO_WEIGHTS" in message
    assert "--weights-dir" in message and "\n" not in message
    assert caught.value.__cause__ is None
    with pytest.raises(FedbioError, match="offline|OFFLINE"):
        download_weights("esm2-8m", to="unused")


def test_unknown_names_are_refused():
    with pytest.raises(FedbioError, match="esm2-8m"):
        load_backbone("esm2-9000")
    with pytest.raises(FedbioError):
        find_local_weights("esm2-9000")
    with pytest.raises(FedbioError, match="backend"):
        build_model(ModelConfig(backend="bionemo"), 2)
    with pytest.raises(FedbioError, match="tuning"):
        build_model(ModelConfig(tuning="prefix"), 2)


def test_random_init_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _, a = load_backbone("esm2-tiny", seed=5)
    assert torch.equal(torch.rand(3), expected)
    _, b = load_backbone("esm2-tiny", seed=5)
    _, c = load_backbone("esm2-tiny", seed=6)
    wa, wb, wc = (m.esm.encoder.layer[0].attention.self.query.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert (a.hidden_size, len(a.esm.encoder.layer)) == (128, 4)


@pytest.mark.parametrize("name", ["esm2-tiny", "amplify-tiny"])
def test_padding_does_not_change_the_pooled_embedding(name):
    tok, model = build_model(ModelConfig(name=name), 3)
    model.eval()
    ids, attn = batch(tok, SEQS)
    alone_ids, alone_attn = batch(tok, SEQS[1:2])
    with torch.no_grad():
        together = model.embed(ids, attn)[1]
        alone = model.embed(alone_ids, alone_attn)[0]
        again = model.embed(ids, attn)[1]
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
    assert torch.equal(together, again)  # eval mode is deterministic


# --- heads and the composition baseline ---------------------------------------------------


def test_mlp_head_shapes():
    head = MLPHead(48, 5, hidden=16, dropout=0.1)
    assert head(torch.randn(7, 48)).shape == (7, 5)
    assert MLPHead(48, 1)(torch.randn(2, 48)).shape == (2, 1)
    assert head.net[0].out_features == 16 and isinstance(head.net[1], torch.nn.ReLU)


def test_composition_features():
    x = composition_features(["ACDA", "XXB", "acdA", "AXA"])
    assert x.shape == (4, 420) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :20].sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(x[0, 20:].sum(), 1.0, rtol=1e-6)
    assert x[0, 0] == pytest.approx(0.5)  # two A out of four residues
    assert not x[1].any()  # nothing standard: zeros, not NaN
    np.testing.assert_array_equal(x[0], x[2])  # case ignored
    assert x[3, 0] == 1.0 and not x[3, 20:].any()  # X breaks the only pair
    many = ["".join(np.random.default_rng(i).choice(list("ACDEFGHIKLMNPQRSTVWYX"), 300)) for i in range(5000)]
    start = time.perf_counter()
    feats = composition_features(many)
    assert time.perf_counter() - start < 2.0
    np.testing.assert_allclose(feats[:, :20].sum(axis=1), 1.0, rtol=1e-5)


def test_composition_model_trains_only_its_linear_layer():
    feats = composition_features(SEQS * 3)
    model = CompositionModel(3).fit_scaler(feats)
    assert {n for n, _ in model.named_parameters()} == {"linear.weight", "linear.bias"}
    assert set(trainable_state_dict(model)) == {"linear.weight", "linear.bias"}
    assert {"mean", "std"} <= set(model.state_dict())
    assert model(torch.from_numpy(feats)).shape == (9, 3)


# --- tuning modes and exchanged parameters ------------------------------------------------


def test_tuning_modes_choose_the_trainable_parameters():
    _, head = build_model(ModelConfig(tuning="head"), 4)
    assert set(trainable_state_dict(head)) == {f"head.net.{i}.{k}" for i in (0, 3) for k in ("weight", "bias")}
    head.train()
    assert not head.backbone.training and head.head.training

    _, lora = build_model(ModelConfig(tuning="lora", lora_r=4), 4)
    names = set(trainable_state_dict(lora))
    assert all("lora_" in n or n.startswith("head.") for n in names)
    assert {n.split(".")[-4] for n in names if "lora_" in n} == {"query", "key", "value"}
    assert lora.backbone.esm.encoder.layer[0].attention.self.query.lora_A["default"].weight.shape == (4, 128)

    _, full = build_model(ModelConfig(tuning="full"), 4)
    frozen = {n for n, p in full.named_parameters() if not p.requires_grad}
    assert frozen and all(".contact_head." in n for n in frozen)


def test_trainable_state_dict_is_stable_and_has_no_buffers():
    _, a = build_model(ModelConfig(tuning="full"), 2, seed=3)
    _, b = build_model(ModelConfig(tuning="full"), 2, seed=3)
    sd = trainable_state_dict(a)
    buffers = {n for n, _ in a.named_buffers()}
    assert not buffers & set(sd) and not any("inv_freq" in n for n in sd)
    assert list(sd) == list(trainable_state_dict(b))
    assert all(torch.equal(sd[k], v) for k, v in trainable_state_dict(b).items())

    _, c = build_model(ModelConfig(tuning="full"), 2, seed=4)
    assert load_trainable_state_dict(c, sd) == []
    ids, attn = batch(a.tokenizer, SEQS)
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(ids, attn), c.eval()(ids, attn))
    with pytest.raises(FedbioError, match="head.extra"):
        load_trainable_state_dict(c, {**sd, "head.extra": torch.zeros(1)})


# --- saving and loading -------------------------------------------------------------------


def test_save_and_load_composition(tmp_path):
    feats = composition_features(SEQS)
    _, model = build_model(ModelConfig(name="composition"), 2)
    model.fit_scaler(feats)
    save_model(model, ModelConfig(name="composition"), ["yes", "no"], tmp_path / "m")
    tok, loaded, meta = load_model(tmp_path / "m")
    assert tok is None and meta["labels"] == ["yes", "no"] and meta["task"] == "classification"
    x = torch.from_numpy(feats)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))


@pytest.mark.parametrize("tuning", ["full", "lora"])
def test_save_and_load_esm_model(tmp_path, tuning):
    cfg = ModelConfig(name="esm2-tiny", tuning=tuning, lora_r=4)
    tok, model = build_model(cfg, 1, seed=2)
    with torch.no_grad():  # move off the initial values (LoRA B starts at zero)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    save_model(model, cfg, ["stability"], tmp_path / "m", task="regression")
    assert not list((tmp_path / "m").glob("*.bin")) and not list((tmp_path / "m").glob("*.pt"))
    tok2, loaded, meta = load_model(tmp_path / "m")
    assert meta["task"] == "regression" and meta["n_outputs"] == 1 and meta["model_config"]["tuning"] == tuning
    assert set(trainable_state_dict(loaded)) == set(trainable_state_dict(model))
    ids, attn = batch(tok2, SEQS)
    with torch.no_grad():
        assert torch.equal(model.eval()(ids, attn), loaded(ids, attn))


def test_the_model_types_the_remote_policy_knows_are_the_families_backbone_builds():
    from fedbio.models.backbone import FAMILIES
    from fedbio.models.remote import BUILT_IN_MODEL_TYPES

    assert set(BUILT_IN_MODEL_TYPES) == set(FAMILIES)
