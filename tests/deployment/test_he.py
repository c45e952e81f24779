"""Homomorphic encryption on a real deployment: the server averages CKKS ciphertexts.

One 3-site deployment on loopback (the small split) serves the module. The same seeded job runs
with ``--he`` and in clear; the delivered models agree within CKKS's precision, and nothing the
server kept holds a plaintext model.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fedbio.cli import main
from fedbio.deployment.kits import SERVER
from fedbio.federation import FedConfig, run_federated
from fedbio.training.run import plan

SITES = ["site-1", "site-2", "site-3"]


@pytest.fixture(scope="module")
def runs(deployed, tmp_path_factory):
    """The same job (a tiny ESM-2's head, 2 rounds) with --he and in clear."""
    out = tmp_path_factory.mktemp("he-runs")
    cfg = plan(mode="fedavg", model="esm2-tiny", tuning="head", split=str(deployed / "split"), epochs=2)
    he = run_federated(cfg, FedConfig(rounds=2, he=True), out=out / "he", progress=False, deployment=deployed)
    clear = run_federated(cfg, FedConfig(rounds=2), out=out / "clear", progress=False, deployment=deployed)
    return out, he, clear


def _load(path: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(path))


def test_the_he_model_equals_the_clear_one_within_ckks_precision(runs):
    out, he, clear = runs
    delivered = _load(out / "he" / "federation" / "server" / "global.safetensors")
    last = _load(out / "clear" / "federation" / "server" / "last.safetensors")   # the clear run's last round
    assert sorted(delivered) == sorted(last)
    for name, ref in last.items():
        err = np.max(np.abs(delivered[name] - ref)) / np.max(np.abs(ref))
        assert err < 1e-3, (name, err)
    # a model that was trained differently would not pass: the first model is far from the last
    initial = _load(out / "clear" / "federation" / "initial.safetensors")
    assert max(np.max(np.abs(initial[k] - last[k])) / np.max(np.abs(last[k])) for k in last) > 1e-2
    assert abs(he["test"]["accuracy"] - clear["test"]["accuracy"]) <= 0.02


def test_the_server_saw_ciphertexts_only_and_could_not_decrypt(runs, deployed):
    import tenseal as ts

    out, he, clear = runs
    block = he["he"]
    assert block["scheme"] == "CKKS" and block["server_can_decrypt"] is False
    assert block["decrypted_at"] == SITES and block["sites_agree"]
    assert block["bytes_up_per_site_round"] > 10 * block["clear_bytes"]   # ciphertexts, measured
    history = json.loads((out / "he" / "federation" / "server" / "history.json").read_text())
    assert all("update_norm" not in row for row in history["rounds"])
    # the server's context has no secret key; each site's has one
    server_ctx = ts.context_from((deployed / "kits" / SERVER / "startup" / "server_context.tenseal").read_bytes())
    assert not server_ctx.is_private()
    site_ctx = ts.context_from((deployed / "kits" / "site-1" / "startup" / "client_context.tenseal").read_bytes())
    assert site_ctx.is_private()
    # nothing the server kept of the job holds the delivered model's values in clear: its job
    # store (zips included) and the job's download; the clear run's store does (the check can fail)
    delivered = _load(out / "he" / "federation" / "server" / "global.safetensors")
    needle = max(delivered.values(), key=np.size).ravel()[:8].astype(np.float32).tobytes()
    assert not _holds(_server_files(deployed, he["deployment"]["job_id"], out / "he"), needle)
    clear_last = _load(out / "clear" / "federation" / "server" / "last.safetensors")
    needle_clear = max(clear_last.values(), key=np.size).ravel()[:8].astype(np.float32).tobytes()
    assert _holds(_server_files(deployed, clear["deployment"]["job_id"], out / "clear"), needle_clear)


def _server_files(workspace: Path, job_id: str, run: Path) -> list[bytes]:
    roots = [workspace / "storage" / "jobs" / job_id, workspace / "kits" / SERVER / job_id,
             run / "nvflare" / job_id]
    blobs = []
    for root in roots:
        for path in (root.rglob("*") if root.is_dir() else []):
            if path.is_file():
                data = path.read_bytes()
                blobs.append(data)
                if data[:2] == b"PK":
                    with zipfile.ZipFile(io.BytesIO(data)) as z:
                        blobs += [z.read(n) for n in z.namelist() if not n.endswith("/")]
    assert blobs, f"nothing found of job {job_id} at the server"
    return blobs


def _holds(blobs: list[bytes], needle: bytes) -> bool:
    return any(needle in blob for blob in blobs)


@pytest.mark.parametrize("args, expected", [
    (["--mode", "fedopt"], "FedOpt's server optimizer"),
    (["--dp-clip", "1", "--dp-noise", "1"], "is not combined with"),
    (["--share-fraction", "0.1"], "is not combined with"),
])
def test_what_cannot_run_on_ciphertexts_is_refused_in_one_line(deployed, tmp_path, capsys, args, expected):
    argv = ["run", "--mode", "fedavg", "--model", "composition", "--deployment", str(deployed), "--he",
            "--out", str(tmp_path / "r"), *args]
    if "--mode" in args:
        argv = [a for i, a in enumerate(argv) if i not in (1, 2)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fedbio: error:") and expected in err[0], err
    assert not (tmp_path / "r").exists()


def test_he_needs_a_deployment(tmp_path, capsys, small_split):
    assert main(["run", "--mode", "fedavg", "--model", "composition", "--split", str(small_split), "--he",
                 "--out", str(tmp_path / "r")]) == 2
    assert "--he applies only to runs on a deployment" in capsys.readouterr().err
    with pytest.raises(Exception, match="real deployment only"):
        run_federated(plan(mode="fedavg", model="composition", split=str(small_split)), FedConfig(he=True),
                      out=tmp_path / "r2", progress=False)
    assert not (tmp_path / "r2").exists()


def test_a_deployment_without_ckks_contexts_is_refused(deployed, tmp_path):
    from fedbio.deployment.kits import check_he_contexts
    from fedbio.errors import FedbioError

    check_he_contexts(deployed, SITES)   # provisioned with them
    old = tmp_path / "W"
    for name in [SERVER, *SITES]:
        (old / "kits" / name / "startup").mkdir(parents=True)
    (old / "kits" / SERVER / "startup" / "server_context.tenseal").write_bytes(b"x")
    with pytest.raises(FedbioError, match=r"--he: site-1, site-2, site-3 in .* hold no CKKS context"):
        check_he_contexts(old, SITES)
