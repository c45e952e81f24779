"""The README's figures (fedbio.reporting.figures): made again here from fresh runs, their numbers
equal the committed CSVs beside the PNGs in docs/img/."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from conftest import ROOT

from fedbio.errors import FedbioError
from fedbio.reporting.figures import FIGURES, main, make_figures

IMG = ROOT / "docs" / "img"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Every figure's numbers, from runs made here (the same runs ``make figures`` makes)."""
    root = tmp_path_factory.mktemp("figure-runs")
    return {name: data(root) for name, (data, _) in FIGURES.items()}


@pytest.mark.parametrize("name", list(FIGURES))
def test_a_committed_figure_shows_what_the_package_makes(made, name):
    committed = pd.read_csv(IMG / f"{name}.csv")
    fresh = pd.read_csv(io.StringIO(made[name].to_csv(index=False)))   # as written to disk
    pd.testing.assert_frame_equal(fresh, committed, check_exact=False, rtol=0, atol=1e-9)
    png = (IMG / f"{name}.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) < 200_000


def test_the_figures_are_drawn_from_their_numbers(made, tmp_path, monkeypatch):
    """``make_figures`` writes NAME.png and NAME.csv, refuses to replace them without overwrite."""
    for name, (_data, draw) in FIGURES.items():
        monkeypatch.setitem(FIGURES, name, (lambda root, _df=made[name]: _df, draw))
    written = make_figures(tmp_path / "img", tmp_path / "runs", say=lambda *a: None)
    assert sorted(p.name for p in written) == sorted(f"{n}.{e}" for n in FIGURES for e in ("png", "csv"))
    before = {p: p.stat().st_mtime_ns for p in written}
    with pytest.raises(FedbioError, match="exists; add --overwrite"):
        make_figures(tmp_path / "img", tmp_path / "runs", say=lambda *a: None)
    assert before == {p: p.stat().st_mtime_ns for p in written}
    make_figures(tmp_path / "img", tmp_path / "runs", ["rounds"], overwrite=True, say=lambda *a: None)


def test_an_existing_figure_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "label_mix.png").write_bytes(b"a user's picture")
    assert main([str(tmp_path), "--only", "label_mix", "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedbio: error: ") and err.count("\n") == 1
    assert (tmp_path / "label_mix.png").read_bytes() == b"a user's picture"
    assert not (tmp_path / "label_mix.csv").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv", [["OUT_IS_A_FILE"], ["OUT_IS_A_FILE/sub"], ["img", "--only", "bogus"], []])
def test_bad_arguments_are_one_line(tmp_path, capsys, monkeypatch, argv):
    (tmp_path / "OUT_IS_A_FILE").write_text("a user's file")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        raise SystemExit(main([*argv, "--runs", "runs"] if argv else []))
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("fedbio: error: ") and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["OUT_IS_A_FILE"]
    assert (tmp_path / "OUT_IS_A_FILE").read_text() == "a user's file"


def test_an_unwritable_out_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("fedbio.reporting.figures.os.access", lambda path, mode: False)
    assert main([str(tmp_path / "img"), "--only", "label_mix", "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedbio: error: ") and "cannot be written" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists() and not (tmp_path / "img").exists()

