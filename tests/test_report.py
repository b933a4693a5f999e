"""Report module: paper rows, our rows from result files, differences, seeds, rendering, figures."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sam3dlib.data.specs import get_spec
from sam3dlib.study import report
from sam3dlib.study import report_figures as rf
from sam3dlib.study.notebook_params import NotebookParams, ParameterError, from_namespace

STAND_IN = report.RunConditions("vit_tiny", "random init", "phantom", "smoke", "paper", (0,))
REAL = report.RunConditions("vit_b", "sam_vit_b_01ec64.pth (sha256 01ec64d29a2f)", "synapse", "paper", "paper", (0, 1, 2))


def summary_csv(tmp_path, dataset: str, dsc: float, hd: float = 5.0, name: str = "summary.csv"):
    """A hand-written ``summary.csv`` as ``metrics.aggregate`` writes it."""
    spec = get_spec(dataset)
    regions = [*spec.regions, "average"]
    rows = [{"region": r, "metric": m, "mean": dsc if m == "DSC" else hd, "n_cases": 3, "n_nan": 0}
            for m in ("DSC", "HD95") for r in regions]
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# table, dataset, methods in the paper's table, our SAM3D value
PAPER_CASES = [
    ("1", "synapse", 13, ("SAM3D", "DSC", "average", 79.56)),
    ("2", "acdc", 7, ("SAM3D", "DSC", "MYO", 87.12)),
    ("3", "lung", 6, ("SAM3D", "DSC", "average", 71.42)),
    ("4", "brats", 5, ("SAM3D", "HD95", "average", 8.72)),
    ("5a", "acdc", 2, ("SAM3D w/o skip connection", "DSC", "RV", 88.46)),
    ("5b", "synapse", 2, ("SAM3D w skip connection", "HD95", "average", 17.87)),
]


@pytest.mark.parametrize("table, dataset, n_methods, probe", PAPER_CASES)
def test_paper_rows(table, dataset, n_methods, probe):
    rows = report.paper_rows(table)
    assert set(rows["dataset"]) == {dataset}
    assert rows["method"].nunique() == n_methods
    assert (rows["source"] == report.PAPER_SOURCE).all()
    method, metric, region, value = probe
    hit = rows[(rows["method"] == method) & (rows["metric"] == metric) & (rows["region"] == region)]
    assert hit["value"].tolist() == [value]


def test_paper_rows_table5_and_errors():
    assert set(report.paper_rows(5)["table"]) == {"5a", "5b"}
    assert set(report.paper_rows(5, dataset="acdc")["table"]) == {"5a"}
    with pytest.raises(ValueError, match="unknown paper table"):
        report.paper_rows(6)


@pytest.mark.parametrize("dataset, skip, expected", [("synapse", True, 1.88), ("brats", True, 4.63), ("acdc", False, 1.84)])
def test_trainable_params_match_paper(dataset, skip, expected):
    assert report.trainable_params_m(get_spec(dataset), skip=skip) == expected


def test_our_rows_from_result_file(tmp_path):
    summary = report.read_summary(summary_csv(tmp_path, "synapse", 0.75, 12.0))
    ours = report.our_rows(summary, get_spec("synapse"), STAND_IN, table=1)
    assert list(ours.columns) == report.ALL_COLUMNS
    assert set(ours["method"]) == {"SAM3D (this run)"}
    avg = ours[(ours["metric"] == "DSC") & (ours["region"] == "average")]
    assert avg["value"].tolist() == [pytest.approx(75.0)]  # x100 like the paper
    hd = ours[(ours["metric"] == "HD95") & (ours["region"] == "average")]
    assert hd["value"].tolist() == [pytest.approx(12.0)]  # HD95 unscaled
    assert set(ours["encoder_weights"]) == {"random init"} and set(ours["data"]) == {"phantom"}
    assert set(ours["params_m"]) == {1.88}


def test_comparison_table_differences(tmp_path):
    summary = report.read_summary(summary_csv(tmp_path, "synapse", 0.80, 10.0))
    ours = report.our_rows(summary, get_spec("synapse"), STAND_IN, table=1)
    t = report.comparison_table(1, ours)
    v = t.values
    assert "SAM3D" in v.index and "SAM3D (this run)" in v.index and "UNETR++" in v.index
    diff = t.difference_rows[0]
    assert diff.startswith("difference")
    assert v.at[diff, "DSC avg"] == pytest.approx(80.0 - 79.56)
    assert v.at[diff, "DSC Liv"] == pytest.approx(80.0 - 95.42)
    assert v.at[diff, "HD95 avg"] == pytest.approx(10.0 - 17.87)
    # the printed column order: parameters, the two averages, then the organs
    assert list(v.columns[:5]) == ["Params (M)", "HD95 avg", "DSC avg", "DSC RKid", "DSC LKid"]
    md = t.to_markdown()
    assert "STAND-IN RUN" in md and "random-init vit_tiny encoder, phantom data" in md
    assert "paper's numbers" in md and "| SAM3D (this run) |" in md and "+0.44" in md
    assert "<table" in t.to_html()


def test_table5_variants_and_lung_average(tmp_path):
    rows = []
    for table, ds, method, skip, dsc in [("5a", "acdc", "SAM3D w skip connection", True, 0.9),
                                         ("5a", "acdc", "SAM3D w/o skip connection", False, 0.8)]:
        s = report.read_summary(summary_csv(tmp_path, ds, dsc, name=f"{ds}{skip}.csv"))
        rows.append(report.our_rows(s, get_spec(ds), STAND_IN, table=table, method=method, skip=skip))
    t = report.comparison_table("5a", pd.concat(rows))
    assert len(t.difference_rows) == 2
    assert t.values.at["SAM3D w/o skip connection (this run)", "Params (M)"] == 1.84
    lung = report.our_rows(report.read_summary(summary_csv(tmp_path, "lung", 0.5, name="l.csv")), get_spec("lung"), STAND_IN, table=3)
    t3 = report.comparison_table(3, lung)
    assert list(t3.values.columns) == ["Params (M)", "DSC avg"]
    assert t3.values.at["SAM3D (this run)", "DSC avg"] == pytest.approx(50.0)
    assert "tumour" in set(lung["region"])  # kept in the long CSV


def test_seeds_summary_mean_sd(tmp_path):
    frames = [report.read_summary(summary_csv(tmp_path, "acdc", d, name=f"s{i}.csv")) for i, d in enumerate((0.7, 0.8, 0.9))]
    stats = report.seeds_summary(frames)
    row = stats[(stats["region"] == "average") & (stats["metric"] == "DSC")].iloc[0]
    assert row["mean"] == pytest.approx(0.8) and row["sd"] == pytest.approx(0.1) and row["n_seeds"] == 3
    cond = report.RunConditions("vit_b", "random init", "phantom", "smoke", "paper", (0, 1, 2))
    ours = report.our_rows(stats, get_spec("acdc"), cond, table=2)
    t = report.comparison_table(2, ours)
    assert t.sd.at["SAM3D (this run)", "DSC avg"] == pytest.approx(10.0)
    assert "80.00 ± 10.00" in t.to_markdown() and "mean ± sd over seeds 0 1 2" in t.caption
    one = report.seeds_summary(frames[:1])
    assert math.isnan(one["sd"].iloc[0])
    with pytest.raises(ValueError, match="at least one"):
        report.seeds_summary([])


def test_summary_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="summary file not found"):
        report.read_summary(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"x": [1]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="bad.csv: needs columns"):
        report.read_summary(bad)


def test_conditions_describe():
    assert STAND_IN.stand_in and STAND_IN.describe().startswith("STAND-IN RUN: random-init vit_tiny encoder, phantom data")
    assert not REAL.stand_in and "STAND-IN" not in REAL.describe() and "3 seeds" in REAL.describe()


def test_write_table_files(tmp_path):
    ours = report.our_rows(report.read_summary(summary_csv(tmp_path, "synapse", 0.7)), get_spec("synapse"), STAND_IN, table=1)
    long = report.long_table(1, ours)
    files = report.write_table_files(tmp_path / "out", "table1", long, [report.comparison_table(1, ours)])
    back = pd.read_csv(files["csv"], dtype={"table": str})
    assert list(back.columns) == report.ALL_COLUMNS
    assert set(back["source"]) == {report.PAPER_SOURCE, "this run"}
    assert "SAM3D (this run)" in files["md"].read_text()
    assert not list((tmp_path / "out").glob(".*tmp*"))  # atomic writes leave no temp files


def per_case_frame() -> pd.DataFrame:
    """``per_case.csv`` rows of two seeds x two cases x two regions (DSC and HD95)."""
    return pd.DataFrame([{"case_id": c, "region": r, "metric": m, "value": v, "seed": s, "table": "1", "method": "SAM3D (this run)"}
                         for s in (0, 1) for c in ("img0001", "img0002") for r in ("Spl", "RKid")
                         for m, v in (("DSC", 0.5 + 0.1 * s), ("HD95", 4.0))])


def test_per_case_dsc_plot_shows_every_case_seed_and_region():
    """One box per region; one dot per case and seed (DSC in %), coloured by seed."""
    fig = rf.plot_per_case_dsc(per_case_frame())
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Spl", "RKid"]
    dots = np.concatenate([c.get_offsets() for c in ax.collections if len(c.get_offsets())])
    assert len(dots) == 8 and sorted(set(np.round(dots[:, 1], 6))) == [50.0, 60.0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["0", "1"]
    with pytest.raises(ValueError, match="no DSC row"):
        rf.plot_per_case_dsc(per_case_frame().query("metric == 'HD95'"))


def test_figures_titles_say_stand_in(tmp_path):
    spec = get_spec("synapse")
    ours = report.our_rows(report.read_summary(summary_csv(tmp_path, "synapse", 0.7)), spec, STAND_IN, table=1)
    log = tmp_path / "log.csv"
    pd.DataFrame({"epoch": [0, 1], "train_loss": [1.0, 0.8], "val_dice": [0.1, 0.3], "lr": [0.01, 0.005], "seconds": [1, 1]}).to_csv(log, index=False)
    gt = np.zeros((6, 32, 32), np.uint8)
    gt[2:4, 8:20, 8:20] = 6
    figs = [
        rf.plot_dsc_bars(ours, report.paper_rows(1), STAND_IN),
        rf.plot_params_vs_dsc(report.load_paper_tables(), ours, STAND_IN),
        rf.plot_training_curves(log, STAND_IN),
        rf.plot_per_case_dsc(per_case_frame(), STAND_IN),
        rf.plot_overlays(np.random.rand(6, 32, 32), gt, gt, None, spec, STAND_IN, case_id="img0001"),
    ]
    for fig in figs:
        assert "STAND-IN RUN: random-init vit_tiny encoder, phantom data" in fig._suptitle.get_text()
        report.save_figure(fig, tmp_path / "f.png")
        assert (tmp_path / "f.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="share one D x H x W grid"):
        rf.plot_overlays(np.zeros((6, 32, 32)), gt, gt[:3], None, spec)
    with pytest.raises(ValueError, match="lacks columns"):
        pd.DataFrame({"epoch": [0]}).to_csv(log, index=False)
        rf.plot_training_curves(log)


PARAM_ERRORS = [
    ({"seed": "abc"}, "'seed' must be an integer; got 'abc'"),
    ({"seed": 1.5}, "'seed' must be an integer"),
    ({"seed": True}, "'seed' must be an integer"),
    ({"seeds": [0, "x"]}, "'seeds' must be an integer"),
    ({"seeds": [1, 1]}, "distinct seeds"),
    ({"profile": "fast"}, "'profile': unknown value 'fast'"),
    ({"profile": 3}, "'profile' must be one of paper, quick, smoke"),
    ({"data_dir": 5}, "'data_dir' must be a path"),
    ({"device": "tpu"}, "unknown device 'tpu'"),
    ({"overrides": [1]}, "'overrides' must be a dict"),
    ({"epochs": 3}, "unknown notebook parameter"),
    ({"encoder": "vit_x"}, "'encoder': unknown value"),
]


@pytest.mark.parametrize("params, message", PARAM_ERRORS)
def test_notebook_param_errors(params, message):
    with pytest.raises(ParameterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        NotebookParams.from_mapping(params)


def test_notebook_params_coercion():
    p = from_namespace({"seed": "2", "seeds": "0 1, 2", "profile": "SMOKE", "data_dir": "data", "other": 1})
    assert p.seed == 2 and p.seeds == (0, 1, 2) and p.profile == "smoke" and str(p.data_dir) == "data"
    assert NotebookParams.from_mapping({"seed": 4}).seeds == (4,)
