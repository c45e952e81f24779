"""The README as a test: every command of its command-line section, in order, as a user types
them (a shell, the repository's ``data/``, relative ``runs/``), then ``make demo`` and the
``fedbio report`` it suggests. Epochs are capped (``FEDBIO_TEST_MAX_EPOCHS``) so the whole file
takes a few minutes. Commands marked ``# needs: GPU | network | your files`` must stop with one
clean line where that is missing."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

SECTION = "## The command line"


def readme_commands() -> list[tuple[str, str | None]]:
    """``(command, need)`` for each command of the section's first bash block."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION):]
    block = section[section.index("```bash") + len("```bash"):]
    block = block[:block.index("```")]
    joined = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        command, _, comment = line.partition("#")
        need = re.search(r"needs:\s*([\w ]+)", comment)
        out.append((command.strip(), need.group(1).strip() if need else None))
    return out


def _env(tmp_path: Path) -> dict:
    env = {**os.environ, "FEDBIO_PROFILE": "quick", "FEDBIO_TEST_MAX_EPOCHS": "1",
           "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("FEDBIO_WEIGHTS", None)
    return env


def _shell(command: str, cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _met(need: str) -> bool:
    if need.lower() == "gpu":
        import torch

        return torch.cuda.is_available()
    return False  # tests never use the network or a user's own files


def test_the_section_has_the_commands_users_need():
    commands = readme_commands()
    verbs = {shlex.split(c)[1] for c, _ in commands}
    assert {"split", "run", "report", "predict", "bench", "weights", "attack"} <= verbs
    assert {need for _, need in commands if need} == {"GPU", "network", "your files"}
    assert all(c.startswith("fedbio ") for c, _ in commands)


def test_every_readme_command_in_order(tmp_path):
    (tmp_path / "data").symlink_to(ROOT / "data")
    env = _env(tmp_path)
    for command, need in readme_commands():
        done = _shell(command, tmp_path, env)
        said = f"{command}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, said
        if need is None or (_met(need) and done.returncode == 0):
            assert done.returncode == 0, said
            continue
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("fedbio: error: "), said
    runs = tmp_path / "runs"
    assert (runs / "report" / "results.md").is_file() and (runs / "fedavg" / "model").is_dir()
    assert not list(runs.glob("*.running")) and not list(runs.glob("*.lock"))


@pytest.mark.skipif(not (ROOT / "Makefile").is_file(), reason="needs the checkout's Makefile")
def test_make_demo_then_the_report_it_suggests(tmp_path):
    env = _env(tmp_path)
    runs = tmp_path / "runs"
    demo = subprocess.run(["make", "-s", "-C", str(ROOT), "demo", f"RUNS={runs}"], env=env,
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert demo.returncode == 0, demo.stderr[-3000:]
    log = demo.stdout + demo.stderr
    assert len(log.encode()) < 20_000, f"make demo wrote {len(log.encode())} bytes of log"
    assert "Traceback" not in log
    suggested = re.search(r"fedbio report .*", demo.stdout)
    assert suggested, demo.stdout[-2000:]
    report = _shell(suggested.group(0), tmp_path, env)
    assert report.returncode == 0, report.stderr[-3000:]
    out = runs / "demo" / "report"
    assert (out / "results.md").is_file() and list(out.glob("*.png"))
    again = _shell(suggested.group(0), tmp_path, env)          # the report exists now
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert (out / "results.md").is_file()


def test_the_readme_shows_the_package_figures():
    """At least three figures from docs/img/, each one ``make figures`` draws beside its CSV (whose
    numbers tests/reporting/test_figures.py makes again)."""
    from fedbio.reporting.figures import FIGURES

    shown = re.findall(r"!\[[^\]]+\]\(docs/img/(\w+)\.png\)", (ROOT / "README.md").read_text())
    assert len(set(shown)) >= 3, shown
    for name in shown:
        assert name in FIGURES, f"docs/img/{name}.png is not drawn by `make figures`"
        assert (ROOT / "docs" / "img" / f"{name}.png").is_file() and (ROOT / "docs" / "img" / f"{name}.csv").is_file()

