"""CKKS pieces of ``--he`` (``fedbio.federation.nvflare.he``) with contexts made as NVFlare's
provisioning makes them: a site's (secret key) and the server's (public keys only)."""

from __future__ import annotations

import numpy as np
import pytest

ts = pytest.importorskip("tenseal")

from fedbio.federation.aggregate import bytes_of, weighted_mean  # noqa: E402
from fedbio.federation.nvflare.he import SLOTS, decrypt, encrypt, encrypted_mean, is_encrypted  # noqa: E402


@pytest.fixture(scope="module")
def contexts():
    """HEBuilder's recipe: CKKS, degree 8192, [60, 40, 40], scale 2^40; the server's copy
    serialised without its secret key."""
    site = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40])
    site.global_scale = 2 ** 40
    site.generate_relin_keys()
    server = ts.context_from(site.serialize(save_secret_key=False))
    return site, server


def _model(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"head.weight": rng.normal(size=(10, 420)).astype(np.float32),   # 4,200 > 4,096 slots
            "head.bias": rng.normal(size=(10,)).astype(np.float32)}


def test_a_layer_larger_than_the_slots_is_cut_into_ciphertexts_and_comes_back(contexts):
    site, _ = contexts
    model = _model(0)
    sent = encrypt(model, site)
    assert is_encrypted(sent) and len(sent["head.weight"]) == 2 and len(sent["head.bias"]) == 1
    assert 4200 > SLOTS
    back = decrypt(sent, site, {k: list(v.shape) for k, v in model.items()})
    for name, value in model.items():
        assert back[name].shape == value.shape and back[name].dtype == np.float32
        assert np.max(np.abs(back[name] - value)) < 1e-4
    assert bytes_of(sent) > 10 * bytes_of(model)   # what the wire carries, measured


def test_the_server_averages_ciphertexts_it_cannot_decrypt(contexts):
    site, server = contexts
    models = [_model(i) for i in range(3)]
    weights = [544.0, 664.0, 302.0]
    sent = [(w, encrypt(m, site)) for w, m in zip(weights, models, strict=True)]
    mean = encrypted_mean(sent, server)
    assert not server.is_private()
    with pytest.raises(ValueError):
        ts.ckks_vector_from(server, mean["head.bias"][0]).decrypt()   # no secret key at the server
    shapes = {k: list(v.shape) for k, v in models[0].items()}
    got = decrypt(mean, site, shapes)
    want = weighted_mean([(f"site-{i}", w, m) for i, (w, m) in enumerate(zip(weights, models, strict=True))])
    for name in want:
        rel = np.max(np.abs(got[name] - want[name])) / np.max(np.abs(want[name]))
        assert rel < 1e-5, (name, rel)


def test_the_clear_first_model_passes_the_decryption_untouched(contexts):
    site, _ = contexts
    model = _model(1)
    assert not is_encrypted(model)
    assert decrypt(model, site, {})["head.weight"] is model["head.weight"]
