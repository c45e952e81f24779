"""The command line's one error path: every bad option or input is one line, ``fedbio: error: …``,
exit 2, checked before any banner or work, and nothing is written. Unexpected errors are one
line too (exit 1), with the traceback behind ``--debug``."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT, SCL

from fedbio.cli import main

RUN = ["run", "--model", "composition"]
# (name, arguments, words the one error line must contain). Run options first: each was a
# traceback (ZeroDivisionError, numpy's seed error, …) or silently ran nonsense in the last release.
CASES = [
    ("seed-negative", [*RUN, "--seed", "-5"], "--seed"),
    ("seed-huge", [*RUN, "--seed", str(2**40)], "--seed"),
    ("rounds-zero", [*RUN, "--mode", "fedavg", "--rounds", "0"], "--rounds"),
    ("rounds-negative", [*RUN, "--mode", "fedavg", "--rounds", "-2"], "--rounds"),
    ("epochs-nan", [*RUN, "--epochs", "nan"], "--epochs"),
    ("epochs-negative", [*RUN, "--epochs", "-1"], "--epochs"),
    ("epochs-zero", [*RUN, "--epochs", "0"], "--epochs"),
    ("epochs-inf", [*RUN, "--epochs", "inf"], "--epochs"),
    ("epochs-word", [*RUN, "--epochs", "many"], "--epochs"),
    ("mu-nan", [*RUN, "--mode", "fedprox", "--mu", "nan"], "--mu"),
    ("mu-inf", [*RUN, "--mode", "fedprox", "--mu", "inf"], "--mu"),
    ("mu-negative", [*RUN, "--mode", "fedprox", "--mu", "-0.1"], "--mu"),
    ("server-lr-nan", [*RUN, "--mode", "fedopt", "--server-lr", "nan"], "--server-lr"),
    ("server-lr-negative", [*RUN, "--mode", "fedopt", "--server-lr", "-1"], "--server-lr"),
    ("server-lr-zero", [*RUN, "--mode", "fedopt", "--server-lr", "0"], "--server-lr"),
    ("min-sites-too-many", [*RUN, "--mode", "fedavg", "--min-sites", "9"], "--min-sites"),
    ("min-sites-negative", [*RUN, "--mode", "fedavg", "--min-sites", "-1"], "--min-sites"),
    ("unknown-task", ["run", "--task", "folding"], "--task"),
    ("unknown-mode", ["run", "--mode", "gossip"], "--mode"),
    ("unknown-profile", ["run", "--profile", "turbo"], "profile"),
    ("missing-model", ["run", "--model", "path/to/esm2_checkpoint"], "--model"),
    ("model-is-a-file", ["run", "--model", str(SCL)], "--model"),
    ("missing-split", [*RUN, "--split", "no/such/split"], "--split"),
    ("no-gpu", [*RUN, "--device", "cuda"], "cuda"),
    ("bf16-on-cpu", [*RUN, "--device", "cpu", "--precision", "bf16-mixed"], "bf16"),
    ("private-heads-composition", ["run", "--task", "antibody", "--model", "composition", "--mode",
                                   "fedavg"], "private heads"),
    ("private-heads-frozen", ["run", "--task", "antibody", "--tuning", "head", "--mode", "fedavg"],
     "nothing is left to federate"),
    # options that would do nothing in the run were accepted silently (some even recorded)
    ("rounds-not-federated", [*RUN, "--rounds", "3"], "--rounds applies only to federated runs"),
    ("mu-not-fedprox", [*RUN, "--mode", "fedavg", "--mu", "0.5"], "--mu applies only to --mode fedprox"),
    ("server-lr-not-fedopt", [*RUN, "--mode", "fedavg", "--server-lr", "0.1"], "--server-lr"),
    ("min-sites-local", [*RUN, "--mode", "local", "--min-sites", "2"], "--min-sites"),
    ("setup-not-antibody", [*RUN, "--setup", "alltasks"], "--setup applies only to --task antibody"),
    ("tuning-composition", [*RUN, "--tuning", "lora"], "--tuning applies only to encoder models"),
    ("shared-heads-scl", [*RUN, "--mode", "fedavg", "--shared-heads"], "--shared-heads"),
    ("bionemo-here", [*RUN, "--backend", "bionemo"], "bionemo"),
    ("fed-out-with-a-space", [*RUN, "--mode", "fedavg", "--out", "my runs/R"], "spaces"),
    # a quote, $( ) and backticks in a federated --out: NVFlare's workers never started (60 s)
    ("fed-out-with-shell-characters", [*RUN, "--mode", "fedavg", "--out", "runs/q'\"$(id)`x`"],
     "shell characters"),
    # DP options: 0 used to turn DP off without a word; a tiny z failed after the whole run;
    # a huge clip overflowed the noise after a round
    ("dp-clip-zero", [*RUN, "--mode", "fedavg", "--dp-clip", "0"], "--dp-clip is 0.0; give"),
    ("dp-clip-zero-site", [*RUN, "--mode", "fedavg", "--dp-clip", "-0", "--dp-where", "site"],
     "--dp-clip is -0.0; give"),
    ("dp-clip-huge", [*RUN, "--mode", "fedavg", "--dp-clip", "1e300", "--dp-noise", "1"], "at most"),
    ("dp-noise-huge", [*RUN, "--mode", "fedavg", "--dp-clip", "1", "--dp-noise", "1e300"], "--dp-noise is"),
    ("dp-noise-tiny", [*RUN, "--mode", "fedavg", "--dp-clip", "1", "--dp-noise", "1e-300"],
     "cannot bound epsilon"),
    ("dp-neither", [*RUN, "--mode", "fedavg", "--dp-clip", "1"], "neither given; give one"),
    ("dp-epsilon-zero", [*RUN, "--mode", "fedavg", "--dp-clip", "1", "--dp-epsilon", "0"], "e.g. 8"),
    ("dp-delta-one", [*RUN, "--mode", "fedavg", "--dp-clip", "1", "--dp-noise", "1", "--dp-delta", "1"],
     "e.g. 1e-5"),
    ("dp-central", [*RUN, "--dp-clip", "1", "--dp-noise", "1"], "--dp-clip applies only to federated"),
    ("split-seed-negative", ["split", "--fasta", str(SCL), "--seed", "-1"], "--seed"),
    ("split-alpha-inf", ["split", "--fasta", str(SCL), "--alpha", "inf"], "--alpha"),
    ("split-alpha-nan", ["split", "--fasta", str(SCL), "--alpha", "nan"], "--alpha"),
    ("split-no-sites", ["split", "--fasta", str(SCL), "--sites", "0"], "--sites"),
    ("split-missing-fasta", ["split", "--fasta", "no/such.fasta"], "no/such.fasta"),
    ("split-folder-as-fasta", ["split", "--fasta", str(ROOT / "data")], "data"),
]


@pytest.mark.parametrize("args, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_option_is_one_line_before_any_work(tmp_path, monkeypatch, capsys, args, words):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert main([*args, *([] if "--out" in args else ["--out", str(out)])]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedbio: error: "), captured.err
    assert words in lines[0]
    assert "Traceback" not in captured.err
    assert captured.out == ""                               # no banner before the check
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, not even OUT.lock


def test_argument_errors_are_one_line_too(capsys):
    assert main_exit(["run", "--rounds", "x", "--out", "o"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fedbio: error: fedbio run: argument --rounds")


def main_exit(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as stop:
        return int(stop.code)


def test_an_unexpected_error_is_one_line_and_debug_shows_it(tmp_path, monkeypatch, capsys):
    import fedbio.data.split

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(fedbio.data.split, "make_split", broken)
    assert main(["split", "--fasta", str(SCL), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["fedbio: error: unexpected ZeroDivisionError: a bug; run with --debug for the traceback"]
    with pytest.raises(ZeroDivisionError):
        main(["split", "--fasta", str(SCL), "--out", str(tmp_path / "o"), "--debug"])


def test_the_hook_probes_end_in_one_clean_line(tmp_path):
    """The inputs a reviewer tries first, through the real entry point."""
    noseq = tmp_path / "noseq.fasta"
    noseq.write_text(">P1 TARGET=Nucleus SET=train VALIDATION=False\nMKVL\n"
                     ">P2 TARGET=Nucleus SET=test VALIDATION=False\n")
    probes = [["split", "--fasta", str(noseq), "--out", str(tmp_path / "o1")],
              ["split", "--fasta", str(tmp_path), "--out", str(tmp_path / "o2")],
              ["run", "--mode", "fedavg", "--model", "composition", "--rounds", "0", "--out", str(tmp_path / "o3")],
              ["run", "--mode", "central", "--model", "composition", "--epochs", "nan", "--out", str(tmp_path / "o4")],
              ["report", str(tmp_path), "--out", str(tmp_path / "o5")],
              ["predict", "--model", str(tmp_path), "--fasta", str(noseq), "--out", str(tmp_path / "o6.csv")]]
    for args in probes:
        done = subprocess.run([sys.executable, "-m", "fedbio", *args], capture_output=True, text=True,
                              timeout=120)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, (args, done.stderr)
        assert lines[0].startswith("fedbio: error: ") and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noseq.fasta"]


def test_a_run_or_model_folder_is_not_a_checkpoint_to_fine_tune(tmp_path, capsys):
    run = tmp_path / "R"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "metrics.json").write_text("{}")
    assert main(["run", "--model", str(run), "--out", str(tmp_path / "out")]) == 2
    assert "is a fedbio run or model folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["R"]


def test_predict_points_at_a_local_runs_site_models(tmp_path, capsys):
    for site in ("site-1", "site-2"):
        (tmp_path / "R" / site / "model").mkdir(parents=True)
        (tmp_path / "R" / site / "model" / "fedbio_model.json").write_text("{}")
    (tmp_path / "R" / "metrics.json").write_text("{}")
    assert main(["predict", "--model", str(tmp_path / "R"), "--fasta", str(SCL), "--out",
                 str(tmp_path / "p.csv")]) == 2
    assert f"give one of them, e.g. {tmp_path / 'R' / 'site-1' / 'model'}" in capsys.readouterr().err


def test_the_command_line_starts_without_torch_or_nvflare():
    """``fedbio --help``, and every usage error, stay instant: building the parser imports
    neither torch nor NVFlare (a second command racing for the same --out relies on it too)."""
    import subprocess
    import sys

    code = ("import sys, fedbio.cli; fedbio.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'nvflare', 'opacus', 'tenseal') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
