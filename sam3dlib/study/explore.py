"""Explore a finished table run case by case (``notebooks/07_explore_case.ipynb``, JupyterLab).

A table run folder (``results/tableN/runs/<id>``, ``results/tableN/latest``, or a notebook's
``out_dir``) holds one experiment folder per experiment and seed (``experiments/<config>-seed<k>``)
with its predictions and per-case metrics. :func:`open_run` reads one of them, whatever the
profile (smoke or paper); :func:`case_table` lists its test cases with per-region DSC (%) and
HD95 (voxels), marking missed structures; :func:`explorer` is the interactive view (a case picker
showing each case's mean DSC, a slice slider, fill or contour overlays; ipywidgets).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sam3dlib.data.specs import DatasetSpec, get_spec
from sam3dlib.evaluation.metrics import AVERAGE
from sam3dlib.study.inputs import MissingInputError
from sam3dlib.study.notebook_params import NotebookParams
from sam3dlib.study.registry import experiments, table_key
from sam3dlib.study.report import MISSED_MARK, RunConditions
from sam3dlib.study.report_page import experiment_dirs
from sam3dlib.study.run_folders import LATEST
from sam3dlib.study.seed_runs import conditions_from_run


def latest_reproduction(table: int | str, results: str | os.PathLike = "results") -> Path | None:
    """The run folder ``results/tableN/latest`` points at (symlink or ``LATEST`` text), or None."""
    out = Path(results) / f"table{table_key(table)}"
    link = out / LATEST
    if link.is_dir():
        return link.resolve()
    text = out / LATEST.upper()
    if text.is_file():
        run = out / text.read_text().strip()
        return run if run.is_dir() else None
    return None


@dataclass
class Exploration:
    """One experiment folder of a table run, ready to browse.

    Attributes:
        run_dir: the table run folder.
        experiment_dir: ``run_dir/experiments/<config>-seed<k>``.
        spec: the dataset's spec.
        store: the prepared store the run was scored on.
        conditions: what the run was measured under (titles say stand-in runs are).
        per_case: ``case_id, region, metric, value`` (DSC in [0, 1] as in ``per_case.csv``).
    """

    run_dir: Path
    experiment_dir: Path
    spec: DatasetSpec
    store: Path
    conditions: RunConditions
    per_case: pd.DataFrame
    _arrays: dict = field(default_factory=dict, repr=False)

    @property
    def cases(self) -> list[str]:
        """The scored test cases, in ``per_case.csv`` order."""
        return list(dict.fromkeys(self.per_case["case_id"].astype(str)))

    def describe(self) -> str:
        return f"{self.experiment_dir.name} ({len(self.cases)} test cases): {self.conditions.describe()}"

    def arrays(self, case_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image, ground truth and prediction of ``case_id`` on its original grid (z, y, x); cached.

        Raises:
            KeyError: the case has no prediction in this run.
        """
        from sam3dlib.study.table_figures import overlay_arrays

        if case_id not in self._arrays:
            found = overlay_arrays(self.experiment_dir, self.store, case_id)
            if found is None:
                raise KeyError(f"case {case_id!r}: no prediction in {self.experiment_dir / 'predictions'}; "
                               f"choose one of {', '.join(self.cases)}")
            self._arrays[case_id] = found[:3]
        return self._arrays[case_id]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def open_run(run_dir: str | os.PathLike, experiment: str | None = None, seed: int | None = None) -> Exploration:
    """Open an experiment folder of a table run (smoke or paper profile alike).

    Args:
        run_dir: the table run folder (or one experiment folder itself).
        experiment: the experiment's config name (default: the first experiment folder).
        seed: its seed (default: the first).

    Raises:
        MissingInputError: no scored experiment folder in ``run_dir`` or its store is gone.
    """
    run = Path(run_dir)
    dirs = [run] if (run / "per_case.csv").is_file() and (run / "results.json").is_file() else experiment_dirs(run)
    dirs = [d for d in dirs if (d / "per_case.csv").is_file() and (d / "results.json").is_file()]
    if experiment is not None:
        dirs = [d for d in dirs if d.name.rsplit("-seed", 1)[0] == experiment]
    if seed is not None:
        dirs = [d for d in dirs if d.name.endswith(f"-seed{seed}")]
    if not dirs:
        raise MissingInputError(f"{run}: no scored experiment folder (experiments/<config>-seed<k>/ with per_case.csv "
                                "and results.json); run a reproduction first (make reproduce-tableN)")
    exp = dirs[0]
    results, prov = _read_json(exp / "results.json"), _read_json(exp / "provenance.json")
    store = Path(str(results.get("data_dir") or prov.get("data_dir") or ""))
    if not (store / "dataset.json").is_file():
        raise MissingInputError(f"{exp / 'results.json'}: the run's prepared store {store} is gone; prepare it again "
                                "at that path to view the images")
    dataset = str(prov.get("dataset") or _read_json(store / "dataset.json").get("dataset"))
    seeds = _read_json(run / "params.json").get("seeds") or [results.get("seed", 0)]
    cond = conditions_from_run(exp, NotebookParams.from_mapping({}), dataset, bool(prov.get("phantom")), seeds)
    per_case = pd.read_csv(exp / "per_case.csv", dtype={"case_id": str})
    return Exploration(run, exp, get_spec(dataset), store, cond, per_case)


def case_table(ex: Exploration) -> pd.DataFrame:
    """Per test case: DSC (%) per region and their mean, HD95 (voxels, the authors' evaluation scripts' convention) per
    region, and ``missed``: the regions with DSC 0 (never predicted; their HD95 of 0 is the
    convention for an empty prediction, not a perfect border).

    Returns:
        A frame indexed by ``case_id``, sorted as :attr:`Exploration.cases`.
    """
    pc = ex.per_case[ex.per_case["region"] != AVERAGE]
    dsc = pc[pc["metric"] == "DSC"].pivot_table(index="case_id", columns="region", values="value", sort=False) * 100.0
    hd = pc[pc["metric"] == "HD95"].pivot_table(index="case_id", columns="region", values="value", sort=False)
    out = dsc.add_prefix("DSC % ")
    out.insert(0, "mean DSC %", dsc.mean(axis=1))
    out = out.join(hd.add_prefix("HD95 "))
    out["missed"] = [", ".join(r for r in dsc.columns if dsc.at[c, r] == 0) for c in dsc.index]
    return out.reindex(ex.cases).round(2)


def case_label(ex: Exploration, table: pd.DataFrame, case_id: str) -> str:
    """The case picker's label: ``img0001: mean DSC 71.2 % (missed: Gal)``."""
    row = table.loc[case_id]
    missed = f" {MISSED_MARK[:-1]}: {row['missed']})" if row["missed"] else ""
    return f"{case_id}: mean DSC {row['mean DSC %']:.1f} %{missed}"


def explorer(ex: Exploration, mode: str = "fill"):
    """The interactive view: case picker (with each case's mean DSC), slice slider (volume
    coordinates), fill / contour toggle, and the overlay figure (:func:`plot_overlays`).

    Returns:
        An ``ipywidgets.VBox`` (display it in JupyterLab).
    """
    import ipywidgets as w
    from IPython.display import display

    from sam3dlib.study import report_figures as rf

    table = case_table(ex)
    picker = w.Dropdown(options=[(case_label(ex, table, c), c) for c in ex.cases], description="case",
                        layout=w.Layout(width="32em"))
    modes = w.ToggleButtons(options=list(rf.OVERLAY_MODES), value=mode, description="labels")
    slider = w.IntSlider(description="slice z", continuous_update=False, layout=w.Layout(width="40em"))
    out = w.Output()

    def set_case(*_):
        image, gt, _ = ex.arrays(picker.value)
        slider.max = image.shape[0] - 1
        slider.value = rf.pick_slices(gt, 1)[0]
        draw()

    def draw(*_):
        image, gt, pred = ex.arrays(picker.value)
        dsc = table.loc[picker.value, [c for c in table.columns if c.startswith("DSC % ")]]
        note = "DSC %: " + ", ".join(f"{c[6:]} {v:.1f}" for c, v in dsc.items())
        fig = rf.plot_overlays(image, gt, pred, [slider.value], ex.spec, ex.conditions, case_id=picker.value,
                               mode=modes.value, note=note)
        with out:
            out.clear_output(wait=True)
            display(fig)

    picker.observe(set_case, names="value")
    slider.observe(draw, names="value")
    modes.observe(draw, names="value")
    set_case()
    return w.VBox([w.HBox([picker, modes]), slider, out])


def first_experiment(table: int | str) -> str:
    """The config name of the table's first experiment (the one explored by default)."""
    return experiments(table)[0].config


__all__ = ["Exploration", "case_label", "case_table", "explorer", "first_experiment", "latest_reproduction",
           "open_run"]
