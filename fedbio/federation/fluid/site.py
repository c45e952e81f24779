"""A site's part in FLuID: its private teacher, its annotations of the public set, its hybrid.

``fedbio/federation/nvflare/client.py`` (and the plain loop) call ``FluidSite.answer`` with each
step the server asks for:

    teachers   train the site's own model (its teacher) on its own records, as a local run does
    annotate   the teacher's class probabilities for every public record, (public, classes), and
               the smallest and largest applicability-domain distance it found (two scalars)
    combine    the site's domain weights (public,), scaled with the range over all teachers
    hybrid     retrain on its own records plus the public set labelled by the student
    evaluate   scores of its teacher (and hybrid) on its validation split and the common test sets

What leaves the site: those two arrays about public records, and scalars. Its records, features,
distances and models stay; so do their per-record predictions on the common test sets
(``RUN/sites/<site>/{teacher,hybrid}/``). The domain weights do say how close the site's private
data lies to each public record: that is what they are for.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from fedbio.data.digests import cache_key
from fedbio.data.public import read_public
from fedbio.federation.fluid.weighting import domain_sample, domain_weights, mean_knn_distance
from fedbio.federation.site import Site, scalars, write_progress
from fedbio.training.learner import Learner, embed


def public_digest(records) -> str:
    """What identifies a public set: its ids and sequences, in order."""
    return cache_key({"public": 1}, [f"{r.id}\t{r.sequence}" for r in records])


def as_inputs(records, label: str) -> list:
    """Unlabelled records with a placeholder class, so a learner can encode them (the label is
    never used)."""
    return [replace(r, label=label) for r in records]


def own_features(learner: Learner, records) -> np.ndarray:
    """A model's own view of ``records``: standardised composition features, or the encoder's
    pooled embeddings (the frozen encoder's cache in head mode, the tuned encoder otherwise)."""
    if learner.model_cfg.is_composition:
        x = learner.inputs(records).x   # on the CPU, wherever the model is
        return ((x - learner.model.mean.detach().cpu()) / learner.model.std.detach().cpu()).numpy()
    if learner.model_cfg.tuning == "head":
        return learner.inputs(records).x.numpy()
    tokens = learner.inputs(records)
    place = learner.placement
    return embed(learner.model, tokens, learner.train_cfg.batch_size, False, device=place.device,
                 precision=place.precision).numpy()


class FluidSite(Site):
    """``Site`` with FLuID's steps; the public set travels with the spec (``spec_dir``)."""

    def __init__(self, name: str, spec: dict):
        super().__init__(name, spec)
        self.fluid = spec["fluid"]
        records = read_public(Path(spec["spec_dir"]) / self.fluid["public"])
        self.records["public"] = as_inputs(records, spec["classes"][0])
        self.digest = public_digest(records)
        self.scores: dict = {}
        self.distances: np.ndarray | None = None

    def answer(self, step: str, params: dict, meta: dict) -> tuple[dict, dict, dict]:
        """(arrays, scalars, meta) for one step (``STEPS``)."""
        if meta.get("public_digest") not in (None, self.digest):
            raise ValueError("the server's public set is not the one this site holds")
        if step == "teachers":
            return {}, self.teach(), {"NUM_STEPS_CURRENT_ROUND": float(self.n_train)}
        if step == "annotate":
            return self.annotate(meta)
        if step == "combine":
            lo, hi = float(meta["distance_lo"]), float(meta["distance_hi"])
            return {"weights": domain_weights(self.distances, lo, hi).astype(np.float32)}, {}, {}
        if step == "hybrid":
            return {}, self.hybrid(np.asarray(params["student_probs"])), {}
        if step == "evaluate":
            return {}, dict(self.scores), {}
        raise ValueError(f"unknown FLuID step {step!r}")

    # -- steps ------------------------------------------------------------------------------------
    def _fit(self, learner: Learner, train, valid, what: str) -> list[dict]:
        """Train with progress files (the watchdog's sign of life, ``fedbio run``'s lines)."""
        epochs = float(self.spec["train"]["epochs"])
        n_epochs = int(np.ceil(epochs))

        def on_epoch(row: dict) -> None:
            write_progress(self.progress_dir, self.name, {
                "step": what, "round": 1, "rounds": 1, "epoch": row["epoch"], "epochs": n_epochs,
                "train_loss": row["train_loss"]})

        self._faults(1)
        return learner.fit(train, valid, epochs, where=f"{self.name}, {what}, ", on_epoch=on_epoch)

    def teach(self) -> dict:
        """Train the teacher, score it; the valid scores and last loss are sent."""
        learner = self.learner
        if learner.model_cfg.is_composition:
            learner.model.fit_scaler(self.data("train").x)
        history = self._fit(learner, self.data("train"), self.data("valid"), "teacher")
        self.scores.update(self._scores(learner, "teacher"))
        out = scalars(learner.score(self.data("valid")), "valid_")
        out["train_loss"] = float(history[-1]["train_loss"]) if history else float("nan")
        return out

    def annotate(self, meta: dict) -> tuple[dict, dict, dict]:
        """The teacher's probabilities on the public set; with domain weighting, the range of its
        distances (the distances themselves stay here for ``combine``)."""
        public = self.data("public")
        probs = np.asarray(self.learner.outputs(public), np.float32)
        metrics = {}
        if meta.get("weighting", "domain") == "domain":
            train = own_features(self.learner, self.records["train"])
            rows = domain_sample(len(train), float(self.fluid["domain_fraction"]), int(self.spec["train"]["seed"]))
            self.distances = mean_knn_distance(train[rows], own_features(self.learner, self.records["public"]),
                                               int(self.fluid["neighbours"]))
            metrics = {"distance_min": float(self.distances.min()), "distance_max": float(self.distances.max())}
        return {"probs": probs}, metrics, {"public_digest": self.digest}

    def hybrid(self, student_probs: np.ndarray) -> dict:
        """A new model from the same seed, trained on the site's records plus the public set
        labelled by the student (its most probable class)."""
        classes = self.spec["classes"]
        if student_probs.shape != (len(self.records["public"]), len(classes)):
            raise ValueError(f"student labels of shape {student_probs.shape}")
        labelled = [replace(r, label=classes[int(c)])
                    for r, c in zip(self.records["public"], student_probs.argmax(axis=1), strict=True)]
        learner = Learner.build(self.learner.model_cfg, self.learner.data_cfg, self.learner.train_cfg,
                                self.learner.codec, self.caches["own"], progress=False)
        train = learner.inputs(self.records["train"] + labelled, fit_scaler=True)
        valid = learner.inputs(self.records["valid"])
        self._fit(learner, train, valid, "hybrid")
        self.scores.update(self._scores(learner, "hybrid"))
        return scalars(learner.score(valid), "valid_")

    def _scores(self, learner: Learner, model: str) -> dict:
        """``<model>_<part>_<score>`` scalars on valid and the common test sets; per-record
        predictions kept at the site (``RUN/sites/<site>/<model>/``)."""
        from fedbio.training.predict import write_predictions
        from fedbio.training.trainer import scores_of

        out = scalars(learner.score(learner.inputs(self.records["valid"])), f"{model}_valid_")
        folder = Path(self.spec["run_dir"]) / "sites" / self.name / model
        for part in ("test", "test_hard"):
            if part in self.records:
                learner.cache_dir = self.caches["common"]
                data = learner.inputs(self.records[part])
                learner.cache_dir = self.caches["own"]
                outputs = learner.outputs(data)
                write_predictions(folder / f"{part}_predictions.csv", self.records[part], outputs,
                                  learner.codec, truth=True)
                out.update(scalars(scores_of(data.y.numpy(), outputs, "classification"), f"{model}_{part}_"))
        return out
