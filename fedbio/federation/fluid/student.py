"""The student: a model trained by the server on the public set, labelled by the teachers' combination.

    learner = StudentTrainer(spec, public_records, cache_dir)
    params, probs, shared = learner.train(labels, rows)   # rows: the selection it learns from

Built from the sites' own spec (model, data and training settings, seed), so the student is the
same model the teachers are. It learns the combined label's most probable class (as FLuID's
reference code does) on the selected rows, keeping the epoch best on a seeded tenth of them.
``probs`` are its probabilities for every public record: the hybrids' labels. ``shared`` holds a
composition model's scaler (from public records only), which the delivered model needs. Runs in
the server's process; no site's data is involved. Each epoch rewrites
``RUN/federation/progress/server.json`` (the watchdog's sign of life, as a site's epochs are).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from fedbio.config import DataConfig, ModelConfig, TrainConfig, from_dict
from fedbio.data.tasks import LabelCodec
from fedbio.federation.fluid.site import as_inputs
from fedbio.training.learner import Learner

VALID_SHARE = 0.1   # of the selected rows, for the student's choice of epoch


class StudentTrainer:
    def __init__(self, spec: dict, public: list, cache_dir: str | Path, threads: int | None = None,
                 progress_dir: str | Path | None = None):
        self.spec = spec
        self.progress_dir = Path(progress_dir) if progress_dir else None
        self.name = "student"
        self.classes = list(spec["classes"])
        self.public = as_inputs(public, self.classes[0])
        self.cache_dir = Path(cache_dir)
        if threads:
            torch.set_num_threads(threads)

    def train(self, labels: np.ndarray, rows: np.ndarray, name: str = "student") -> tuple[dict, np.ndarray, dict]:
        self.name = name
        train_cfg = from_dict(TrainConfig, self.spec["train"])
        learner = Learner.build(from_dict(ModelConfig, self.spec["model"]), from_dict(DataConfig, self.spec["data"]),
                                train_cfg, LabelCodec("classification", self.classes), self.cache_dir,
                                progress=False)
        chosen = [replace(self.public[int(i)], label=self.classes[int(labels[i])]) for i in rows]
        order = np.random.default_rng(train_cfg.seed).permutation(len(chosen))
        n_valid = max(1, int(round(VALID_SHARE * len(chosen)))) if len(chosen) > 1 else 0
        valid = [chosen[i] for i in sorted(order[:n_valid])]
        train = [chosen[i] for i in sorted(order[n_valid:])] or chosen
        data = learner.inputs(train, fit_scaler=True)
        learner.fit(data, learner.inputs(valid) if valid else None, train_cfg.epochs, on_epoch=self._progress)
        probs = np.asarray(learner.outputs(learner.inputs(self.public)), np.float32)
        params = {k: v.detach().cpu().numpy() for k, v in learner.trainable_state().items()}
        shared = {}
        if learner.model_cfg.is_composition:
            shared = {"feature_mean": learner.model.mean.tolist(), "feature_std": learner.model.std.tolist()}
        return params, probs, shared

    def _progress(self, row: dict) -> None:
        """``RUN/federation/progress/server.json`` after each epoch: the watchdog's sign of life
        while the student trains, and ``fedbio run``'s progress line."""
        if self.progress_dir is not None:
            from fedbio.federation.site import write_progress

            epochs = int(np.ceil(float(self.spec["train"]["epochs"])))
            step = "student" if self.name == "student" else f"student (study {self.name})"
            write_progress(self.progress_dir, "server", {"step": step, "round": 1, "rounds": 1,
                                                         "epoch": row["epoch"], "epochs": epochs,
                                                         "train_loss": row["train_loss"]})


def student_for(settings, spec_dir: str | Path, n_sites: int):
    """``FluidServer``'s ``train_student``, from the sites' spec and public set in ``spec_dir``
    (``RUN/federation``, or a deployed job's server app); the cache in the server's run folder,
    the threads every site had between them (the sites are idle while the student trains)."""
    import json

    from fedbio.config import cores
    from fedbio.data.public import read_public

    spec = json.loads((Path(spec_dir) / "sites.json").read_text())
    public = read_public(Path(spec_dir) / spec["fluid"]["public"])
    threads = min(cores(), int(spec["threads"]) * n_sites)
    run_dir = Path(settings.run_dir)
    trainer = StudentTrainer(spec, public, run_dir / "cache" / "student", threads, run_dir / "federation" / "progress")
    return trainer.train
