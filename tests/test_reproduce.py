"""`make reproduce-tableN`: input checks before any work, run folders, papermill parameters, end to end."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from sam3dlib.cli import main as cli_main
from sam3dlib.study import report
from sam3dlib.study.inputs import ENCODER_WEIGHTS_URL, MissingInputError, check_inputs
from sam3dlib.study.reproduce import MissingDependencyError, notebooks_dir, render_html, reproduce_table
from sam3dlib.study.run_folders import select_run_dir
from sam3dlib.utils.finished import FINISHED, mark_finished

REPO = Path(__file__).resolve().parents[1]

# table, datasets named in the message, dataset source named
MISSING_DATA = [
    (1, ["synapse"], "syn3193805"),
    (2, ["acdc"], "creatis.insa-lyon.fr/Challenge/acdc"),
    (3, ["lung"], "medicaldecathlon.com"),
    (4, ["brats"], "Task01_BrainTumour"),
    (5, ["acdc", "synapse"], "syn3193805"),
]


@pytest.mark.parametrize("table, datasets, source", MISSING_DATA)
def test_missing_data_message(tmp_path, table, datasets, source):
    with pytest.raises(MissingInputError) as err:
        check_inputs(table, "smoke", tmp_path / "data", None)
    msg = str(err.value)
    for ds in datasets:
        assert f"missing prepared dataset folder {tmp_path / 'data' / ds}" in msg
        assert f"sam3d prepare {ds} --raw" in msg
    assert source in msg
    assert "weights" not in msg  # smoke uses the stand-in encoder


def test_missing_encoder_weights_message(tmp_path):
    ckpt = tmp_path / "checkpoints" / "sam_vit_b_01ec64.pth"
    with pytest.raises(MissingInputError) as err:
        check_inputs(1, "paper", None, ckpt)
    assert f"missing encoder weights file {ckpt}" in str(err.value) and ENCODER_WEIGHTS_URL in str(err.value)
    check_inputs(1, "smoke", None, ckpt)  # not needed by smoke


def test_reproduce_stops_before_any_work(tmp_path):
    out = tmp_path / "results" / "table2"
    with pytest.raises(MissingInputError, match="acdc"):
        reproduce_table(2, profile="quick", data_dir=tmp_path / "data", encoder_weights=tmp_path / "none.pth",
                        out=out)
    assert not out.exists()
    code = cli_main(["reproduce", "2", "--profile", "quick", "--data-dir", str(tmp_path / "data"),
                     "--encoder-weights", str(tmp_path / "none.pth"), "--out", str(out)])
    assert code == 2 and not out.exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"profile": "fast"}, "'profile': unknown value 'fast'"),
    ({"seeds": "0 x"}, "'seeds' must be integers"),
    ({"n": 7}, "unknown paper table"),
])
def test_reproduce_bad_arguments(tmp_path, kwargs, message):
    args = {"n": 1, "profile": "smoke", "data_dir": None, "out": tmp_path / "o", **kwargs}
    with pytest.raises(ValueError, match=message):
        reproduce_table(**args)


def test_run_dirs_never_overwrite_finished_runs(tmp_path):
    out = tmp_path / "table1"
    first = select_run_dir(out, "smoke-seeds0-abc")
    assert first == out / "runs" / "smoke-seeds0-abc"
    first.mkdir(parents=True)
    assert select_run_dir(out, "smoke-seeds0-abc") == first  # unfinished: redone in place
    mark_finished(first, {})
    with pytest.raises(FileExistsError, match="already holds a finished run.*--force"):
        select_run_dir(out, "smoke-seeds0-abc")
    assert select_run_dir(out, "smoke-seeds0-abc", force=True) == out / "runs" / "smoke-seeds0-abc-2"


def test_executed_notebooks_never_go_into_notebooks(tmp_path):
    with pytest.raises(ValueError, match="never go into notebooks/"):
        reproduce_table(1, profile="smoke", data_dir=None, out=notebooks_dir() / "out")


def test_html_report_is_standalone(tmp_path):
    """nbconvert renders an executed notebook into one page with its outputs (figures inline)."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    cell = new_code_cell("display(fig)", outputs=[new_output("display_data", data={"image/png": png})])
    nb = new_notebook(cells=[new_markdown_cell("# Table 1: Synapse"), cell])
    nbformat.write(nb, tmp_path / "t.ipynb")
    page = render_html(tmp_path / "t.ipynb", tmp_path / "table1_report.html").read_text()
    assert "Table 1: Synapse" in page and f"data:image/png;base64,{png}" in page


def test_missing_study_packages_are_named(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nbconvert" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"needs nbconvert .*sam3dlib\[study\]"):
        reproduce_table(1, profile="smoke", data_dir=None, out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_papermill_wrong_parameter_type(tmp_path):
    """A parameter of the wrong type stops the notebook in its first cell with a clear message."""
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(notebooks_dir() / "01_synapse_table1.ipynb"), str(tmp_path / "nb.ipynb"),
                            parameters={"seed": "abc", "out_dir": str(tmp_path)}, progress_bar=False,
                            kernel_name="python3", cwd=str(tmp_path))
    assert "ParameterError" in str(err.value) and "'seed' must be an integer; got 'abc'" in str(err.value)
    assert not (tmp_path / "experiments").exists()


@pytest.mark.slow
def test_make_reproduce_table1_smoke_end_to_end(tmp_path):
    """A user without data in a fresh folder: ``make reproduce-table1 PROFILE=smoke`` prints how to make
    phantom data; the exact printed commands, then the same make command (``SEEDS="0 1"``) reproduce
    the table; a second time it is refused, naming ``FORCE=1``."""
    import re

    work = tmp_path  # relative paths everywhere, as typed by the user (the notebook runs elsewhere)
    before = sorted(p.name for p in notebooks_dir().iterdir())
    venv = REPO / ".venv"
    cmd = ["make", "-s", "-f", str(REPO / "Makefile"), "-o", str(venv / ".installed"), f"VENV={venv}",
           "reproduce-table1", "PROFILE=smoke", "SEEDS=0 1"]
    env = {**os.environ, "MPLBACKEND": "agg", "PYTHONPATH": str(REPO), "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    first = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env, timeout=120)
    assert first.returncode != 0 and "missing prepared dataset folder data/synapse" in first.stderr, first.stderr[-2000:]
    printed = re.search(r"without the data: (sam3d phantom .*?);", first.stderr).group(1)
    assert printed == ("sam3d phantom synapse --size tiny --out phantoms/synapse && "
                       "sam3d prepare synapse --raw phantoms/synapse --out data/synapse")
    route = subprocess.run(["bash", "-c", printed], cwd=work, capture_output=True, text=True, env=env, timeout=300)
    assert route.returncode == 0, route.stderr[-2000:]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    progress = proc.stdout + proc.stderr
    assert re.search(r"table1_synapse seed 1: epoch 2/2, loss \d\.\d{4}.*ETA", progress), progress[-2000:]
    assert "test cases" in progress  # prediction and scoring
    latest = work / "results" / "table1" / "latest"
    run = latest.resolve()
    assert (run / "01_synapse_table1.ipynb").is_file() and (run / FINISHED).is_file()
    table = pd.read_csv(run / "table1.csv", dtype={"table": str})
    assert list(table.columns) == report.ALL_COLUMNS
    assert "SAM3D" in set(table["method"]) and "UNETR++" in set(table["method"])  # paper rows
    ours = table[table["method"] == "SAM3D (this run)"]
    assert set(ours["data"]) == {"phantom"} and set(ours["encoder_weights"]) == {"random init"}
    assert set(ours["profile"]) == {"smoke"} and set(ours["seeds"].astype(str)) == {"0 1"}
    assert (ours["n_seeds"] == 2).all() and ours["sd"].notna().all()
    md = (run / "table1.md").read_text()
    assert "STAND-IN RUN" in md and "±" in md and "difference" in md
    assert {"dsc_bars.png", "per_case_dsc.png", "params_vs_dsc.png", "training_curves.png", "overlays.png"} <= {
        p.name for p in (run / "figures").iterdir()}
    report_html = (run / "table1_report.html").read_text()
    assert "STAND-IN RUN" in report_html and "data:image/png;base64," in report_html
    assert "Run information" in report_html and "run_table(" not in report_html  # a results page: no code
    per_case = pd.read_csv(run / "per_case.csv")
    assert {"case_id", "region", "metric", "value", "seed"} <= set(per_case.columns)
    assert json.loads((run / FINISHED).read_text())["profile"] == "smoke"
    assert sorted(p.name for p in notebooks_dir().iterdir()) == before  # nothing written into notebooks/
    again = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode != 0 and "already holds a finished run" in again.stderr and "FORCE=1" in again.stderr
