"""What ``--he`` (homomorphic encryption of what the server aggregates) allows, and its delivery.

Under ``--he`` the server holds only CKKS ciphertexts of the sites' weights and of their mean
(``fedbio.federation.nvflare.he``). It can add them and scale them by public numbers, nothing
else; so ``check_he`` refuses, before anything is written, every server step that reads a
model: FedOpt's optimizer step, selection of the best round by validation (the last round is
delivered instead), the update norm and the privacy defences that check updates at the server
(DP-FedAvg, selective sharing, SVT), and the ``stats`` step (the composition model takes the
data-free scaling that DP runs use; regression's pooled label scale has no such stand-in).
Real NVFlare deployments only: NVFlare's simulator does not run HE.

The delivered model is decrypted by the sites, each in its own kit
(``KIT/<job>/fedbio/sites/<site>/delivered.safetensors``); ``take_delivered`` checks that every
site that holds one holds the same model, and gives the run the first site's copy, as that
site's operator would hand it over.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from fedbio.errors import FedbioError


def check_he(fed, mode: str, task_type: str, privacy, engine: str) -> None:
    """Refuse what cannot run on ciphertexts (one line each, saying what to do)."""
    if not fed.he:
        return
    if engine != "deployment":
        raise FedbioError("--he runs on a real deployment only (NVFlare's simulator does not run "
                          "homomorphic encryption); add --deployment W (fedbio deploy up)")
    if mode == "fedopt":
        raise FedbioError("--he: FedOpt's server optimizer step needs the averaged weights in clear; "
                          "use --mode fedavg or fedprox")
    if task_type not in ("classification",):
        raise FedbioError(f"--he covers classification splits; a {task_type} split needs the pooled "
                          "label scale (the stats step), which the server would read in clear")
    if privacy.enabled or privacy.filters_update:
        raise FedbioError("--he is not combined with --dp-*, --dp-sgd-*, --share-fraction or --svt: "
                          "DP-FedAvg, selective sharing and SVT check each update at the server, in "
                          "clear, and a DP run never sends its last model back to the sites, where "
                          "--he decrypts it; run them without --he")


def take_delivered(homes: dict[str, str], sites: list[str], run_dir: Path,
                   delivered_by: list[str]) -> dict:
    """Copy a site's decrypted last model to ``RUN/federation/server/global.safetensors`` (where
    the run reads its delivered model), after checking every delivering site holds the same."""
    import numpy as np
    from safetensors.numpy import load_file

    from fedbio.federation.site import DELIVERED

    paths = {s: Path(homes[s]) / "sites" / s / DELIVERED for s in sites
             if s in delivered_by and (Path(homes[s]) / "sites" / s / DELIVERED).is_file()}
    if not paths:
        raise FedbioError(f"no site kept the delivered model ({DELIVERED}); see the sites' logs "
                          "(fedbio deploy logs --site NAME)")
    models = {s: load_file(str(p)) for s, p in paths.items()}
    first = next(iter(models))
    spread = 0.0
    for model in models.values():
        for name, value in model.items():
            ref = models[first][name]
            spread = max(spread, float(np.max(np.abs(value - ref)) / (np.max(np.abs(ref)) + 1e-12)))
    if spread > 1e-6:
        raise FedbioError(f"the sites decrypted different models (relative difference {spread:.3g}); "
                          "the run keeps no model from them")
    target = run_dir / "federation" / "server" / "global.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(paths[first], target)
    return {"delivered_from": first, "decrypted_at": sorted(paths), "sites_agree": True}


def he_block(history: dict, delivery: dict) -> dict:
    """``metrics.json``'s ``he`` block: the scheme, what a site sent per round (ciphertext) against
    the same weights in clear, whether the server could decrypt, who did."""
    sent = [info["bytes_up"] for row in history.get("rounds", [])
            for info in row.get("sites", {}).values() if "bytes_up" in info]
    clear = int(history.get("exchanged", {}).get("bytes", 0))
    per_site = round(sum(sent) / len(sent)) if sent else 0
    return {**history.get("he", {}), "bytes_up_per_site_round": per_site, "clear_bytes": clear,
            "expansion": round(per_site / clear, 2) if clear else None, **delivery}
