"""The server's side of a federated run, independent of how messages travel.

``Server.run(ask)`` is the whole workflow; ``ask(task, params, meta, targets, round)`` delivers a
task to sites and returns their replies. NVFlare's controller (``controller.py``) passes an
``ask`` built on ``send_model_and_wait``; the plain loop (``loop.py``) calls the sites directly.

The workflow: optional ``stats`` (pooled feature/label statistics: composition or regression
only), R ``train`` rounds (FedAvg / FedProx / FedOpt over the sites that answered, in site
order; each site first scores the global model it received on its validation split), then
``validate`` (every site scores the last global model). Model selection: the global model with
the best sample-weighted mean validation score over sites, written to ``global.safetensors``;
the common test sets are scored outside the federation (``fedbio.federation.runner``).

Records: ``history.json`` after every round (the watchdog counts it as progress), the same
round's scalars to ``report(tag, value, step)`` (a live TensorBoard: ``global/valid_<score>``
by round, ``sites/aggregated``, ``bytes_up/<site>``) and, last of all, ``done.json``: the job has ended (``ok``, or the ``error`` that stopped it). A site whose
training diverged (``TrainingDiverged``), or a round whose aggregate is not finite, stops the run:
every later round would only spread it. Numpy only, no torch, no NVFlare.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from fedbio.federation.aggregate import ServerOptimizer, bytes_of, pooled_scaler, weighted_mean


@dataclass
class Reply:
    """What one site sent back: parameters (numpy), scalar metrics and metadata."""

    params: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


Ask = Callable[[str, dict, dict, list, "int | None"], "tuple[dict[str, Reply], dict[str, str]]"]


NO_ANSWER = "no answer (process gone, trainer failed, or task_timeout passed)"
ABSENT = "not in the job (not connected, or refused the job, when it was deployed)"   # a deployment's
DIVERGED = "TrainingDiverged"  # a site's failure that stops the whole run (fedbio.errors)


class RunStopped(Exception):
    """Fewer sites answered than the run needs (``min_sites``)."""


@dataclass
class ServerSettings:
    run_dir: str
    algorithm: str = "fedavg"
    num_rounds: int = 3
    min_sites: int = 0
    mu: float = 0.0
    server_optimizer: str = "sgd"
    server_lr: float = 1.0
    server_momentum: float = 0.0
    server_betas: tuple = (0.9, 0.99)
    server_eps: float = 1e-3
    key_metric: str = "accuracy"
    higher_is_better: bool = True
    feature_stats: bool = False
    label_stats: bool = False
    task_timeout: int = 0  # seconds a round waits for a site (the NVFlare controller's)
    weighted: bool = True   # weight each site by its record count (FedAvg); False: plain mean
    sites: list = field(default_factory=list)   # the run's sites (the split's); empty: the job's clients
    dp: dict | None = None  # DP (fedbio.privacy.fedavg.run_settings): no scores asked, last model
                            # delivered; clip set: site-level DP-FedAvg's noisy mean
    update_filter: dict | None = None  # selective sharing or SVT (PrivacyConfig.update_filter):
                            # sites send filtered updates; each is checked for its non-zero entries
    he: dict | None = None  # --he: sites send CKKS ciphertexts, averaged by ``combine`` without
                            # decrypting; the last model delivered (decrypted at the sites);
                            # ``he["shared"]``: a scaling that needs no data (no stats step)
    fluid: dict | None = None  # --mode fluid: FLuID's workflow (fedbio.federation.fluid.workflow)

    @property
    def site_level_dp(self) -> bool:
        """Site-level DP-FedAvg: the noisy mean of clipped updates (``dp["clip"]`` set)."""
        return bool(self.dp) and self.dp.get("clip") is not None

    def to_dict(self) -> dict:
        """Plain, JSON-ready data (what NVFlare's job config carries)."""
        return {**asdict(self), "server_betas": list(self.server_betas)}

    @classmethod
    def from_dict(cls, data: dict) -> ServerSettings:
        return cls(**{**data, "server_betas": tuple(data.get("server_betas", (0.9, 0.99)))})


class Server:
    def __init__(self, settings: ServerSettings, sites: list[str],
                 report: Callable[[str, float, int], None] | None = None,
                 combine: Callable[[list], dict] | None = None):
        self.s = settings
        self.combine = combine   # --he: [(weight, ciphertexts)] -> their weighted mean, encrypted
        self.report = report or (lambda tag, value, step: None)
        self.sites = sorted(sites)
        self.needed = settings.min_sites or len(self.sites)
        self.active = list(self.sites)  # a site that does not answer at all is not asked again
        self.best: tuple | None = None
        self.history: dict = {"sites": self.sites, "needed": self.needed, "rounds": [{"round": 0}], "shared": {}}
        self.out_dir = os.path.join(settings.run_dir, "federation", "server")

    # -- records -----------------------------------------------------------------------------
    def write_history(self) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        tmp = os.path.join(self.out_dir, "history.json.part")
        with open(tmp, "w") as f:
            json.dump(self.history, f, indent=1)
        os.replace(tmp, os.path.join(self.out_dir, "history.json"))

    def _save(self, name: str, params: dict) -> None:
        from safetensors.numpy import save_file

        path = os.path.join(self.out_dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save_file({k: np.ascontiguousarray(v) for k, v in params.items()}, path)

    def write_done(self) -> None:
        """``done.json``, written last and atomically: the job has ended (the watchdog's signal)."""
        os.makedirs(self.out_dir, exist_ok=True)
        tmp = os.path.join(self.out_dir, "done.json.part")
        with open(tmp, "w") as f:
            json.dump({"ok": "error" not in self.history, "error": self.history.get("error"),
                       "selected_round": self.history.get("selected_round")}, f)
        os.replace(tmp, os.path.join(self.out_dir, "done.json"))

    def stop(self, message: str) -> None:
        """End the run with ``message``: recorded in the history and ``done.json``, then raised."""
        self.history["error"] = message
        self.write_history()
        self.write_done()
        raise RunStopped(message)

    def _require(self, ok: dict, stage: str) -> None:
        if len(ok) < self.needed:
            self.stop(f"{stage}: only {len(ok)} of {len(self.sites)} sites answered; "
                      f"the run needs {self.needed} (min_sites)")

    @staticmethod
    def weighted_valid(ok: dict[str, Reply]) -> dict:
        """Sample-weighted mean over sites of the ``valid_*`` scores they report."""
        rows = [r.metrics for r in ok.values() if "valid_n" in (r.metrics or {})]
        if not rows:
            return {}
        weights = np.array([m["valid_n"] for m in rows], float)
        keys = [k for k in rows[0] if k.startswith("valid_") and k != "valid_n"
                and all(k in m for m in rows)]  # multi-task sites each report their own tasks
        out = {k[len("valid_"):]: float(np.dot(weights, [m.get(k, np.nan) for m in rows]) / weights.sum())
               for k in keys}
        out["n"] = int(weights.sum())
        return out

    def _note_global(self, rnd: int, scores: dict, params: dict) -> None:
        """The validation score of the global model after round ``rnd``; keep the best (rnd >= 1)."""
        self.history["rounds"][rnd]["global_valid"] = scores
        for key, value in scores.items():
            if key != "n":
                self.report(f"global/valid_{key}", float(value), rnd)
        if rnd == 0 or not scores or self.s.he:   # --he: the server cannot keep a model
            return
        value = scores.get(self.s.key_metric, np.nan) * (1 if self.s.higher_is_better else -1)
        if self.best is None or value > self.best[0]:
            self.best = (value, rnd, {k: np.array(v, copy=True) for k, v in params.items()})

    def _asker(self, ask: Ask) -> Ask:
        """``ask`` restricted to the active sites; sites that give no answer are dropped."""

        def wrapped(task, params, meta, targets, rnd):
            targets = [t for t in targets if t in self.active]
            ok, failed = ask(task, params, meta, targets, rnd) if targets else ({}, {})
            for site, reason in failed.items():
                if reason in (NO_ANSWER, ABSENT) and site in self.active:
                    self.active.remove(site)
                    self.history.setdefault("dropped", {})[site] = f"{task} round {rnd}" if rnd else task
                    self.history.setdefault("why_dropped", {})[site] = reason
            diverged = {s: r for s, r in failed.items() if str(r).startswith(DIVERGED)}
            if diverged:
                site, reason = next(iter(diverged.items()))
                self.stop(f"{reason[len(DIVERGED):].lstrip(': ') or f'{site} diverged'}")
            return ok, failed

        return wrapped

    # -- the workflow ------------------------------------------------------------------------
    def run(self, ask: Ask, params: dict) -> dict:
        """Run every stage from the initial global ``params``; returns (and writes) the history."""
        start = time.time()
        ask = self._asker(ask)
        names = sorted(params)
        self.history["exchanged"] = {"names": names, "values": int(sum(np.size(v) for v in params.values())),
                                     "bytes": bytes_of(params)}
        if self.s.feature_stats or self.s.label_stats:
            shared = self._statistics(ask)
        else:   # under DP or HE: a scaling that needs no data (fedbio.privacy.updates), or none
            shared = dict((self.s.dp or self.s.he or {}).get("shared", {}))
            self.history["shared"] = shared
        rng = self._dp_rng()
        optimizer = (ServerOptimizer(self.s.server_optimizer, self.s.server_lr, self.s.server_momentum,
                                     self.s.server_betas, self.s.server_eps)
                     if self.s.algorithm == "fedopt" else None)
        meta = {"algorithm": self.s.algorithm, "mu": self.s.mu, "rounds": self.s.num_rounds, **shared}
        if self.s.he:   # the shapes of the encrypted parameters, for the sites' decryption
            meta["he_shapes"] = {k: list(np.shape(v)) for k, v in params.items()}

        for rnd in range(1, self.s.num_rounds + 1):
            began = time.time()
            down = bytes_of(params)
            ok, failed = ask("train", params, meta, self.sites, rnd)
            row = {"round": rnd, "sites": {}}
            for site, rep in list(ok.items()):
                if sorted(rep.params) != names:  # other names are refused, never averaged
                    failed[site] = f"sent unexpected parameter names ({len(rep.params)} vs {len(names)})"
                    del ok[site]
                    continue
                row["sites"][site] = {"n_train": float(rep.meta.get("NUM_STEPS_CURRENT_ROUND", 1.0)),
                                      "bytes_up": bytes_of(rep.params), "bytes_down": down,
                                      "metrics": dict(rep.metrics), "curve": list(rep.meta.get("curve", []))}
            for site in self.sites:
                if site not in ok:
                    reason = failed.get(site, f"dropped: {self.history.get('why_dropped', {}).get(site, NO_ANSWER)}")
                    row["sites"][site] = {"failed": reason, "bytes_down": down if site in failed else 0}
                    failed[site] = reason
            row["ok"], row["failed"] = sorted(ok), dict(sorted(failed.items()))
            self.history["rounds"].append(row)
            self._note_global(rnd - 1, self.weighted_valid(ok), params)  # sites scored what they got
            self.write_history()
            self.report("sites/aggregated", float(len(ok)), rnd)
            for site, info in row["sites"].items():
                if "bytes_up" in info:
                    self.report(f"bytes_up/{site}", float(info["bytes_up"]), rnd)
            self._require(ok, f"round {rnd}")
            if self.s.site_level_dp:
                average = self._private_mean(rnd, params, ok, row, rng)
            elif self.s.update_filter:
                average = self._filtered_mean(rnd, params, ok, row)
            elif self.s.he:
                average = self.combine([(row["sites"][s]["n_train"] if self.s.weighted else 1.0, r.params)
                                        for s, r in ok.items()])
                params, row["seconds"] = average, round(time.time() - began, 3)
                continue
            else:
                average = weighted_mean([(s, row["sites"][s]["n_train"] if self.s.weighted else 1.0,
                                          r.params) for s, r in ok.items()])
            new = optimizer.step(params, average) if optimizer else average
            row["update_norm"] = float(np.sqrt(sum(np.sum((np.asarray(new[k], np.float64) - params[k]) ** 2)
                                                   for k in names)))
            if not np.isfinite(row["update_norm"]):
                fix = ("lower --dp-clip or --dp-noise (the noise's sd on the sum is "
                       f"{self.s.dp['noise_multiplier'] * self.s.dp['clip']:g})"
                       if self.s.site_level_dp else
                       "lower --svt-gamma or raise --svt-noise-var (SVT's noise on each value sent "
                       "has scale 2 x gamma / noise_var)"
                       if (self.s.update_filter or {}).get("kind") == "svt" else "lower --server-lr")
                self.stop(f"round {rnd}: the aggregated global model is not finite (update norm "
                          f"{row['update_norm']}); {fix}")
            params, row["seconds"] = new, round(time.time() - began, 3)   # the round, aggregation included

        if not self.s.dp:  # under DP no site scores a model: the last one is delivered
            # the last model, everywhere (--he: decrypted and kept by each site: the delivery)
            ok, failed = ask("validate", params, {**meta, "deliver": True} if self.s.he else meta, self.sites, None)
            self.history["final_validate"] = {"ok": sorted(ok), "failed": failed}
            self._note_global(self.s.num_rounds, self.weighted_valid(ok), params)
        if self.best is None:  # no validation scores at all (or --he): deliver the last model
            self.best = (np.nan, self.s.num_rounds, params)
        self.history["selected_round"] = self.best[1]
        if self.s.he:   # ciphertexts only: the sites hold the delivered model
            self.history.setdefault("he", {})["delivered_by"] = sorted(ok)
        else:
            self._save("global.safetensors", self.best[2])
            self._save("last.safetensors", params)
        self.history["server_seconds"] = round(time.time() - start, 2)
        self.write_history()
        self.write_done()  # last: everything the runner reads is on disk
        return self.history

    # -- site-level DP-FedAvg ----------------------------------------------------------------
    def _dp_rng(self) -> np.random.Generator | None:
        """The server's noise source (``--dp-where server``): ``fedbio.privacy.updates.noise_source``."""
        from fedbio.privacy.updates import noise_source

        dp = self.s.dp
        return noise_source(dp.get("noise_seed"), 2018) if dp and dp.get("where") == "server" else None

    def _private_mean(self, rnd: int, params: dict, ok: dict, row: dict, rng) -> dict:
        """The global weights plus the noisy unweighted mean of the sites' clipped updates.

        ``--dp-where server``: each update must have norm <= S (a site that sends more is refused
        for the round) and N(0, (zS)^2) goes on the sum. ``site``: the sites added the noise,
        which adds up to the accounted amount only if every site's update is in the sum."""
        from fedbio.privacy.updates import l2_norm, noisy_mean

        dp = self.s.dp
        clip, z = float(dp["clip"]), float(dp["noise_multiplier"])
        if dp["where"] == "server":
            for site in list(ok):
                norm = l2_norm(ok[site].params)
                if norm > clip * (1 + 1e-6):
                    del ok[site]
                    reason = f"sent an update of norm {norm:.4g} > clip {clip:g}"
                    row["sites"][site] = {"failed": reason}
                    row["failed"][site] = reason
            row["ok"] = sorted(ok)
            self._require(ok, f"round {rnd}")
        elif len(ok) < len(self.sites):
            self.stop(f"round {rnd}: {len(ok)} of {len(self.sites)} sites answered; with --dp-where "
                      "site every site's noise is needed for the accounted epsilon")
        row["dp"] = {"updates": len(ok), "noise_sd_sum": z * clip}
        mean = noisy_mean([ok[s].params for s in sorted(ok)], clip, z, rng)
        return {k: (np.asarray(params[k], np.float64) + np.asarray(mean[k], np.float64))
                .astype(np.asarray(params[k]).dtype) for k in params}

    # -- selective sharing and SVT ---------------------------------------------------------------
    def _filtered_mean(self, rnd: int, params: dict, ok: dict, row: dict) -> dict:
        """The global weights plus the FedAvg mean of the sites' filtered updates. Each update
        may hold at most the filter's share of non-zero entries (``fedbio.privacy.sharing.allowed``);
        a site that sends more is refused for the round, and ``row`` records what each sent."""
        from fedbio.privacy.sharing import allowed, nonzero, values

        kind, fraction = self.s.update_filter["kind"], float(self.s.update_filter["fraction"])
        total = values(params)
        limit = allowed(total, kind, fraction)
        for site in list(ok):
            count = nonzero(ok[site].params)
            row["sites"][site]["nonzero"] = count
            if count > limit:
                del ok[site]
                reason = f"sent {count} non-zero entries > {limit} ({kind} fraction {fraction:g})"
                row["sites"][site] = {"failed": reason}
                row["failed"][site] = reason
        row["ok"] = sorted(ok)
        row["filter"] = {"kind": kind, "entries": total, "allowed": limit,
                         "nonzero": {s: row["sites"][s]["nonzero"] for s in sorted(ok)}}
        self._require(ok, f"round {rnd}")
        mean = weighted_mean([(s, row["sites"][s]["n_train"] if self.s.weighted else 1.0, r.params)
                              for s, r in ok.items()])
        return {k: (np.asarray(params[k], np.float64) + np.asarray(mean[k], np.float64))
                .astype(np.asarray(params[k]).dtype) for k in params}

    def _statistics(self, ask: Ask) -> dict:
        ok, failed = ask("stats", {}, {}, self.sites, None)
        self.history["stats"] = {"ok": sorted(ok), "failed": failed,
                                 "bytes_up": {s: bytes_of(r.params) for s, r in ok.items()}}
        self._require(ok, "stats")
        shared = {}
        for prefix in ("feature", "label"):
            stats = [{k[len(prefix) + 1:]: v for k, v in r.params.items() if k.startswith(prefix + "_")}
                     for r in ok.values()]
            if stats and stats[0]:
                mean, std = pooled_scaler(stats)
                shared[f"{prefix}_mean"], shared[f"{prefix}_std"] = mean.tolist(), std.tolist()
        self.history["shared"] = shared
        return shared
