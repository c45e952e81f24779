"""``fedbio bench train`` at a tiny size: the shape of the results, never the timings."""

from __future__ import annotations

import argparse
import json
import sys

import pytest
import torch
from conftest import positive_finite

from fedbio.bench import train as bench
from fedbio.bench.cli import register
from fedbio.bench.train_measures import Sizes
from fedbio.bench.train_rss import peak_rss

# Tiny models and a handful of sequences: every code path of the benchmark, in seconds.
TINY = Sizes("tiny", pad_seqs=8, pad_seqs_long=8, pad_batch_long=4, pad_rounds=2,
             cache_model="esm2-tiny", cache_crop=32, cache_seqs=8,
             encode_model="esm2-tiny", encode_seqs=4, rss_records=60, rss_epochs=1, family_seqs=8,
             dp_seqs=16)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedbio")
    register(parser.add_subparsers(dest="command"))
    return parser



def test_register_parses_flags():
    args = _parser().parse_args(["bench", "train", "--full", "--threads", "1", "--out", "r.json"])
    assert (args.command, args.bench_command) == ("bench", "train")
    assert args.full and args.threads == 1 and args.out == "r.json"
    assert args.func is bench.cmd_bench_train
    args = _parser().parse_args(["bench", "train"])
    assert not args.full and args.threads is None and args.out is None
    with pytest.raises(SystemExit):
        _parser().parse_args(["bench"])  # the action is required


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_bench_train_cli_tiny(tmp_path, monkeypatch, capsys, restore_threads):
    monkeypatch.setattr(bench, "SMALL", TINY)
    out = tmp_path / "bench.json"
    args = _parser().parse_args(["bench", "train", "--threads", "1", "--out", str(out),
                                 "--workdir", str(tmp_path / "work")])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "measure" in printed and "peak RSS" in printed and "tiny benchmark" in printed

    result = json.loads(out.read_text())
    assert {"size", "threads", "padding", "head_cache", "encode", "peak_rss", "families", "dp_sgd",
            "checks", "stage_seconds", "wall_seconds"} <= set(result)
    assert result["size"] == "tiny" and result["threads"] == 1

    pad = result["padding"]
    assert pad["model"] == "esm2-tiny"
    for key in ("quick_crop", "long_crop"):
        p = pad[key]
        frac = p["padding_fraction"]
        assert 0 <= frac["bucketed"] <= frac["unbucketed"] < 1
        timed = p["timed"]
        assert timed["bucketed"]["padding_fraction"] <= timed["unbucketed"]["padding_fraction"]
        for mode in ("bucketed", "unbucketed"):
            assert p["timed"][mode]["real_tokens"] > 0
            assert positive_finite(p["timed"][mode]["real_tokens_per_s"])
        # both loops see the same sequences
        assert p["timed"]["bucketed"]["real_tokens"] == p["timed"]["unbucketed"]["real_tokens"]
        assert positive_finite(p["speedup"])
    # at 512 residues lengths differ a lot, so bucketing must cut padding; at the quick crop
    # nearly every sequence is cropped to the same length and there is little to cut
    long = pad["long_crop"]
    assert long["max_length"] == 512
    assert long["padding_fraction"]["bucketed"] < long["padding_fraction"]["unbucketed"]

    cache = result["head_cache"]
    for key in ("cache_build_s", "cached_epoch_s", "reencode_epoch_s", "speedup"):
        assert positive_finite(cache[key]), key
    assert cache["seqs"] == TINY.cache_seqs

    enc = result["encode"]
    assert enc["max_length"] == 512 and enc["seqs"] == TINY.encode_seqs
    assert positive_finite(enc["seqs_per_s"]) and positive_finite(enc["residues_per_s"])

    rss = result["peak_rss"]
    assert rss["returncode"] == 0 and positive_finite(rss["peak_rss_gb"])
    assert "--profile quick" in rss["command"]

    rows = result["checks"]
    assert all(set(r) == {"measure", "value", "goal", "ok"} for r in rows)
    assert len(rows) == 11

    dp = result["dp_sgd"]
    for tuning in ("lora", "full"):
        t = dp[tuning]
        assert t["steps"] > 0 and positive_finite(t["plain_s"]) and positive_finite(t["dp_sgd_s"])
        assert t["ratio"] == pytest.approx(t["dp_sgd_s"] / t["plain_s"])
    assert dp["records"] == TINY.dp_seqs and "DP-SGD / plain" in printed

    fam = result["families"]
    for name in ("amplify-tiny", "esm2-tiny"):
        assert fam[name]["real_tokens_per_s"] > 0 and fam[name]["encoder_parameters"] > 100_000
    assert fam["speedup"] == pytest.approx(fam["amplify-tiny"]["real_tokens_per_s"]
                                           / fam["esm2-tiny"]["real_tokens_per_s"])
    assert fam["median_length"] > 200  # whole antibodies, uncropped


def test_peak_rss_counts_the_child_not_this_process(tmp_path):
    big = bytearray(400_000_000)  # this process's RSS must not leak into the child's figure
    big[::4096] = b"1" * len(big[::4096])
    quiet = peak_rss([sys.executable, "-c", "pass"], tmp_path / "quiet.log")
    assert quiet["returncode"] == 0 and quiet["peak_rss_gb"] < 0.15
    del big
    code = "x = bytearray(200_000_000); x[::4096] = b'1' * len(x[::4096])"
    hungry = peak_rss([sys.executable, "-c", code], tmp_path / "hungry.log")
    assert hungry["returncode"] == 0 and 0.2 <= hungry["peak_rss_gb"] < 0.5
    failed = peak_rss([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "bad.log")
    assert failed["returncode"] == 3
