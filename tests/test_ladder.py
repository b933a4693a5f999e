"""The reproduction ladder on a smoke run: "released" files made from it in the authors' exact formats
fill the middle columns; absent inputs read "not run"; Table 5 says it has no released files."""
from __future__ import annotations

import shutil

import pandas as pd
import pytest
from _authors_formats import TRAINER_DIR, save_trainer_files, write_dice_pre, zip_folder

from sam3dlib.evaluation.authors_scores import AUTHORS_CLASSES
from sam3dlib.modeling.released import to_authors_state
from sam3dlib.modeling.run_checkpoint import load_checkpoint
from sam3dlib.study import report
from sam3dlib.study.ladder import RUNGS, ladder_for
from sam3dlib.study.notebook_params import NotebookParams
from sam3dlib.study.registry import TABLES
from sam3dlib.study.table_run import TableResult

THEIRS = {v: k for k, v in AUTHORS_CLASSES["synapse"].items()}


def _result(smoke_run, synapse_store, tmp_path, table="1"):
    data = tmp_path / "data"
    data.mkdir(parents=True)
    (data / "synapse").symlink_to(synapse_store)
    cond = report.RunConditions("vit_tiny", "random init", "phantom", "smoke", "paper", (0,))
    info = TABLES[table][0] if table == "1" else TABLES["5"][2]
    res = TableResult(table, tmp_path / "out", cond, pd.DataFrame(), [], pd.DataFrame(),
                      {info.config: [smoke_run["run"]]}, {"synapse": data})
    return res, info


def _released(run, tmp_path):
    """Weights in their trainer tree (zipped) and maps with a dice_pre.txt their way: the first test case's
    map missing, the rest paired by sorted position."""
    results = tmp_path / "their"
    save_trainer_files(results / TRAINER_DIR, to_authors_state(load_checkpoint(run / "checkpoints" / "best.pt")["decoder"]),
                       num_classes=14)
    weights = zip_folder(results / "sam3d", tmp_path / "weights.zip", results)
    maps = tmp_path / "maps"
    shutil.copytree(run / "predictions", maps)
    pc = pd.read_csv(run / "per_case.csv")
    cases = sorted(pc["case_id"].unique())
    (maps / f"{cases[0]}.nii.gz").unlink()
    rows = []
    for gt_case, pred_case in zip(cases, cases[1:]):  # their zip(sorted labels, sorted predictions)
        g = pc[pc["case_id"] == gt_case]
        scores = {f"{'Dice' if m == 'DSC' else 'hd'}_{THEIRS[r]}": v for r, m, v in zip(g["region"], g["metric"], g["value"])
                  if m in ("DSC", "HD95")}
        rows.append((f"{pred_case}.nii.gz", scores))
    write_dice_pre(maps / "dice_pre.txt", rows, "synapse")
    return weights, maps, cases


def test_ladder_with_released_files_in_their_formats(smoke_run, synapse_store, tmp_path):
    result, info = _result(smoke_run, synapse_store, tmp_path)
    weights, maps, cases = _released(smoke_run["run"], tmp_path)
    p = NotebookParams(released_weights=weights, released_predictions=maps, out_dir=tmp_path / "out")
    lad = ladder_for(result, info, p)
    f = lad.frame
    assert list(f.columns) == [RUNGS["paper"], RUNGS["maps"], "Δ maps", RUNGS["weights"], "Δ weights",
                               RUNGS["retrained"], "Δ retrained"]
    assert f.loc[("DSC", "average"), RUNGS["paper"]] == "79.56"
    # their weights run by us predict exactly what the run they were made from predicts
    assert (f[RUNGS["weights"]] == f[RUNGS["retrained"]]).all()
    assert "not run" not in f.to_string()
    maps_rung = lad.rungs[0]
    text = "\n".join(maps_rung.notes)
    assert f"no prediction for 1 case(s): {cases[0]}" in text
    assert f"in 1 case(s): {cases[1]}" in text  # their shifted pairing, caught and named
    legend = lad.legend()
    assert "files sha256" in legend and "model_best" in legend and "PHANTOM synapse data" in legend
    for key in ("per_case_maps", "per_case_weights", "per_case_retrained", "ladder_csv", "ladder_md"):
        assert lad.files[key].is_file()
    assert sorted(pd.read_csv(lad.files["per_case_maps"])["case_id"].unique()) == cases[1:]


def test_absent_inputs_not_run_and_table5(smoke_run, synapse_store, tmp_path, monkeypatch):
    from sam3dlib.study import ladder

    monkeypatch.setattr(ladder, "_phantom", lambda store: False)  # as if real data
    result, info = _result(smoke_run, synapse_store, tmp_path)
    lad = ladder_for(result, info, NotebookParams(out_dir=tmp_path / "out"))
    assert (lad.frame[RUNGS["maps"]] == "not run").all() and (lad.frame[RUNGS["weights"]] == "not run").all()
    assert "RELEASED_PREDICTIONS" in lad.legend() and "RELEASED_WEIGHTS" in lad.legend()
    assert "not run" in lad.status()
    t5, info5 = _result(smoke_run, synapse_store, tmp_path / "t5", table="5")
    lad5 = ladder_for(t5, info5, NotebookParams(out_dir=tmp_path / "t5" / "out"))
    assert "no weights or prediction maps for the skip ablation" in lad5.legend()


def test_reproduce_refuses_released_for_table5_and_absent_paths(tmp_path):
    from sam3dlib.study.inputs import MissingInputError
    from sam3dlib.study.reproduce import check_released

    with pytest.raises(MissingInputError, match="Table 5"):
        check_released("5", tmp_path, None)
    with pytest.raises(MissingInputError, match="RELEASED_WEIGHTS .*absent.zip does not exist"):
        check_released("1", tmp_path / "absent.zip", None)
    assert check_released("1", None, tmp_path) == {"released_weights": None, "released_predictions": tmp_path}
