"""The server's side of a FLuID run: teachers -> annotate -> combine -> student -> hybrid -> evaluate.

``FluidServer.run(ask, params)`` has ``Server.run``'s shape and records (``history.json`` after
every step, ``done.json`` last), so NVFlare's controller, the plain loop, the watchdog and the
progress lines need nothing new. The server sends no weights to sites and receives none:

    teachers   each site trains its private teacher                      -> scalars
    annotate   each teacher labels the public set                       -> (public, classes) probabilities
    combine    (domain weighting, two or more teachers) the sites' range  -> (public,) weights
               of distances goes out, their weights come back
    student    here: the combined labels, a class-balanced selection, ``train_student``
    hybrid     (``--fluid-hybrid``) the student's labels of the public set go out -> scalars
    evaluate   each site scores its teacher (and hybrid)                  -> scalars

Every array a site sends is checked for its shape (one row per public record) and finite,
non-negative values; a site that sends anything else counts as failed for the step. The
student's parameters are ``global.safetensors``, the combined labels it learned from
``public_labels.csv`` (class index ``p0..``, the teachers' weights, the rows selected); with ``studies`` the same annotations also train
students from 1..K teachers, from parts of the public set, with the other weighting and with
the other selection (``studies/<name>.safetensors``), which the coordinator scores on the common test sets.
Numpy only; the student's training is handed in (``fedbio.federation.fluid.student``).
"""

from __future__ import annotations

import time
from itertools import combinations

import numpy as np

from fedbio.federation.aggregate import bytes_of
from fedbio.federation.fluid.weighting import balanced_selection, combine
from fedbio.federation.server import Server

SUBSETS_PER_SIZE = 8            # teacher subsets trained per size in the teacher-count study
PUBLIC_SHARES = (0.25, 0.5)     # parts of the public set in its size study (1.0 is the run itself)
LABELS = "public_labels.csv"    # RUN/federation/server/: the combined labels the student learned from


class FluidServer(Server):
    """``Server`` whose workflow is FLuID's; ``train_student(labels, rows, name)`` -> (params, probs, shared)."""

    def __init__(self, settings, sites, report=None, train_student=None):
        super().__init__(settings, sites, report)
        self.train_student = train_student
        self.f = settings.fluid
        self.history["steps"] = {}

    def _step(self, name: str, ok: dict, failed: dict, began: float) -> None:
        self.history["steps"][name] = {
            "ok": sorted(ok), "failed": dict(sorted(failed.items())),
            "bytes_up": {s: bytes_of(r.params) for s, r in ok.items()},
            "shapes": {s: {k: list(np.shape(v)) for k, v in r.params.items()} for s, r in ok.items()},
            "metrics": {s: dict(r.metrics) for s, r in ok.items()},
            "seconds": round(time.time() - began, 3)}
        self.write_history()
        self.report("steps/sites", float(len(ok)), len(self.history["steps"]))

    def _check(self, ok: dict, failed: dict, name: str, shape: tuple) -> None:
        """Refuse a reply whose only array is not ``name`` of ``shape``, finite and >= 0."""
        for site, reply in list(ok.items()):
            value = np.asarray(reply.params.get(name, np.zeros(0)), np.float64)
            if sorted(reply.params) != [name] or value.shape != shape or not np.all(np.isfinite(value)) \
                    or np.any(value < 0):
                failed[site] = f"sent {sorted(reply.params)} of shape {value.shape}; expected {name} {shape}"
                del ok[site]

    def _ask_step(self, ask, name: str, params: dict, meta: dict, targets: list) -> tuple[dict, dict, float]:
        began = time.time()
        ok, failed = ask(name, params, meta, targets, None)
        return ok, failed, began

    def run(self, ask, params: dict) -> dict:
        start = time.time()
        ask = self._asker(ask)
        n, k = int(self.f["n_public"]), int(self.f["n_classes"])
        meta = {"public_digest": self.f["public_digest"], "weighting": self.f["weighting"]}
        self.history["exchanged"] = {"names": [], "values": 0, "bytes": 0}   # no weights, either way
        self.history["n_public"] = n

        ok, failed, began = self._ask_step(ask, "teachers", {}, meta, self.sites)
        self._step("teachers", ok, failed, began)
        self._require(ok, "teachers")

        ok, failed, began = self._ask_step(ask, "annotate", {}, meta, sorted(ok))
        self._check(ok, failed, "probs", (n, k))
        self._step("annotate", ok, failed, began)
        self._require(ok, "annotate")
        probs = {s: np.asarray(r.params["probs"], np.float64) for s, r in ok.items()}
        weights = None
        if self.f["weighting"] == "domain" and len(ok) > 1:
            lo = min(float(r.metrics["distance_min"]) for r in ok.values())
            hi = max(float(r.metrics["distance_max"]) for r in ok.values())
            ok, failed, began = self._ask_step(ask, "combine", {}, {**meta, "distance_lo": lo, "distance_hi": hi},
                                               sorted(ok))
            self._check(ok, failed, "weights", (n,))
            self._step("combine", ok, failed, began)
            self._require(ok, "combine")
            weights = {s: np.asarray(r.params["weights"], np.float64) for s, r in ok.items()}
            self.history["steps"]["combine"]["range"] = [lo, hi]
        teachers = sorted(weights or probs)

        began = time.time()
        student = self._student(teachers, probs, weights, self.f["weighting"], 1.0, "student", self.f["selection"])
        self._save("global.safetensors", student["params"])
        self.history["shared"] = student["shared"]
        self.history["student"] = {k: v for k, v in student.items() if k not in ("params", "probs", "shared")}
        self.history["steps"]["student"] = {"ok": ["server"], "seconds": round(time.time() - began, 3)}
        self.write_history()
        if self.f.get("studies"):
            self._studies(teachers, probs, weights)

        if self.f.get("hybrid"):
            ok, failed, began = self._ask_step(ask, "hybrid", {"student_probs": student["probs"]}, meta, teachers)
            self._step("hybrid", ok, failed, began)
        ok, failed, began = self._ask_step(ask, "evaluate", {}, meta, self.sites)
        self._step("evaluate", ok, failed, began)
        self.history["teachers"] = teachers
        self.history["selected_round"] = None
        self.history["server_seconds"] = round(time.time() - start, 2)
        self.write_history()
        self.write_done()
        return self.history

    # -- the student ------------------------------------------------------------------------------
    def _student(self, teachers: list, probs: dict, weights: dict | None, weighting: str, share: float,
                 name: str, selection: str) -> dict:
        """Combine ``teachers``' annotations, select, train; ``share`` < 1 uses a seeded part of
        the public set."""
        soft, norm = combine([probs[s] for s in teachers],
                             [weights[s] for s in teachers] if weights and weighting == "domain" else None)
        seed = int(self.f["seed"])
        rows = np.arange(len(soft))
        if share < 1:
            rows = np.sort(np.random.default_rng([seed, 11]).choice(len(soft), int(round(share * len(soft))),
                                                                    replace=False))
        labels = soft.argmax(axis=1)
        if selection == "balanced":
            rows = rows[balanced_selection(labels[rows], soft.shape[1], seed)]
        params, student_probs, shared = self.train_student(labels, rows, name)
        if name == "student":   # what the student learned from, kept with the server's records
            self._write_labels(soft, norm, teachers, rows)
        return {"name": name, "teachers": teachers, "weighting": weighting, "public_share": share,
                "selection": selection,
                "rows": int(len(rows)), "label_counts": np.bincount(labels[rows], minlength=soft.shape[1]).tolist(),
                "teacher_share": {s: float(norm[i].mean()) for i, s in enumerate(teachers)},
                "params": params, "probs": student_probs, "shared": shared}

    def _write_labels(self, soft: np.ndarray, share: np.ndarray, teachers: list, rows: np.ndarray) -> None:
        """``public_labels.csv``: per public record (in the public set's order) the combined
        probabilities, each teacher's normalised weight, and whether the student trained on it."""
        import csv
        import os

        chosen = np.zeros(len(soft), bool)
        chosen[rows] = True
        os.makedirs(self.out_dir, exist_ok=True)
        with open(os.path.join(self.out_dir, LABELS), "w", newline="") as handle:
            out = csv.writer(handle)
            out.writerow(["row", "label", "selected", *[f"p{c}" for c in range(soft.shape[1])],
                          *[f"w_{t}" for t in teachers]])
            for i in range(len(soft)):
                out.writerow([i, int(soft[i].argmax()), int(chosen[i]), *[f"{v:.6g}" for v in soft[i]],
                              *[f"{v:.6g}" for v in share[:, i]]])

    def _studies(self, teachers: list, probs: dict, weights: dict | None) -> None:
        """FLuID's questions on the same annotations: how many teachers, how much public data,
        which weighting, which selection. Each student is kept as ``studies/<name>.safetensors``."""
        weighting, selection = self.f["weighting"], self.f["selection"]
        runs = []
        for size in range(1, len(teachers)):
            subsets = list(combinations(teachers, size))[:SUBSETS_PER_SIZE]
            runs += [("teachers", size, list(s), weighting, 1.0, selection) for s in subsets]
        runs += [("public_share", share, teachers, weighting, share, selection) for share in PUBLIC_SHARES]
        if weights:
            other = "uniform" if weighting == "domain" else "domain"
            runs.append(("weighting", other, teachers, other, 1.0, selection))
        other = "all" if selection == "balanced" else "balanced"
        runs.append(("selection", other, teachers, weighting, 1.0, other))
        done = []
        for index, (kind, value, group, weighting, share, selection) in enumerate(runs):
            name = f"{kind}-{index}"
            student = self._student(group, probs, weights, weighting, share, name, selection)
            self._save(f"studies/{name}.safetensors", student["params"])
            done.append({"kind": kind, "value": value, "file": f"studies/{name}.safetensors",
                         "shared": student["shared"],
                         **{k: v for k, v in student.items() if k not in ("params", "probs", "shared")}})
            self.history["studies"] = done
            self.write_history()
