"""Tests of AMPLIFY in fedbio.models: reference numerics, the published folder layout, the
tokenizer, tuning modes and saving. Tiny random models only: no mocks, no network.

Run: .venv/bin/pytest -q tests/models/test_amplify.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import ROOT, batch

from fedbio.config import ModelConfig
from fedbio.errors import FedbioError
from fedbio.models import (
    PRESETS,
    Amplify,
    AmplifyConfig,
    AmplifyTokenizer,
    Backbone,
    amplify_config,
    build_model,
    encode,
    encoder_config,
    esm_config,
    find_local_weights,
    load_backbone,
    load_model,
    load_trainable_state_dict,
    residue_mask,
    save_amplify,
    save_model,
    trainable_state_dict,
)
from fedbio.models.backbone_loading import random_backbone

FIXTURE = ROOT / "tests" / "fixtures" / "amplify_tiny"
SEQS = ["MKVLAAGIVALLLAAGCSSS", "MKTAYIAKQR", "GSHMLEDPVDAFQLGRNVAW"]
# conf/tokenizer/amplify_vocab.txt of the 27-token AMPLIFY models, in order
REFERENCE_VOCAB = ["<pad>", "<unk>", "<mask>", "<bos>", "<eos>", "|", *"LAGVSERTIDPKQNFYMHWC", "B"]


def small_config(**changes) -> AmplifyConfig:
    """Smaller than amplify-tiny, for layout tests."""
    fields = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    return AmplifyConfig(**{**fields, **changes})


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A random small AMPLIFY saved in the published layout, and the model itself."""
    torch.manual_seed(0)
    model = Amplify(small_config()).eval()
    with torch.no_grad():  # away from the +-0.02 init, so a wrong tensor shows
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    folder = save_amplify(model, tmp_path_factory.mktemp("amplify") / "amplify_small")
    return folder, model


# --- presets, config, tokenizer -------------------------------------------------------------


def test_presets_have_the_published_shapes():
    assert PRESETS["amplify-tiny"].hf_id is None and not PRESETS["amplify-tiny"].pretrained
    c120, c350 = amplify_config("amplify-120m"), amplify_config("amplify-350m")
    assert PRESETS["amplify-120m"].hf_id == "chandar-lab/AMPLIFY_120M"
    assert PRESETS["amplify-350m"].hf_id == "chandar-lab/AMPLIFY_350M"
    assert (c120.num_hidden_layers, c120.hidden_size, c120.num_attention_heads) == (24, 640, 10)
    assert (c350.num_hidden_layers, c350.hidden_size, c350.num_attention_heads) == (32, 960, 15)
    assert (c120.swiglu_hidden, c350.swiglu_hidden) == (1712, 2560)
    assert (c120.vocab_size, c120.pad_token_id, c120.max_length, c120.norm_eps) == (27, 0, 2048, 1e-5)
    with torch.device("meta"):
        n_params = sum(p.numel() for p in Amplify(c120).parameters())
    assert 117e6 < n_params < 120e6
    assert isinstance(encoder_config("amplify-tiny"), AmplifyConfig)
    assert encoder_config("esm2-tiny").model_type == "esm"
    with pytest.raises(FedbioError, match="encoder_config"):
        esm_config("amplify-tiny")


def test_config_round_trips_through_config_json_names():
    cfg = amplify_config("amplify-tiny")
    data = cfg.to_dict()
    assert data["model_type"] == "AMPLIFY" and data["hidden_act"] == "SwiGLU"
    assert {"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "norm_eps", "rms_norm", "vocab_size", "pad_token_id", "max_length"} <= set(data)
    assert AmplifyConfig.from_dict({**data, "auto_map": {}, "torch_dtype": "float32"}) == cfg
    with pytest.raises(FedbioError, match="model_type"):
        AmplifyConfig.from_dict({**data, "model_type": "esm"})
    with pytest.raises(FedbioError, match="hidden_act"):
        AmplifyConfig(hidden_act="gelu")


def test_tokenizer_has_the_reference_vocabulary():
    tok = AmplifyTokenizer()
    assert len(tok) == 27 and list(tok.get_vocab()) == REFERENCE_VOCAB
    assert (tok.pad_token_id, tok.unk_token_id, tok.mask_token_id) == (0, 1, 2)
    assert (tok.cls_token_id, tok.bos_token_id, tok.eos_token_id) == (3, 3, 4)
    assert tok.convert_tokens_to_ids(["M", "K", "<mask>", "Z"]) == [22, 17, 2, 1]
    # encode: <bos> + one id per residue (unknown letters are <unk>) + <eos>
    assert encode(tok, "MKjV") == [3, 22, 17, 1, 9, 4]
    assert encode(tok, "mk v") == encode(tok, "MKV") == tok("MKV")["input_ids"]
    out = tok(["MKV", "M"], padding=True, return_tensors="pt")
    assert out["input_ids"].tolist() == [[3, 22, 17, 9, 4], [3, 22, 4, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    ids, _ = batch(tok, ["MKV", "MK"])
    assert residue_mask(ids, tok).tolist() == [[False, True, True, True, False],
                                               [False, True, True, False, False]]


def test_tokenizer_vocabulary_round_trips(tmp_path):
    tok = AmplifyTokenizer()
    (path,) = tok.save_vocabulary(tmp_path)
    assert AmplifyTokenizer(path).get_vocab() == tok.get_vocab()
    (tmp_path / "bad.txt").write_text("A\nC\n")
    with pytest.raises(FedbioError, match="bad.txt"):
        AmplifyTokenizer(tmp_path / "bad.txt")


# --- numerics and the published layout ------------------------------------------------------


def test_matches_the_reference_model():
    from safetensors.torch import load_file

    expected = load_file(str(FIXTURE / "expected.safetensors"))
    tok, backbone = load_backbone(str(FIXTURE))
    assert isinstance(tok, AmplifyTokenizer) and backbone.family == "amplify"
    ids, attn = expected["input_ids"], expected["attention_mask"]
    with torch.no_grad():
        hidden = backbone.eval()(ids, attn)
        logits = backbone.amplify.lm_logits(hidden)
        alone = backbone(ids[:1])
    torch.testing.assert_close(hidden, expected["hidden_states"], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits, expected["logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(alone, expected["hidden_states_unpadded_row0"], atol=1e-5, rtol=0)


def test_published_layout_round_trips(tiny_folder):
    folder, original = tiny_folder
    names = set(original.state_dict())
    assert names == {"encoder.weight", "layer_norm_2.weight", "decoder.weight", "decoder.bias"} | {
        f"transformer_encoder.{i}.{k}.weight" for i in range(2)
        for k in ("q", "k", "v", "wo", "ffn.w12", "ffn.w3", "attention_norm", "ffn_norm")}
    assert original.transformer_encoder[0].ffn.w12.weight.shape == (2 * 48, 32)  # 2/3 * 64 -> 48
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "AMPLIFY" and config["num_hidden_layers"] == 2

    tok, backbone = load_backbone(str(folder))
    assert isinstance(backbone, Backbone) and backbone.name == str(folder)
    assert (backbone.hidden_size, backbone.pad_token_id) == (32, 0)
    assert backbone.config.to_dict() == config
    ids, attn = batch(tok, SEQS)
    with torch.no_grad():
        expected = original(ids, attn)
        got = backbone.eval()(ids, attn)
    assert got.shape == (3, ids.shape[1], 32) and torch.equal(got, expected)
    # the decoder and final norm stay (the folder round-trips) but never train
    assert not any(p.requires_grad for m in backbone.unused_modules() for p in m.parameters())


def test_pickled_checkpoint_loads_safely(tiny_folder, tmp_path):
    folder, original = tiny_folder
    shutil.copy(folder / "config.json", tmp_path / "config.json")
    torch.save(original.state_dict(), tmp_path / "pytorch_model.bin")
    tok, backbone = load_backbone(str(tmp_path))
    ids, attn = batch(tok, SEQS)
    with torch.no_grad():
        assert torch.equal(backbone.eval()(ids, attn), original(ids, attn))


def test_preset_weights_found_under_hub_names(tiny_folder, tmp_path, monkeypatch):
    folder, original = tiny_folder
    shutil.copytree(folder, tmp_path / "carried" / "AMPLIFY_120M")
    monkeypatch.setenv("FEDBIO_WEIGHTS", str(tmp_path / "carried"))
    assert find_local_weights("amplify-120m") == tmp_path / "carried" / "AMPLIFY_120M"
    assert find_local_weights("amplify-tiny") is None
    tok, backbone = load_backbone("amplify-120m")
    assert backbone.name == "amplify-120m" and backbone.family == "amplify"
    ids, attn = batch(tok, SEQS[:1])
    with torch.no_grad():
        assert torch.equal(backbone.eval()(ids, attn), original(ids, attn))


def test_bad_folders_name_the_file_or_key(tiny_folder, tmp_path, tiny_esm_folder):
    folder, _ = tiny_folder

    def copy(name: str) -> Path:
        return Path(shutil.copytree(folder, tmp_path / name))

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FedbioError, match="config.json"):
        load_backbone(str(empty))

    wrong = copy("wrong_type")
    (wrong / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 27}))
    with pytest.raises(FedbioError, match=r"config\.json.*'bert'"):
        load_backbone(str(wrong))

    from safetensors.torch import load_file, save_file

    missing = copy("missing")
    tensors = load_file(str(missing / "model.safetensors"))
    del tensors["transformer_encoder.1.ffn.w3.weight"]
    save_file(tensors, str(missing / "model.safetensors"))
    with pytest.raises(FedbioError, match=r"model\.safetensors.*transformer_encoder\.1\.ffn\.w3\.weight"):
        load_backbone(str(missing))

    misshapen = copy("misshapen")
    config = json.loads((misshapen / "config.json").read_text())
    (misshapen / "config.json").write_text(json.dumps({**config, "intermediate_size": 128}))
    with pytest.raises(FedbioError, match=r"ffn\.w12\.weight has shape"):
        load_backbone(str(misshapen))

    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(folder / "config.json", no_weights / "config.json")
    with pytest.raises(FedbioError, match="no model.safetensors"):
        load_backbone(str(no_weights))

    corrupt = copy("corrupt")
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(FedbioError, match="corrupt"):
        load_backbone(str(corrupt))

    carried = tmp_path / "carried"
    shutil.copytree(tiny_esm_folder, carried / "amplify-350m")
    with pytest.raises(FedbioError, match="esm2 model"):
        load_backbone("amplify-350m", weights_dir=str(carried))

    too_long = Amplify(small_config(max_length=8))
    with pytest.raises(FedbioError, match="at most 8 tokens"):
        too_long(torch.full((1, 9), 6))


# --- the sequence model ---------------------------------------------------------------------


def test_random_init_is_seeded():
    _, a = load_backbone("amplify-tiny", seed=5)
    _, b = load_backbone("amplify-tiny", seed=5)
    _, c = load_backbone("amplify-tiny", seed=6)
    wa, wb, wc = (m.amplify.transformer_encoder[0].q.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert (a.hidden_size, len(a.amplify.transformer_encoder)) == (128, 4)
    assert torch.equal(random_backbone(amplify_config("amplify-tiny"), "x", 5).amplify.encoder.weight,
                       a.amplify.encoder.weight)


@pytest.mark.parametrize("tuning", ["head", "lora", "full"])
def test_regression_model_trains_and_round_trips(tuning, tmp_path):
    cfg = ModelConfig(name="amplify-tiny", tuning=tuning, lora_r=4, dropout=0.0)
    tok, model = build_model(cfg, 1, seed=2)
    trainable = set(trainable_state_dict(model))
    if tuning == "head":
        assert all(n.startswith("head.") for n in trainable)
    elif tuning == "lora":
        adapted = {n.split(".")[-4] for n in trainable if "lora_" in n}
        assert adapted == {"q", "k", "v"} and all("lora_" in n or n.startswith("head.") for n in trainable)
    else:
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        assert frozen == {"backbone.amplify.layer_norm_2.weight", "backbone.amplify.decoder.weight",
                          "backbone.amplify.decoder.bias"}

    ids, attn = batch(tok, SEQS + ["MSTNPKPQRKTKRNTNRRPQDVKFPGG", "ACDEFGHIKLMNPQRSTVWY"])
    y = torch.tensor([[0.5], [-1.0], [1.5], [0.0], [-0.5]])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-3)

    def loss_now() -> float:
        model.eval()
        with torch.no_grad():
            return torch.nn.functional.mse_loss(model(ids, attn), y).item()

    before = loss_now()
    for _ in range(12):
        model.train()
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(ids, attn), y)
        loss.backward()
        assert all(p.grad is not None for p in params)  # every trainable parameter learns
        optimizer.step()
    after = loss_now()
    assert torch.isfinite(torch.tensor(after)) and after < before

    save_model(model, cfg, ["stability"], tmp_path / "m", task="regression")
    meta = json.loads((tmp_path / "m" / "fedbio_model.json").read_text())
    assert meta["family"] == "amplify" and meta["encoder_config"]["model_type"] == "AMPLIFY"
    tok2, loaded, meta = load_model(tmp_path / "m")
    assert isinstance(tok2, AmplifyTokenizer) and tok2.get_vocab() == tok.get_vocab()
    assert set(trainable_state_dict(loaded)) == trainable
    with torch.no_grad():
        assert torch.equal(model.eval()(ids, attn), loaded(ids, attn))


def test_sites_exchange_the_same_parameter_names():
    cfg = ModelConfig(name="amplify-tiny", tuning="lora", lora_r=4)
    _, a = build_model(cfg, 2, seed=3)
    _, b = build_model(cfg, 2, seed=3)
    sd = trainable_state_dict(a)
    assert list(sd) == list(trainable_state_dict(b))
    assert all(torch.equal(v, trainable_state_dict(b)[k]) for k, v in sd.items())
    for value in sd.values():  # a site's update; LoRA B moves off zero, so the adapters matter
        value.add_(0.05 * torch.randn_like(value))
    assert load_trainable_state_dict(b, sd) == []
    ids, attn = batch(a.tokenizer, SEQS)
    with torch.no_grad():
        moved = b.eval()(ids, attn)
        assert not torch.allclose(a.eval()(ids, attn), moved)
        assert load_trainable_state_dict(a, sd) == []
        assert torch.equal(a(ids, attn), moved)
