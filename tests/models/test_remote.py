"""Opt-in remote-code checkpoints (fedbio.models.remote: trust_remote_code), in the layout of
NVIDIA's TE ESM-2 hub models, and LoRA's refusal for fused attention. Tiny models made here:
no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from fedbio.config import ModelConfig
from fedbio.errors import FedbioError

# -- remote code (trust_remote_code) -------------------------------------------------------------
REMOTE_CODE = '''
import pathlib
from transformers import EsmConfig, EsmModel

MARKER = pathlib.Path(FOLDER) / "CODE_RAN"  # transformers runs a copy of this file elsewhere


class TinyRemoteConfig(EsmConfig):
    model_type = "fedbio_remote_esm"


class TinyRemoteModel(EsmModel):
    config_class = TinyRemoteConfig

    def __init__(self, config, add_pooling_layer=True):
        MARKER.write_text("yes")
        super().__init__(config, add_pooling_layer=add_pooling_layer)
'''


def _remote_folder(folder: Path) -> Path:
    """A checkpoint in the layout of NVIDIA's TE ESM-2 hub models: model_type fedbio does not
    know, an auto_map into a Python file shipped alongside, safetensors weights."""
    from safetensors.torch import save_file
    from transformers import EsmConfig, EsmModel

    folder.mkdir(parents=True)
    (folder / "esm_nv.py").write_text(REMOTE_CODE.replace("FOLDER", repr(str(folder))))
    config = EsmConfig(vocab_size=33, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, max_position_embeddings=1026, pad_token_id=1,
                       mask_token_id=32, position_embedding_type="rotary")
    torch.manual_seed(0)
    model = EsmModel(config, add_pooling_layer=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    data = config.to_dict()
    data.update(model_type="fedbio_remote_esm", architectures=["TinyRemoteModel"],
                auto_map={"AutoConfig": "esm_nv.TinyRemoteConfig", "AutoModel": "esm_nv.TinyRemoteModel"})
    (folder / "config.json").write_text(json.dumps(data))
    return folder


def test_remote_code_needs_the_opt_in_and_runs_nothing_without_it(tmp_path):
    from fedbio.models import build_model, load_backbone

    folder = _remote_folder(tmp_path / "te-esm")
    for attempt in (lambda: load_backbone(str(folder)),
                    lambda: build_model(ModelConfig(name=str(folder)), 2)):
        with pytest.raises(FedbioError, match="auto_map.*runs Python code.*trust_remote_code=True"
                                              ".*--trust-remote-code") as err:
            attempt()
        assert "\n" not in str(err.value)
    assert not (folder / "CODE_RAN").exists()


def test_remote_hub_id_is_refused_before_its_code_is_fetched(tmp_path, monkeypatch):
    """A hub id whose cached config.json has an auto_map: refused from the config alone."""
    from fedbio.models import load_backbone

    snap = tmp_path / "hub" / "models--nvidia--esm2_t6_8M_UR50D" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (tmp_path / "hub" / "models--nvidia--esm2_t6_8M_UR50D" / "refs").mkdir()
    (tmp_path / "hub" / "models--nvidia--esm2_t6_8M_UR50D" / "refs" / "main").write_text("abc123")
    (snap / "config.json").write_text(json.dumps(
        {"model_type": "nv_esm", "vocab_size": 33, "auto_map": {"AutoModel": "esm_nv.NVEsmModel"}}))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FedbioError, match="nvidia/esm2_t6_8M_UR50D.*nv_esm.*--trust-remote-code"):
        load_backbone("nvidia/esm2_t6_8M_UR50D")
    with pytest.raises(FedbioError, match="HF_HUB_OFFLINE"):  # opted in, but no weights or code here
        load_backbone("nvidia/esm2_t6_8M_UR50D", trust_remote_code=True)
    with pytest.raises(FedbioError, match="neither a preset, an existing folder nor"):
        load_backbone("someone/not-cached")


def test_remote_code_with_the_opt_in_keeps_the_backbone_interface(tmp_path):
    """Loaded in a fresh process with its own HF_MODULES_CACHE (transformers copies the code)."""
    folder = _remote_folder(tmp_path / "te-esm")
    code = textwrap.dedent(f"""
        import torch
        from fedbio.config import ModelConfig
        from fedbio.errors import FedbioError
        from fedbio.models import build_model, load_backbone, load_model, save_model
        tok, bb = load_backbone({str(folder)!r}, trust_remote_code=True)
        assert bb.family == "remote" and bb.hidden_size == 16 and bb.pad_token_id == 1, bb.family
        ids = torch.tensor([[0, 5, 6, 7, 2], [0, 8, 2, 1, 1]])
        hidden = bb(ids, (ids != 1).long())
        assert hidden.shape == (2, 5, 16) and hidden.dtype == torch.float32
        assert not any(p.requires_grad for n, p in bb.named_parameters() if "pooler" in n)
        cfg = ModelConfig(name={str(folder)!r}, tuning="full", trust_remote_code=True)
        _, model = build_model(cfg, 3)
        model(ids).sum().backward()
        _, lora = build_model(ModelConfig(name={str(folder)!r}, tuning="lora", trust_remote_code=True), 3)
        save_model(model, cfg, ["a", "b", "c"], {str(tmp_path / "saved")!r})
        try:
            load_model({str(tmp_path / "saved")!r})
            raise SystemExit("loaded remote code without the opt-in")
        except FedbioError as err:
            assert "trust_remote_code" in str(err)
        _, back, _ = load_model({str(tmp_path / "saved")!r}, trust_remote_code=True)
        model.eval()
        assert torch.equal(back(ids), model(ids))
        print("OK")
    """)
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
    assert (folder / "CODE_RAN").exists()


def test_lora_is_refused_for_fused_attention():
    from torch import nn

    from fedbio.models.backbone import Backbone

    class Fused(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"hidden_size": 8, "pad_token_id": 1})()
            self.layernorm_qkv = nn.Linear(8, 24)

    assert Backbone(Fused(), "te", family="remote").lora_targets == []
