"""``fedbio attack membership RUN``: a membership-inference attack on the model(s) a run delivered.

    fedbio attack membership runs/fedavg        # RUN/attack/: membership.json, scores.csv, roc.png
    result = attack_run("runs/fedavg")          # the same, from Python

The model attacked is the one the run delivered: ``RUN/model`` (central and federated runs), or
each site's own ``RUN/<site>/model`` (local runs: each model is judged on its own site's
records, and the scores are pooled).

- **Members**: the records it trained on (every site's ``train.csv``; a local model's own).
- **Non-members**: each site's ``valid.csv``, a random slice of the same site's data
  (``fedbio split --valid-fraction``) that no model trained on: the same distribution as the
  members, different records. Validation records only steer model selection (which epoch or
  round is delivered); that can make non-members look a little *like* members, so the leakage
  measured is, if anything, on the low side. The test set is never a non-member: DeepLoc's test
  fold is homology-separated from its training fold, and an attack would then tell protein
  families apart, not members.

Attacks (``ATTACKS``):

- ``loss``: the record's loss under the model; lower means member (Yeom et al., 2018).
- ``calibrated``: a reference model's loss minus the model's loss, per record: difficulty
  calibration (Watson et al., 2022), so a record that is merely easy does not pass for a member.
  The reference is trained as the run trained (model, tuning, epochs, learning rate) on the
  split's public test set: data an attacker can hold, with no member and no non-member in it.
  ``references`` > 1 averages several reference seeds.

``metrics.json`` gains ``privacy.membership_auc`` and ``privacy.tpr_at_1pct_fpr`` (from the
stronger attack: an attacker picks the better one) and ``privacy.membership`` (every attack, with
bootstrap intervals). Only classification and single-task regression runs are attacked.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fedbio.errors import FedbioError
from fedbio.privacy.membership import leakage

ATTACKS = ("loss", "calibrated")
FOLDER = "attack"       # RUN/attack/
RESULT = "membership.json"


@dataclass
class AttackConfig:
    attacks: tuple[str, ...] = ATTACKS
    references: int = 1          # reference models (seeds) the calibrated attack averages
    n_boot: int = 1000           # bootstrap resamples for the intervals
    seed: int = 0                # bootstrap and reference seeds

    def validate(self) -> AttackConfig:
        from fedbio.config import check_number, check_seed

        unknown = [a for a in self.attacks if a not in ATTACKS]
        if unknown or not self.attacks:
            raise FedbioError(f"--attack {','.join(unknown) or '(none)'}: choose from "
                              f"{', '.join(ATTACKS)} (comma-separated), or all")
        check_number("--references", self.references, low=1, high=10, integer=True)
        check_number("--n-boot", self.n_boot, low=100, high=100_000, integer=True)
        check_seed(self.seed)
        check_seed(self.seed + self.references - 1, "--seed + --references - 1 (the last reference's seed)")
        return self

    def to_dict(self) -> dict:
        return {"attacks": list(self.attacks), "references": self.references,
                "n_boot": self.n_boot, "seed": self.seed}


# -- the run attacked ---------------------------------------------------------------------------
def _json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FedbioError(f"{path}: not found; {what}") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise FedbioError(f"{path}: unreadable ({type(err).__name__}); {what}") from None
    if not isinstance(data, dict):
        raise FedbioError(f"{path}: not a JSON object; {what}")
    return data


def run_config(config: dict, path: Path):
    """The ``RunConfig`` a run's ``config.json`` holds."""
    from fedbio.config import TASKS, DataConfig, ModelConfig, TrainConfig, from_dict
    from fedbio.training.run import RunConfig

    redo = "give a run folder written by fedbio run"
    try:
        cfg = RunConfig(task=config["task"], mode=config["mode"], seed=config["seed"],
                        model=from_dict(ModelConfig, config["model"]),
                        data=from_dict(DataConfig, config["data"]),
                        train=from_dict(TrainConfig, config["train"]),
                        profile=config.get("profile", ""))
    except (KeyError, TypeError, AttributeError):
        raise FedbioError(f"{path}: not a fedbio run configuration; {redo}") from None
    if cfg.task not in TASKS:
        raise FedbioError(f"{path}: task {cfg.task!r} is not one of {', '.join(TASKS)}; {redo}")
    if cfg.data.split is not None and not isinstance(cfg.data.split, str):
        raise FedbioError(f"{path}: data.split is {cfg.data.split!r}, not a folder name; {redo}")
    return cfg


@dataclass
class Target:
    """What is attacked: the run's configuration and data, and each model with its members and
    non-members (``{name: (model folder, members, non-members)}``)."""

    run: Path
    cfg: object
    task: object
    models: dict


def read_target(run: str | Path) -> Target:
    """The run's models and its records, checked before anything is computed or written."""
    from fedbio.data.tasks import load_task
    from fedbio.federation.audit import private_prefixes

    run = Path(os.path.realpath(run))   # one name for the run, whatever link leads to it
    redo = "give a run folder written by fedbio run (a finished one: RUN, not RUN.running)"
    if not run.is_dir():
        raise FedbioError(f"{run}: no such folder; {redo}")
    metrics = _json(run / "metrics.json", redo)
    cfg = run_config(_json(run / "config.json", redo), run / "config.json")
    task_type = metrics.get("task_type")
    if task_type not in ("classification", "regression"):
        raise FedbioError(f"{run / 'metrics.json'}: task_type is {task_type!r}; the membership "
                          "attack takes classification and single-task regression runs")
    if not isinstance(metrics.get("privacy", {}), (dict, type(None))):
        raise FedbioError(f"{run / 'metrics.json'}: privacy is not an object; {redo}")
    federation = _json(run / "config.json", redo).get("federation") or {}
    if cfg.mode not in ("local", "central") and private_prefixes(federation.get("private_heads"), task_type):
        raise FedbioError(f"{run}: its sites kept private heads, so it delivered no one model; "
                          "attack a run with shared heads")
    split = Path(cfg.data.split) if cfg.data.split else run / "split"
    if not split.is_dir():
        raise FedbioError(f"{run / 'config.json'}: the run trained on the split {split}, which is "
                          "not a folder here (a relative path is read from the current folder); "
                          "run the attack from the folder the run was started in, or restore the split")
    task = load_task(split, cfg.task)
    recorded = _json(run / "manifest.json", redo).get("data_md5")
    if not isinstance(recorded, dict) or not recorded:
        raise FedbioError(f"{run / 'manifest.json'}: has no data checksums (data_md5); {redo}")
    changed = sorted(k for k, v in task.checksums.items() if recorded.get(k) not in (None, v))
    added = sorted(set(task.checksums) - set(recorded))
    gone = sorted(set(recorded) - set(task.checksums))
    for names, how in ((changed, "changed since the run (its checksum differs from"),
                       (added, "added since the run (it is not in"),
                       (gone, "missing: the run trained on it (it is in")):
        if names:
            raise FedbioError(f"{split / names[0]}: {how} {run / 'manifest.json'}); members and "
                              "non-members would be wrong: attack with the split the run trained on")
    if cfg.mode == "local":
        models = {site: (run / site / "model", parts["train"], parts["valid"])
                  for site, parts in task.sites.items()}
    else:
        models = {"delivered": (run / "model", task.pooled("train"), task.pooled("valid"))}
    for folder, members, nonmembers in models.values():
        if not folder.is_dir():
            raise FedbioError(f"{folder}: missing; {redo}")
        if not members or not nonmembers:
            raise FedbioError(f"{split}: a site has no training or no validation records; the "
                              "attack needs both")
    return Target(run, cfg, task, models)


def check_nonmembers(target: Target) -> None:
    """Members and non-members are different records (ids and sequences), and no non-member
    comes from a test set: the guarantee the docstring gives, checked on every attack."""
    test = {r.id for r in target.task.test} | {r.id for r in target.task.test_hard or []}
    for name, (_, members, nonmembers) in target.models.items():
        ids = {r.id for r in members}
        seqs = {r.sequence for r in members}
        both = [r.id for r in nonmembers if r.id in ids or r.sequence in seqs]
        if both:
            raise FedbioError(f"{target.task.split_dir}: record {both[0]} is both trained on and a "
                              f"validation record ({name}); a non-member must be a record the model "
                              "never saw: fix the split")
        if any(r.id in test for r in nonmembers):
            raise FedbioError(f"{target.task.split_dir}: a test record is among the validation "
                              "records; fix the split")


# -- scores -------------------------------------------------------------------------------------
def record_losses(learner, records) -> np.ndarray:
    """Each record's loss: cross-entropy (classification), squared error in the label's own
    units (regression), so models with different label scales compare."""
    data = learner.inputs(records)
    out = learner.outputs(data)
    codec = learner.codec
    if codec.task_type == "classification":
        y = data.y.numpy().astype(int)
        return -np.log(np.clip(out[np.arange(len(y)), y], 1e-12, None)).astype(np.float64)
    truth = np.array([float(r.label) for r in records])
    return (codec.decode_values(out[:, 0]) - truth) ** 2


def load_learner(folder: Path, cfg, cache: Path):
    """A ``Learner`` around a saved model folder (``fedbio.training.predict.load_predictor``)."""
    from fedbio.training.learner import Learner
    from fedbio.training.predict import load_predictor

    tokenizer, model, codec, data_cfg, _ = load_predictor(folder, cfg.model.trust_remote_code)
    return Learner(cfg.model, data_cfg, cfg.train, codec, tokenizer, model, cache, progress=False)


def reference_learner(target: Target, seed: int, cache: Path, progress: bool):
    """A model trained as the run trained, on the public test set: the calibration reference."""
    from fedbio.training.learner import Learner

    cfg, task = target.cfg, target.task
    codec = task.codec(task.test)   # a regression scale from the attacker's own data
    learner = Learner.build(cfg.model, cfg.data, replace(cfg.train, seed=seed), codec, cache,
                            progress=progress)
    train = learner.inputs(task.test, fit_scaler=True)
    learner.fit(train, None, cfg.train.epochs, select=False, tag="reference")
    return learner


def membership_scores(target: Target, config: AttackConfig, cache: Path, say=print,
                      progress: bool = True) -> dict:
    """Per-record losses under each model (and the references), with membership: a dict of
    arrays ``id``, ``model``, ``member``, ``loss``, ``reference_loss`` (NaN without references)."""
    from fedbio.training.trainer import set_threads

    set_threads(target.cfg.train)
    rows = {"id": [], "model": [], "member": [], "loss": []}
    records = []
    for name, (folder, members, nonmembers) in target.models.items():
        say(f"attack: scoring {len(members)} members and {len(nonmembers)} non-members with "
            f"{folder}")
        learner = load_learner(folder, target.cfg, cache)
        for member, recs in ((1, members), (0, nonmembers)):
            rows["loss"].append(record_losses(learner, recs))
            rows["id"] += [r.id for r in recs]
            rows["model"] += [name] * len(recs)
            rows["member"] += [member] * len(recs)
            records += recs
    out = {"id": np.array(rows["id"]), "model": np.array(rows["model"]),
           "member": np.array(rows["member"], bool), "loss": np.concatenate(rows["loss"])}
    out["reference_loss"] = np.full(len(out["loss"]), np.nan)
    if "calibrated" in config.attacks:
        runs = []
        for k in range(config.references):
            say(f"attack: training reference model {k + 1}/{config.references} on the public test "
                f"set ({len(target.task.test)} records, {target.cfg.train.epochs:g} epochs)")
            reference = reference_learner(target, config.seed + k, cache, progress)
            runs.append(record_losses(reference, records))
        out["reference_loss"] = np.mean(runs, axis=0)
    return out


def attack_scores(scores: dict, attack: str) -> np.ndarray:
    """The attacker's membership score per record (higher: member)."""
    if attack == "loss":
        return -scores["loss"]
    return scores["reference_loss"] - scores["loss"]


# -- the command --------------------------------------------------------------------------------
def attack_run(run: str | Path, config: AttackConfig | None = None, overwrite: bool = False,
               progress: bool = True) -> dict:
    """Attack ``run``'s delivered model(s); write ``RUN/attack/`` and the ``privacy`` entries of
    ``RUN/metrics.json``; return ``membership.json``'s content. A second attack of the same run
    is refused unless ``overwrite``."""
    from fedbio.outputs import OutputLock, add_part, check_output, output_dir
    from fedbio.paths import data_dir

    config = (config or AttackConfig()).validate()
    target = read_target(run)
    check_nonmembers(target)
    out, inputs = target.run / FOLDER, [target.task.split_dir, data_dir()]
    check_output(out, overwrite=overwrite, inputs=inputs, kind="attack", option="")
    say = print if progress else (lambda *a, **k: None)
    lock = OutputLock(target.run, option="").acquire()   # no run --overwrite meanwhile
    try:
        # before anything is written: whatever the attack leaves in the run, even if it is
        # killed, is fedbio's, and a later run --overwrite may replace it
        add_part(target.run, FOLDER)
        with output_dir(out, overwrite=overwrite, kind="attack", option="", inputs=inputs) as tmp:
            scores = membership_scores(target, config, tmp / "tmp", say, progress)
            result = summarise(target, config, scores)
            write_scores(tmp / "scores.csv", scores)
            (tmp / RESULT).write_text(json.dumps(result, indent=1) + "\n")
            from fedbio.reporting.privacy_plots import plot_roc

            plot_roc({a: (attack_scores(scores, a)[scores["member"]],
                          attack_scores(scores, a)[~scores["member"]]) for a in config.attacks},
                     tmp / "roc.png", title=f"membership inference: {target.run.name}")
        record_in_metrics(target.run, result)
    finally:
        lock.release()
    return result


def summarise(target: Target, config: AttackConfig, scores: dict) -> dict:
    """``membership.json``: each attack's leakage, what was attacked and with what."""
    member = scores["member"]
    attacks = {}
    for attack in config.attacks:
        s = attack_scores(scores, attack)
        attacks[attack] = leakage(s[member], s[~member], config.n_boot, config.seed)
    strongest = max(attacks, key=lambda a: attacks[a]["auc"])
    fed = target.cfg.mode not in ("local", "central")
    return {
        "run": target.run.name, "mode": target.cfg.mode, "config": config.to_dict(),
        "models": {name: str(folder.relative_to(target.run))
                   for name, (folder, _, _) in target.models.items()},
        "members": {"n": int(member.sum()), "records": "every site's train.csv" if target.cfg.mode
                    != "local" else "each site's own train.csv, for its own model"},
        "nonmembers": {"n": int((~member).sum()),
                       "records": "every site's valid.csv: a random slice of the same site data, "
                                  "never trained on" + (" (the server selects a round on it)" if fed
                                                         else " (selects the epoch kept)")},
        "reference": ({"records": "the split's test.csv (public; holds no member or non-member)",
                       "n": len(target.task.test), "seeds": [config.seed + k for k in
                                                             range(config.references)],
                       "epochs": target.cfg.train.epochs}
                      if "calibrated" in config.attacks else None),
        "attacks": attacks, "strongest": strongest,
    }


def record_in_metrics(run: Path, result: dict) -> None:
    """``privacy.membership_auc``, ``privacy.tpr_at_1pct_fpr`` and ``privacy.membership`` in
    ``RUN/metrics.json`` (replaced atomically; the rest of the file as it was)."""
    path = run / "metrics.json"
    metrics = json.loads(path.read_text())
    best = result["attacks"][result["strongest"]]
    privacy = metrics.get("privacy") if isinstance(metrics.get("privacy"), dict) else {}
    privacy.update({
        "membership_auc": best["auc"], "membership_auc_ci": best["auc_ci"],
        "tpr_at_1pct_fpr": best["tpr_at_fpr"].get("0.01"),
        "membership": {"strongest": result["strongest"], "members": result["members"]["n"],
                       "nonmembers": result["nonmembers"]["n"],
                       **{a: {"auc": r["auc"], "auc_ci": r["auc_ci"], "tpr_at_fpr": r["tpr_at_fpr"],
                              "tpr_at_fpr_ci": r["tpr_at_fpr_ci"]}
                          for a, r in result["attacks"].items()}},
    })
    metrics["privacy"] = privacy
    tmp = run / ".metrics.json.part"
    tmp.write_text(json.dumps(metrics, indent=1) + "\n")
    os.replace(tmp, path)


def write_scores(path: Path, scores: dict) -> None:
    """``scores.csv``: each record's id, model, membership and losses (no sequence, no label)."""
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "model", "member", "loss", "reference_loss"])
        for i in range(len(scores["id"])):
            ref = scores["reference_loss"][i]
            writer.writerow([scores["id"][i], scores["model"][i], int(scores["member"][i]),
                             f"{scores['loss'][i]:.6g}", "" if np.isnan(ref) else f"{ref:.6g}"])


def summary_lines(result: dict) -> list[str]:
    """What ``fedbio attack membership`` prints."""
    lines = [f"members: {result['members']['n']} ({result['members']['records']}); non-members: "
             f"{result['nonmembers']['n']} ({result['nonmembers']['records']})"]
    for attack, r in result["attacks"].items():
        tpr = r["tpr_at_fpr"].get("0.01")
        ci = r["tpr_at_fpr_ci"].get("0.01")
        lines.append(f"{attack:>10}: AUC {r['auc']:.3f} [{r['auc_ci'][0]:.3f}, {r['auc_ci'][1]:.3f}]"
                     + (f"; TPR at 1% FPR {tpr:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if tpr is not None
                        else f"; {r['not_resolved'].get('0.01', '')}"))
    lines.append(f"strongest: {result['strongest']} (0.5 = no leakage measured)")
    return lines
