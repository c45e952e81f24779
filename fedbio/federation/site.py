"""One site's local work in a federated run: its own data, fedbio's ``Learner``, and what may leave.

``fedbio/federation/nvflare/client.py`` (the NVFlare client script) calls these methods; nothing here
imports NVFlare. A site reads only its own ``train``/``valid`` files and the common test sets,
trains with the same ``Learner.fit`` as a local run, and returns trainable parameters
(``Learner.trainable_state``) and scalar scores, never records, embeddings or buffers. After
every local epoch it writes ``RUN/federation/progress/<site>.json`` (round, epoch, training loss):
the watchdog's sign of life, and the progress lines of ``fedbio run``. Given a ``writer`` (NVFlare's
streaming one, from the client script), it also sends its curves as it trains: the training loss
of its steps (``<site>/train_loss_step``: the mean since the last point, at most one a second),
each epoch's (``<site>/train_loss``) and each round's score of the global model it received
(``<site>/global_valid_<score>``), for a live TensorBoard.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch

from fedbio.config import DataConfig, ModelConfig, TrainConfig, from_dict
from fedbio.data.records import read_records
from fedbio.data.tasks import LabelCodec, own_tests, task_statistics, trained_tasks
from fedbio.errors import TrainingDiverged
from fedbio.training.learner import Learner

COMMON_CACHE = "common"  # RUN/cache/common: embeddings of the common (public) test sets
DELIVERED = "delivered.safetensors"   # RUN/sites/<site>/: the last model, decrypted there (--he)


def failure_meta(err: Exception) -> dict:
    """What a failed task tells the server: the error's type only, no message (a message could
    quote data), except a ``TrainingDiverged``, whose message holds only where and losses."""
    meta = {"failed": type(err).__name__}
    if isinstance(err, TrainingDiverged):
        meta["detail"] = str(err)
    return meta


def write_progress(folder: Path, site: str, entry: dict) -> None:
    """``folder/<site>.json``, replaced atomically (the watchdog may read it at any moment)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{site}.json.part"
    tmp.write_text(json.dumps(entry))
    os.replace(tmp, folder / f"{site}.json")


KIT_ENV = "FEDBIO_KIT"          # a deployed site's kit folder (set by ``fedbio deploy``)
SITE_CONFIG = "fedbio_site.json"  # KIT/local/fedbio_site.json: {"data": FOLDER}, the site's own


def site_kit() -> Path:
    """The startup kit this site process runs from: ``$FEDBIO_KIT``, else the first folder at or
    above the working folder that holds ``local/fedbio_site.json``."""
    if os.environ.get(KIT_ENV):
        return Path(os.environ[KIT_ENV])
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / "local" / SITE_CONFIG).is_file():
            return folder
    raise FileNotFoundError(f"no local/{SITE_CONFIG} at or above {here}: this site has no data "
                            "folder configured (fedbio deploy up writes it)")


def site_data(kit: Path) -> Path:
    """The site's data folder, from its kit's local configuration (never from the job)."""
    local = json.loads((kit / "local" / SITE_CONFIG).read_text())
    return (kit / local["data"]).resolve()


def site_folders(spec: dict, name: str) -> tuple[Path, Path]:
    """(own train/valid folder, common test folder): ``SPLIT/<site>`` and ``SPLIT`` in the
    simulator; a deployed site's data folder, which holds both."""
    if spec.get("data_dir"):
        return Path(spec["data_dir"]), Path(spec["data_dir"])
    return Path(spec["split"]) / name, Path(spec["split"])


def scalars(scores: dict, prefix: str) -> dict[str, float]:
    """The numeric entries of a score dict, renamed ``prefix + key`` (nested dicts stay home)."""
    return {prefix + k: float(v) for k, v in scores.items() if isinstance(v, (int, float))}


class Site:
    """A site's data and model, built from ``RUN/federation/sites.json``."""

    def __init__(self, name: str, spec: dict):
        self.name = name
        self.spec = spec
        model_cfg = from_dict(ModelConfig, spec["model"])
        data_cfg = from_dict(DataConfig, spec["data"])
        train_cfg = from_dict(TrainConfig, spec["train"])
        torch.set_num_threads(spec["threads"])
        kind = "class" if spec["task_type"] == "classification" else "value"
        classes = spec["classes"]
        own, common = site_folders(spec, name)
        self.records = {part: read_records(own / f"{part}.csv", kind=kind, classes=classes)
                        for part in ("train", "valid")}
        self.records["test"] = read_records(common / "test.csv", kind=kind, classes=classes)
        if (common / "test_hard.csv").is_file():
            self.records["test_hard"] = read_records(common / "test_hard.csv", kind=kind, classes=classes)
        if spec["task_type"] == "multitask":
            # labels standardised with this site's own training rows: its heads are its own
            codec = LabelCodec("multitask", classes, *task_statistics(self.records["train"], classes))
            for part in ("test", "test_hard"):  # scored on the tasks it trains a head for
                if part in self.records:
                    self.records[part] = own_tests(self.records[part], self.records["train"])
        else:
            codec = LabelCodec(spec["task_type"], classes)
        cache = Path(spec["run_dir"]) / "cache"
        # the site's own records stay in its own folder; the public common test sets are encoded
        # once, by the coordinator, into the shared one (see runner._initial_model)
        self.caches = {"own": cache / name, "common": cache / COMMON_CACHE}
        self.learner = Learner.build(model_cfg, data_cfg, train_cfg, codec, self.caches["own"],
                                     progress=False)
        self.inputs: dict = {}
        self.n_train = len(self.records["train"])
        self.start: dict = {}  # the training loss where this site started (divergence check)
        self.progress_dir = Path(spec["run_dir"]) / "federation" / "progress"
        # DP: site-level (the update is clipped, and noised) and/or record-level (DP-SGD)
        self.dp = spec.get("privacy")
        self.sgd = None
        if self.dp and self.dp.get("sgd"):
            from fedbio.privacy.sgd import RecordPrivacy, site_steps

            steps = site_steps(self.n_train, train_cfg.batch_size, spec["epochs_per_round"]
                               * spec["rounds"], spec["rounds"])
            self.sgd = RecordPrivacy.plan(self.dp["sgd"], self.n_train, train_cfg.batch_size, steps)
            self.sgd.resume(self._sgd_path())   # a restarted site process counts its past steps
        # FedAvg's weight: the site's record count, which DP does not release (unweighted mean)
        self.weight = 1.0 if self.dp else float(self.n_train)
        # selective sharing or SVT: the site sends its update (filtered here, or by NVFlare's SVT)
        self.update_filter = spec.get("update_filter")

    @classmethod
    def load(cls, path: str | Path, name: str, job: str = "") -> Site:
        """Read the spec; relative paths in it are relative to the spec's folder. A deployment's
        spec names no folder: the site's data and outputs come from its own kit (``site_kit``),
        its outputs going to ``KIT/<job>/fedbio``."""
        from fedbio.processes import wait_for_preload

        wait_for_preload()   # a simulator worker's imports, done before this site's own
        path = Path(path)
        spec = json.loads(path.read_text())
        if spec.get("deployment"):
            kit = site_kit()
            spec["data_dir"] = str(site_data(kit))
            spec["run_dir"] = str(kit / (job or "job") / "fedbio")
        else:
            for key in ("split", "run_dir"):
                spec[key] = str((path.parent / spec[key]).resolve())
        spec["spec_dir"] = str(path.parent.resolve())   # files that travel with the spec (FLuID's public set)
        return cls(name, spec)

    # -- data -----------------------------------------------------------------------------------
    def data(self, part: str):
        """Model inputs of one part, built once (head mode: embeddings encoded once, then cached)."""
        if part not in self.inputs:
            self.learner.cache_dir = self.caches["common" if part.startswith("test") else "own"]
            self.inputs[part] = self.learner.inputs(self.records[part])
        return self.inputs[part]

    def statistics(self) -> dict[str, torch.Tensor]:
        """Count, sum and sum of squares of the training features (composition) and labels
        (regression), which the server pools into one scaler. No record leaves the site.

        Why one pooled scaler: the composition model's linear layer acts on standardised
        features. With a scaler per site, site k's weights act on ``(x - m_k) / s_k``, so FedAvg
        would average weights that live in different coordinates, and the delivered model would
        have no scaler of its own. The price is 841 numbers per site, once (its mean residue and
        dipeptide composition and their spread); in exchange the federation standardises exactly
        as central training does. Regression targets are standardised the same way.
        """
        out = {}
        if self.learner.model_cfg.is_composition:
            x = self.data("train").x.double()
            out.update(feature_n=torch.tensor([float(len(x))], dtype=torch.float64),
                       feature_sum=x.sum(0), feature_sumsq=(x * x).sum(0))
        if self.learner.codec.task_type == "regression":
            y = torch.tensor([float(r.label) for r in self.records["train"]], dtype=torch.float64)
            out.update(label_n=torch.tensor([float(len(y))], dtype=torch.float64),
                       label_sum=y.sum(0, keepdim=True), label_sumsq=(y * y).sum(0, keepdim=True))
        elif self.learner.codec.task_type == "multitask":  # per task: shared heads need one scale
            tasks = self.learner.codec.classes
            values = [torch.tensor([float(r.label) for r in self.records["train"] if r.task == t],
                                   dtype=torch.float64) for t in tasks]
            out.update(label_n=torch.tensor([float(len(v)) for v in values], dtype=torch.float64),
                       label_sum=torch.stack([v.sum() for v in values]),
                       label_sumsq=torch.stack([(v * v).sum() for v in values]))
        return out

    def _apply(self, params: dict, meta: dict) -> None:
        """Load the global parameters and the shared scaler/label statistics (when there are any)."""
        if "feature_mean" in meta:
            with torch.no_grad():
                self.learner.model.mean.copy_(torch.tensor(meta["feature_mean"]))
                self.learner.model.std.copy_(torch.tensor(meta["feature_std"]))
        codec = self.learner.codec
        if "label_mean" in meta and codec.set_scale(meta["label_mean"], meta["label_std"]):
            for part, data in self.inputs.items():
                data.y = codec.encode(self.records[part])
        self.learner.load_trainable_state(params)

    # -- tasks ------------------------------------------------------------------------------------
    def train(self, params: dict, meta: dict, rnd: int, rounds: int,
              writer=None) -> tuple[dict, dict, dict]:
        """One round: score the global model on ``valid``, then E/R local epochs from it.

        Returns the trainable parameters, scalar metrics and a per-epoch loss curve; ``writer``
        gets the curves as they come (see the module docstring).
        """
        self._apply(params, meta)
        if self.dp:
            return self._train_private(params, meta, rnd, rounds)
        received = ({k: torch.as_tensor(v).detach().to("cpu").clone() for k, v in params.items()}
                    if self.update_filter else None)
        metrics = scalars(self.learner.score(self.data("valid")), "valid_")
        if writer is not None:
            for key, value in metrics.items():
                if key != "valid_n":
                    writer.add_scalar(f"{self.name}/global_{key}", value, rnd - 1)
        self._faults(rnd)
        if writer is not None:   # a step's loss at most once a second (StepsThrottled)
            from fedbio.training.tensorboard import StepsThrottled

            writer = StepsThrottled(writer)
        history = self._local_epochs(meta, rnd, rounds, writer)
        if writer is not None:
            writer.finish()
        curve = [h["train_loss"] for h in history]
        metrics["train_loss"] = curve[-1] if curve and curve[-1] is not None else float("nan")
        if rnd == rounds:  # the site's own model after the last round, scored where it lives
            for part in ("valid", "test", "test_hard"):
                if part in self.records:
                    scores = (self.learner.score(self.data(part)) if part == "valid"
                              else self._score_and_keep(part))
                    metrics.update(scalars(scores, f"local_{part}_"))
            if self.spec.get("private"):  # its private head makes it the site's model: kept here
                self.learner.save(Path(self.spec["run_dir"]) / "sites" / self.name / "model",
                                  trained_tasks(self.records["train"]))
        if received is not None:
            sent, extra = self._filtered_update(received)
            return sent, metrics, {"curve": curve, **extra}
        return self.learner.trainable_state(), metrics, {"curve": curve}

    def _filtered_update(self, received: dict) -> tuple[dict, dict]:
        """The update (local minus global weights) instead of the weights: for SVT as it is
        (NVFlare's ``SVTPrivacy`` filters it on its way out), for selective sharing only its
        largest entries (``fedbio.privacy.sharing``). The ``share_*`` entries are for the
        site's own audit, which removes them before anything is sent."""
        from fedbio.privacy.sharing import cosine, top_fraction

        state = self.learner.trainable_state()
        update = {k: (state[k].detach().to("cpu", torch.float64) - received[k].to(torch.float64))
                  .numpy() for k in received}
        if self.update_filter["kind"] != "share":
            return {k: torch.from_numpy(v).to(state[k].dtype) for k, v in update.items()}, {"update": 1}
        sent, kept = top_fraction(update, self.update_filter["fraction"], self.update_filter["clip"])
        extra = {"update": 1, "share_kept": kept, "share_cosine": cosine(sent, update)}
        return {k: torch.from_numpy(v).to(state[k].dtype) for k, v in sent.items()}, extra

    def _local_epochs(self, meta: dict, rnd: int, rounds: int, writer=None) -> list[dict]:
        """The round's E/R local epochs from the global model now loaded (FedProx if asked)."""
        prox = None
        if meta.get("algorithm") == "fedprox":
            ref = {k: p.detach().clone() for k, p in self.learner.module.named_parameters() if p.requires_grad}
            prox = (float(meta["mu"]), ref)
        epochs = self.spec["epochs_per_round"]
        n_epochs = math.ceil(epochs)

        def on_epoch(row: dict) -> None:
            write_progress(self.progress_dir, self.name, {   # under DP: no loss, only that it goes on
                "round": rnd, "rounds": rounds, "epoch": row["epoch"] - (rnd - 1) * n_epochs,
                "epochs": n_epochs, "train_loss": None if self.dp else row["train_loss"],
                "time": time.time()})

        return self.learner.fit(self.data("train"), None, epochs, prox=prox, select=False,
                                step_offset=(rnd - 1) * n_epochs, where=f"{self.name}, round {rnd}, ",
                                reference=self.start, on_epoch=on_epoch, writer=writer, tag=self.name,
                                dp_sgd=self.sgd)

    def _train_private(self, params: dict, meta: dict, rnd: int, rounds: int) -> tuple[dict, dict, dict]:
        """A DP round: local epochs (DP-SGD when asked), then the weights (DP-SGD only) or the
        update (local minus global), clipped to norm S and, with ``--dp-where site``, noised
        here. No scores, no curve: see ``fedbio.privacy.releases``. The meta's ``dp_*`` entries
        are for the site's own audit, which removes them before anything is sent."""
        import numpy as np

        from fedbio.privacy.updates import add_noise, clip_update, noise_source

        received = {k: torch.as_tensor(v).detach().to("cpu", torch.float64).numpy()
                    for k, v in params.items()}
        self._faults(rnd)
        self._local_epochs(meta, rnd, rounds)
        state = self.learner.trainable_state()
        extra = self._record_sgd() if self.sgd is not None else {}
        if self.dp.get("clip") is None:   # DP-SGD alone: its weights are already private
            return {k: state[k] for k in received}, {}, extra
        update = {k: state[k].detach().to("cpu", torch.float64).numpy() - received[k] for k in received}
        clipped, norm, scale = clip_update(update, self.dp["clip"])
        sd = 0.0
        if self.dp["where"] == "site":
            sd = self.dp["noise_multiplier"] * self.dp["clip"] / math.sqrt(self.dp["sites"])
            rng = noise_source(self.dp.get("noise_seed"), rnd, self.dp["index"][self.name])
            clipped = add_noise(clipped, sd, rng)
        out = {k: torch.from_numpy(np.asarray(v, np.float64)).to(state[k].dtype) for k, v in clipped.items()}
        return out, {}, {"dp_norm": norm, "dp_scale": scale, "dp_noise_sd": sd, **extra}

    def _record_sgd(self) -> dict:
        """This site's DP-SGD so far, kept at home (``RUN/sites/<site>/dp_sgd.json``); the
        returned ``dp_sgd_*`` entries go to the site's audit only."""
        record, path = self.sgd.record(), self._sgd_path()
        write_progress(path.parent, path.stem, record)   # replaced atomically, as progress is
        return {"dp_sgd_steps": record["steps"], "dp_sgd_epsilon": record["epsilon"]}

    def _sgd_path(self) -> Path:
        from fedbio.privacy.fedavg import SGD_RECORD

        return Path(self.spec["run_dir"]) / "sites" / self.name / SGD_RECORD

    def _score_and_keep(self, part: str) -> dict:
        """Scores of the site's model on a common (public) test set, with bootstrap intervals;
        its per-record predictions stay at the site (``RUN/sites/<site>/<part>_predictions.csv``,
        what ``fedbio report`` reads for this site's row). Only the scores are sent."""
        from fedbio.training.predict import write_predictions
        from fedbio.training.trainer import scores_of

        data, codec = self.data(part), self.learner.codec
        outputs = self.learner.outputs(data)
        folder = Path(self.spec["run_dir"]) / "sites" / self.name
        write_predictions(folder / f"{part}_predictions.csv", self.records[part], outputs, codec, truth=True)
        return scores_of(data.y.numpy(), outputs, codec.task_type, codec, ci=True)

    def _faults(self, rnd: int) -> None:
        """Test hooks (``FedConfig.fail_sites``, ``slow_sites``, ``die_sites``)."""
        faults = self.spec.get("faults", {})
        if self.name in faults.get("fail", ()):
            raise RuntimeError(f"{self.name} was told to fail (FedConfig.fail_sites, a test hook)")
        if self.name in faults.get("slow", ()):
            time.sleep(float(faults.get("slow_seconds", 0)))
        if self.name in faults.get("die", ()):
            os._exit(17)  # the site's process dies without a word, as a crashed machine would

    def deliver(self, params: dict) -> Path:
        """Keep a delivered global model at the site (``--he``: only sites can decrypt it):
        ``RUN/sites/<site>/delivered.safetensors``."""
        import numpy as np
        from safetensors.numpy import save_file

        path = Path(self.spec["run_dir"]) / "sites" / self.name / DELIVERED
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in params.items()}, str(path))
        return path

    def evaluate(self, params: dict, meta: dict) -> dict[str, float]:
        """Scores of a global model on the site's validation split."""
        self._apply(params, meta)
        return scalars(self.learner.score(self.data("valid")), "valid_")
