"""Homomorphic encryption of what the server aggregates (``fedbio run ... --deployment W --he``).

NVFlare's TenSEAL path, CKKS, with the contexts that provisioning made (``HEBuilder``): each
site's kit holds ``client_context.tenseal`` (with the secret key), the server's
``server_context.tenseal`` (public and relinearisation keys only). Who holds what:

    site    EncryptUpdate  (task result of ``train``): its weights -> CKKS ciphertexts, each
                           parameter flattened and cut into pieces of one ciphertext's slots
                           (4,096 at degree 8192: the composition model's 4,200-weight layer is
                           two ciphertexts), sent serialised, without any context
    server  encrypted_mean: sum over sites of (n_site / n) x ciphertext -- the FedAvg mean, on
                           ciphertexts; the weights n_site are public (they travel as metadata)
    site    DecryptModel   (task data of ``train`` and ``validate``): the global model back to
                           arrays; the first round's model is the public initial one, sent in clear

The server never decrypts: its context cannot (``server_can_decrypt`` is recorded in the run's
history). The delivered model is the last round's, decrypted by the sites when the server asks
them to score it (fedbio's runner reads it from a site's kit). NVFlare's own ``HEModelEncryptor``
sends every ciphertext with its public context (1.9 MB each) and one ciphertext per layer, which
spills past the slot count; these filters send neither.
"""

from __future__ import annotations

import numpy as np
from nvflare.apis.dxo import DXO, DataKind
from nvflare.apis.dxo_filter import DXOFilter
from nvflare.apis.event_type import EventType
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable

POLY_DEGREE = 8192     # what fedbio's provisioning asks of HEBuilder (fedbio.deployment.kits)
SLOTS = POLY_DEGREE // 2   # values per CKKS ciphertext
CLIENT_CONTEXT = "client_context.tenseal"
SERVER_CONTEXT = "server_context.tenseal"
SHAPES = "he_shapes"   # task metadata: each parameter's shape (public: the model's architecture)


def load_context(name: str, fl_ctx: FLContext):
    """A TenSEAL context from the participant's startup kit (signature checked in secure mode)."""
    from nvflare.app_opt.he.homomorphic_encrypt import load_tenseal_context_from_workspace

    return load_tenseal_context_from_workspace(name, fl_ctx)


def encrypt(params: dict, context) -> dict[str, list[bytes]]:
    """Each parameter as serialised CKKS ciphertexts of at most one ciphertext's slots."""
    import tenseal as ts

    out = {}
    for name, value in params.items():
        flat = np.asarray(value, np.float64).ravel()
        out[name] = [ts.ckks_vector(context, flat[i:i + SLOTS]).serialize()
                     for i in range(0, max(flat.size, 1), SLOTS)]
    return out


def decrypt(params: dict, context, shapes: dict) -> dict[str, np.ndarray]:
    """Ciphertexts back to float32 arrays of ``shapes``; arrays (the clear first model) kept."""
    import tenseal as ts

    out = {}
    for name, value in params.items():
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], bytes):
            flat = np.concatenate([np.asarray(ts.ckks_vector_from(context, piece).decrypt())
                                   for piece in value])
            out[name] = flat.astype(np.float32).reshape(shapes[name])
        else:
            out[name] = value
    return out


def encrypted_mean(updates: list[tuple[float, dict]], context) -> dict[str, list[bytes]]:
    """sum_i (w_i / sum w) x ciphertext_i, piece by piece, without decrypting anything."""
    import tenseal as ts

    total = float(sum(w for w, _ in updates))
    names = sorted(updates[0][1])
    out = {}
    for name in names:
        pieces = []
        for k in range(len(updates[0][1][name])):
            acc = None
            for weight, params in updates:
                term = ts.ckks_vector_from(context, params[name][k]) * (weight / total)
                acc = term if acc is None else acc + term
            pieces.append(acc.serialize())
        out[name] = pieces
    return out


def is_encrypted(params: dict) -> bool:
    return bool(params) and all(isinstance(v, (list, tuple)) and v and isinstance(v[0], bytes)
                                for v in params.values())


class _ContextFilter(DXOFilter):
    def __init__(self):
        super().__init__(supported_data_kinds=[DataKind.WEIGHTS, DataKind.WEIGHT_DIFF],
                         data_kinds_to_filter=[DataKind.WEIGHTS, DataKind.WEIGHT_DIFF])
        self.context = None

    def handle_event(self, event_type: str, fl_ctx: FLContext):
        if event_type == EventType.START_RUN:
            self.context = load_context(CLIENT_CONTEXT, fl_ctx)
        elif event_type == EventType.END_RUN:
            self.context = None

    def _context(self, fl_ctx: FLContext):
        if self.context is None:
            self.context = load_context(CLIENT_CONTEXT, fl_ctx)
        return self.context


class EncryptUpdate(_ContextFilter):
    """A site's trained weights leave it only as CKKS ciphertexts (task result of ``train``)."""

    def process_dxo(self, dxo: DXO, shareable: Shareable, fl_ctx: FLContext) -> DXO | None:
        if not dxo.data:
            return None
        meta = {**dxo.meta, SHAPES: {k: list(np.shape(v)) for k, v in dxo.data.items()}}
        return DXO(data_kind=dxo.data_kind, data=encrypt(dxo.data, self._context(fl_ctx)), meta=meta)


class DecryptModel(_ContextFilter):
    """The global model decrypted on its arrival at a site (task data of ``train``/``validate``)."""

    def process_dxo(self, dxo: DXO, shareable: Shareable, fl_ctx: FLContext) -> DXO | None:
        if not is_encrypted(dxo.data or {}):
            return None   # the first round's model: the public initial weights, in clear
        data = decrypt(dxo.data, self._context(fl_ctx), dxo.meta.get(SHAPES, {}))
        return DXO(data_kind=dxo.data_kind, data=data, meta=dxo.meta)
