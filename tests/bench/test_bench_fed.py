"""``fedbio bench fed`` at a tiny size: the shape of the results, never the timings."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from conftest import positive_finite

from fedbio.bench import fed as bench_fed
from fedbio.bench import fed_setup
from fedbio.bench.fed import register
from fedbio.bench.fed_setup import FedSizes
from fedbio.privacy.accounting import fedavg_epsilon

# A sliver of the default split and a tiny checkpoint: every code path (four federated runs,
# three of them in the NVFlare simulator), in about a minute.
TINY = FedSizes("tiny", sim_fraction=0.05, floor_model="esm2-tiny", floor_fraction=0.01,
                floor_crop=32, floor_engine="loop", floor_passes=1, fixed_runs=2)


def _parser(register_bench=None) -> argparse.ArgumentParser:
    """``fedbio`` with a ``bench`` command whose actions include ``fed``."""
    parser = argparse.ArgumentParser(prog="fedbio")
    sub = parser.add_subparsers(dest="command")
    if register_bench is not None:
        register_bench(sub)
    else:
        actions = sub.add_parser("bench").add_subparsers(dest="bench_command", required=True)
        register(actions)
    return parser



def test_register_parses_flags():
    args = _parser().parse_args(["bench", "fed", "--full", "--threads", "1", "--out", "f.json"])
    assert (args.command, args.bench_command) == ("bench", "fed")
    assert args.full and args.threads == 1 and args.out == "f.json"
    assert args.func is bench_fed.cmd_bench_fed
    args = _parser().parse_args(["bench", "fed"])
    assert not args.full and args.threads is None and args.out is None


def test_bench_command_offers_fed():
    from fedbio.bench.cli import register as register_bench

    try:
        args = _parser(register_bench).parse_args(["bench", "fed"])
    except SystemExit:
        pytest.skip("fedbio.bench.train.register does not add the fed action yet")
    assert args.func is bench_fed.cmd_bench_fed


def test_split_subset_keeps_the_default_split_proportions(tmp_path):
    from fedbio.data.tasks import load_task

    whole = load_task(fed_setup.split_subset(tmp_path / "all", 1.0))
    part = load_task(fed_setup.split_subset(tmp_path / "part", 0.1))
    assert list(part.sites) == list(whole.sites) == ["site-1", "site-2", "site-3"]
    for site, parts in whole.sites.items():
        for key in ("train", "valid"):
            assert len(part.sites[site][key]) == max(1, round(0.1 * len(parts[key])))
    assert len(part.test) == round(0.1 * len(whole.test))
    assert len(part.test_hard) == round(0.1 * len(whole.test_hard))
    ids = {r.id for r in whole.test}
    assert all(r.id in ids for r in part.test)


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_bench_fed_cli_tiny(tmp_path, monkeypatch, capsys, restore_threads):
    import fedbio.training.learner

    embed = fedbio.training.learner.embed
    monkeypatch.setattr(bench_fed, "SMALL", TINY)
    out = tmp_path / "bench-fed.json"
    args = _parser().parse_args(["bench", "fed", "--threads", "1", "--out", str(out),
                                 "--workdir", str(tmp_path / "work")])
    assert args.func(args) == 0
    assert fedbio.training.learner.embed is embed  # the encode counter is gone again
    printed = capsys.readouterr().out
    assert "measure" in printed and "tiny federation benchmark" in printed

    result = json.loads(out.read_text())
    assert {"size", "sizes", "threads", "seed", "torch", "nvflare", "simulator", "bytes",
            "head_floor", "privacy", "checks", "stage_seconds", "wall_seconds"} <= set(result)
    assert result["size"] == "tiny" and result["threads"] == 1

    sim = result["simulator"]
    assert sim["split"] == "5% of the default split" and len(sim["n_train"]) == 3
    assert sim["tiny"]["model"] == "esm2-tiny" and sim["tiny"]["tuning"] == "full"
    for key in ("tiny", "composition"):
        for field in ("loop_s", "nvflare_s", "ratio"):
            assert positive_finite(sim[key][field]), (key, field)

    b = result["bytes"]
    assert b["classes"] == 10
    assert 0 < b["head"]["bytes"] < b["lora"]["bytes"] < b["full"]["bytes"]
    assert b["full"]["bytes"] >= bench_fed.BYTES_GOAL * b["head"]["bytes"]
    assert b["full_over_head"] >= bench_fed.BYTES_GOAL
    assert b["head"]["bytes"] == 4 * b["head"]["values"]  # float32 on the wire

    f = result["head_floor"]
    assert f["engine"] == "loop" and f["max_length"] == TINY.floor_crop
    for field in ("floor_s", "run_s", "ratio", "encode_passes"):
        assert positive_finite(f[field]), field
    assert f["floor_records"] == f["records"]["train_valid"] + f["records"]["common_test"]
    encoded = dict(f["encoded_records"])
    total = encoded.pop("total")
    assert {"site-1", "site-2", "site-3"} <= set(encoded)  # each site encodes its own records
    assert total == sum(encoded.values()) >= f["floor_records"]  # each record at least once
    assert f["encode_passes"] == pytest.approx(total / f["floor_records"])
    assert f["common_test_encoded"] >= 1
    assert set(f["common_test_encoded_by"]) <= set(encoded)

    comp = sim["composition"]
    assert positive_finite(comp["own_exit_s"])
    assert len(comp["nvflare_runs_s"]) == 2 and comp["nvflare_s"] == pytest.approx(max(comp["nvflare_runs_s"]), abs=0.01)
    ended = sum(sim["tiny"]["phases"]["cpu_seconds"].values())  # the simulator's processes,
    assert ended > 1 and sim["tiny"]["nvflare_cpu_s"] >= ended     # ended, count in its CPU
    assert set(comp["phases"]) == {"before_after", "start_up", "federation", "shutdown", "cpu_seconds"}
    assert set(comp["phases"]["cpu_seconds"]) == {"simulator", "site-1", "site-2", "site-3"}
    assert comp["phases"]["shutdown"] < 10 and comp["own_exit_s"] > comp["nvflare_s"] - 5
    d = result["privacy"]   # DP-FedAvg's round vs plain FedAvg's, measured in the same run
    assert d["engine"] == "loop" and positive_finite(d["ratio"]) and positive_finite(d["plain_round_s"])
    assert d["epsilon"] == pytest.approx(fedavg_epsilon(1.0, d["rounds"], 1e-5))
    assert any(r["measure"].startswith("DP-FedAvg / plain FedAvg") for r in result["checks"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench-fed.json"]  # the work is gone

    rows = result["checks"]
    assert len(rows) == 7
    assert all(set(r) == {"measure", "value", "goal", "ok"} for r in rows)
    assert rows[0]["ok"] is None  # the simulator goal is about the default split (--full)
    assert rows[2]["ok"] is True  # head vs full bytes
