"""Record-level DP-SGD: Opacus's per-record gradients on fedbio's models, training that learns
under noise, epsilon over every step a site takes (recomputed with Opacus here), the last model
kept, nothing released that is not accounted, and the refusals."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fedbio.cli import main
from fedbio.config import DataConfig, ModelConfig, TrainConfig
from fedbio.data.records import read_records
from fedbio.data.tasks import LabelCodec
from fedbio.federation import FedConfig, run_federated
from fedbio.federation.audit import read_audit
from fedbio.privacy.config import PrivacyConfig
from fedbio.privacy.fedavg import sgd_settings
from fedbio.privacy.sgd import RecordPrivacy
from fedbio.training.learner import Learner
from fedbio.training.run import plan
from fedbio.training.trainer import planned_steps

SITES = ["site-1", "site-2", "site-3"]
SETTINGS = sgd_settings(PrivacyConfig(sgd_clip=1.0, sgd_noise=0.5, noise_seed=0).validate())


def opacus_epsilon(z: float, q: float, steps: int, delta: float = 1e-5) -> float:
    """Opacus's RDP accountant stepped once per DP-SGD step, as its PrivacyEngine does."""
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    for _ in range(steps):
        acc.step(noise_multiplier=z, sample_rate=q)
    return acc.get_epsilon(delta)


@pytest.fixture(scope="module")
def records(small_split):
    classes = json.loads((small_split / "classes.json").read_text())
    train = read_records(small_split / "site-1" / "train.csv", kind="class", classes=classes)
    return train, LabelCodec("classification", classes)


def learner(records, name: str, tuning: str, lr: float, epochs: int):
    tcfg = TrainConfig(lr=lr, batch_size=8, epochs=epochs, seed=0, warmup_frac=0.0, threads=1)
    out = Learner.build(ModelConfig(name=name, tuning=tuning), DataConfig(max_length=48), tcfg,
                        records[1], None, progress=False)
    return out, out.inputs(records[0])


def opacus_left_nothing(module: torch.nn.Module) -> bool:
    hooks = any(m._forward_hooks or m._backward_hooks for m in module.modules())
    return not hooks and not any(hasattr(p, "grad_sample") for p in module.parameters())


def test_each_records_gradient_is_its_own_under_padding_and_attention():
    """esm2-tiny, fully tuned: the per-record gradient Opacus computes in a padded batch equals
    the gradient of that record alone (no padding): nothing couples records in a batch."""
    from fedbio.data.batching import pad
    from fedbio.models import build_model, encode

    tokenizer, model = build_model(ModelConfig(name="esm2-tiny", tuning="full"), 3, seed=0, backend="hf")
    for module in model.modules():   # training mode (Opacus records only then), no dropout:
        if isinstance(module, torch.nn.Dropout):   # the two computations must agree exactly
            module.p = 0.0
    seqs, y = ["MKTAYIAKQR", "MSLLTEVETPIRNEWGCRCNDSSD", "MAHHHK"], torch.tensor([0, 2, 1])
    tokens = [np.asarray(encode(tokenizer, s)) for s in seqs]
    ids, mask = pad(tokens, tokenizer.pad_token_id)
    sgd = RecordPrivacy(1.0, 0.0, records=3, batch_size=3, delta=1e-5, planned_steps=1, noise_seed=0)
    params = [p for p in model.parameters() if p.requires_grad]
    with sgd.private(model, torch.optim.SGD(params, lr=0.0)) as (wrapped, _):
        torch.nn.functional.cross_entropy(wrapped(ids, mask), y).backward()
        per_record = [p.grad_sample.clone() for p in params]
    assert opacus_left_nothing(model)
    for i, t in enumerate(tokens):
        model.zero_grad()
        one = torch.from_numpy(t)[None]
        torch.nn.functional.cross_entropy(model(one, torch.ones_like(one)), y[i:i + 1]).backward()
        for p, g in zip(params, per_record, strict=True):
            torch.testing.assert_close(g[i], p.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name, tuning, lr", [("composition", "head", 0.003), ("esm2-tiny", "head", 3e-3),
                                              ("esm2-tiny", "full", 1e-3), ("esm2-tiny", "lora", 3e-3)])
def test_dp_sgd_trains_and_counts_every_step(records, name, tuning, lr):
    """The training loss falls under noise (z 0.5, clip 1); the accountant saw every step;
    Opacus's hooks are gone afterwards, and the last epoch's model is the one kept."""
    epochs = 6 if tuning == "head" else 3
    lrn, data = learner(records, name, tuning, lr, epochs)
    if name == "composition":
        from fedbio.privacy.updates import use_fixed_scaling

        use_fixed_scaling(lrn.model)
    sgd = RecordPrivacy.plan(SETTINGS, len(data), 8, planned_steps(len(data), 8, epochs))
    states = []
    history = lrn.fit(data, data, epochs, dp_sgd=sgd,
                      on_epoch=lambda row: states.append(lrn.trainable_state()))
    losses = [row["train_loss"] for row in history]
    assert losses[-1] < losses[0], losses
    assert sgd.steps == planned_steps(len(data), 8, epochs) == sgd.planned_steps
    assert sgd.epsilon() == pytest.approx(opacus_epsilon(0.5, 8 / len(data), sgd.steps), rel=1e-6)
    assert opacus_left_nothing(lrn.module)
    last = lrn.trainable_state()   # no selection on valid: the last epoch's weights
    assert all(torch.equal(last[k], states[-1][k]) for k in last)


class Counting(RecordPrivacy):
    empty = 0

    def empty_batch(self, optimizer) -> None:
        Counting.empty += 1
        super().empty_batch(optimizer)


def test_an_empty_poisson_batch_still_takes_a_noisy_step(records):
    """Four records, batch 1 (q = 1/4): about a third of the batches are empty; each is a step
    of pure noise, counted by the accountant, as the sampled Gaussian mechanism assumes."""
    lrn, data = learner((records[0][:4], records[1]), "composition", "head", 0.05, 10)
    lrn.train_cfg = replace(lrn.train_cfg, batch_size=1)
    sgd = Counting(1.0, 1.0, records=4, batch_size=1, delta=1e-5, planned_steps=40, noise_seed=3)
    before = lrn.trainable_state()
    lrn.fit(data, None, 10, dp_sgd=sgd)
    assert Counting.empty > 0 and sgd.steps == 40
    assert not torch.equal(before["linear.weight"], lrn.trainable_state()["linear.weight"])


def test_a_federated_dp_sgd_run_accounts_every_step_of_every_site(small_split, tmp_path):
    """The NVFlare simulator: each site's epsilon over all its steps, recomputed with Opacus
    from its record count; the audit sees each round; the sites send weights and nothing else."""
    rounds, out = 2, tmp_path / "sgd"
    cfg = plan(mode="fedavg", model="composition", profile="quick", split=str(small_split), epochs=4)
    cfg = replace(cfg, train=replace(cfg.train, threads=1))
    m = run_federated(cfg, FedConfig(rounds=rounds), out, progress=False,
                      privacy=PrivacyConfig(sgd_clip=1.0, sgd_noise=1.1))
    p, batch = m["privacy"], cfg.train.batch_size
    assert p["mechanism"].startswith("record-level DP-SGD") and "clip" not in p
    handled = [r["handled"] for r in p["releases"]]
    assert all(h.startswith(("accounted", "not sent", "sent, not accounted")) for h in handled)
    sites = p["dp_sgd"]["sites"]
    assert sorted(sites) == SITES and p["dp_sgd"]["epsilon_max"] == max(s["epsilon"] for s in sites.values())
    audit = read_audit(out / "federation" / "audit")
    for site in SITES:
        n = m["n_train"][site]
        steps = rounds * planned_steps(n, batch, 4 / rounds)
        s = sites[site]
        assert (s["steps"], s["sample_rate"], s["noise_multiplier"]) == (steps, batch / n, 1.1)
        assert s["epsilon"] == pytest.approx(opacus_epsilon(1.1, batch / n, steps), rel=1e-6)
        assert s["noise"].startswith("drawn from the OS")
        trains = [e["dp"]["dp_sgd"] for e in audit[site] if e["task"] == "train"]
        assert [t["steps"] for t in trains] == [steps // rounds * (r + 1) for r in range(rounds)]
        assert not [e for e in audit[site] if e["task"] in ("stats", "validate", "stream")]
    history = json.loads((out / "federation" / "server" / "history.json").read_text())
    for row in history["rounds"][1:]:
        for info in row["sites"].values():
            assert info["metrics"] == {} and info["curve"] == [] and info["n_train"] == 1.0
    assert "final_validate" not in history and history["selected_round"] == rounds
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    table = (tmp_path / "report" / "results.csv").read_text()
    assert f'"ε (DP-SGD, max over sites)",,{p["dp_sgd"]["epsilon_max"]:.3g} (δ 1e-05)' in table


def test_a_target_epsilon_is_met_at_every_site(small_split, tmp_path):
    cfg = plan(mode="fedavg", model="composition", profile="quick", split=str(small_split), epochs=2)
    cfg = replace(cfg, train=replace(cfg.train, threads=1))
    m = run_federated(cfg, FedConfig(rounds=2), tmp_path / "eps", progress=False, engine="loop",
                      privacy=PrivacyConfig(sgd_clip=1.0, sgd_epsilon=5.0, clip=10.0, noise=0.5))
    p = m["privacy"]
    assert p["clip"] == 10.0 and "DP-FedAvg" in p["mechanism"] and "DP-SGD" in p["mechanism"]
    for s in p["dp_sgd"]["sites"].values():
        assert 0.98 * 5.0 <= s["epsilon"] <= 5.0 and s["target_epsilon"] == 5.0


@pytest.mark.parametrize("mode", ["local", "central"])
def test_local_and_central_runs_train_with_dp_sgd(small_split, tmp_path, capsys, mode):
    out = tmp_path / mode
    code = main(["run", "--mode", mode, "--model", "composition", "--profile", "quick", "--split",
                 str(small_split), "--epochs", "2", "--dp-sgd-clip", "1", "--dp-sgd-noise", "1",
                 "--quiet", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "record-level DP-SGD" in printed
    p = json.loads((out / "metrics.json").read_text())["privacy"]
    models = ["central"] if mode == "central" else SITES
    assert sorted(p["dp_sgd"]["sites"]) == models and "rounds" not in p
    assert p["delivered"].startswith("the last epoch's model")
    config = json.loads((out / "config.json").read_text())
    assert config["mode"] == mode


@pytest.mark.parametrize("args, words", [
    (["--mode", "fedprox", "--dp-sgd-clip", "1", "--dp-sgd-noise", "1"], "proximal term"),
    (["--dp-sgd-noise", "1"], "applies only to DP-SGD runs"),
    (["--dp-sgd-clip", "1"], "neither given"),
    (["--dp-sgd-clip", "1", "--dp-sgd-noise", "1", "--dp-sgd-epsilon", "3"], "both given"),
    (["--dp-sgd-clip", "0", "--dp-sgd-noise", "1"], "--dp-sgd-clip is 0"),
    (["--dp-sgd-clip", "1", "--dp-sgd-noise", "nan"], "--dp-sgd-noise is nan"),
    (["--dp-sgd-clip", "1", "--dp-sgd-epsilon", "-1"], "--dp-sgd-epsilon is -1"),
    (["--dp-sgd-clip", "1", "--dp-sgd-epsilon", "0.0001"], "out of reach"),
    (["--dp-sgd-clip", "1", "--dp-sgd-noise", "1", "--dp-delta", "2"], "--dp-delta is 2"),
    (["--dp-sgd-clip", "1", "--dp-sgd-noise", "1", "--dp-delta", "0.9"], "is not below 1 / 128"),
    (["--mode", "local", "--dp-sgd-clip", "1", "--dp-sgd-noise", "1", "--dp-delta", "0.1"],
     "one over site-1's training records"),
    (["--mode", "fedavg", "--dp-clip", "1", "--dp-noise", "1", "--dp-delta", "0.5"],
     "is not below 1 / 3, one over the number of sites"),
    (["--mode", "fedavg", "--rounds", "2", "--dp-sgd-clip", "1", "--dp-sgd-epsilon", "0.001"],
     "site-1: --dp-sgd-epsilon 0.001 over"),
    (["--dp-clip", "1", "--dp-noise", "1"], "applies only to federated runs"),
    (["--dp-delta", "1e-6"], "applies only to DP runs"),
    (["--task", "regression", "--dp-sgd-clip", "1", "--dp-sgd-noise", "1"], "--dp-sgd-* with a regression"),
])
def test_dp_sgd_options_that_cannot_work_are_refused(small_split, tmp_path, capsys, args, words):
    out = tmp_path / "refused"
    mode = [] if "--mode" in args else ["--mode", "central"]
    code = main(["run", *mode, "--model", "composition", "--profile", "quick", "--split",
                 str(small_split), *args, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and words in err and err.startswith("fedbio: error:") and len(err.splitlines()) == 1
    assert not out.exists() and not Path(f"{out}.running").exists() and not Path(f"{out}.failed").exists()


def test_secure_mode_says_what_it_needs(small_split, tmp_path, capsys):
    pytest.importorskip("opacus")
    try:
        import torchcsprng  # noqa: F401
        pytest.skip("torchcsprng is installed: secure_mode would run")
    except ImportError:
        pass
    out = tmp_path / "secure"
    code = main(["run", "--mode", "central", "--model", "composition", "--profile", "quick",
                 "--split", str(small_split), "--dp-sgd-clip", "1", "--dp-sgd-noise", "1",
                 "--dp-sgd-secure", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "torchcsprng" in err and len(err.splitlines()) == 1 and not out.exists()


def test_a_restarted_site_counts_the_steps_it_took_before(tmp_path):
    first = RecordPrivacy.plan(SETTINGS, records=50, batch_size=10, steps=20)
    for _ in range(12):
        first._count(None)
    path = tmp_path / "dp_sgd.json"
    path.write_text(json.dumps(first.record()))
    again = RecordPrivacy.plan(SETTINGS, records=50, batch_size=10, steps=20)
    again.resume(path)
    again.resume(tmp_path / "absent.json")   # nothing earlier: nothing to add
    assert again.steps == 12 and again.epsilon() == pytest.approx(first.epsilon(), rel=1e-12)
