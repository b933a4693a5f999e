"""Failing inputs from public bug reports, each kept as a test of the kind of fault it stands for
(docs/RELIABILITY.md): store paths, run-folder ownership, headers, versions, links, workers."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sam3dlib.utils.errors import MissingFileError

# ---------------------------------------------------------------- the store's paths


def test_store_paths_survive_a_change_of_working_directory(tmp_path, monkeypatch):
    """A store prepared with a relative --raw records absolute source paths (usable from anywhere)."""
    from sam3dlib.data.phantoms import write_phantom
    from sam3dlib.data.prepare import prepare_dataset
    from sam3dlib.data.store import PreparedDataset

    write_phantom("synapse", tmp_path / "raw", n_cases=2, size="tiny")
    monkeypatch.chdir(tmp_path)
    prepare_dataset("synapse", Path("raw"), Path("store"))
    store = PreparedDataset("store")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert store.root == tmp_path / "store"
    for case_id in store.case_ids:
        props = store.properties(case_id)
        assert Path(props["label_file"]).is_absolute() and Path(props["label_file"]).is_file()
        assert all(Path(p).is_absolute() and Path(p).is_file() for p in props["image_files"])
    store.check_source_labels(store.case_ids, "needed")


def test_missing_original_labels_stop_an_experiment_before_training(synapse_store, tmp_path):
    """A store whose test labels cannot be found (relative paths of an older store) is refused
    before the first training step, naming the case and the recorded path."""
    from sam3dlib.data.store import PreparedDataset
    from sam3dlib.pipeline import run_experiment
    from sam3dlib.study.registry import get_config

    store_dir = tmp_path / "store"
    shutil.copytree(synapse_store, store_dir)
    cfg = get_config("table1_synapse", "smoke", epochs=1, iterations_per_epoch=1)
    test = [c for c in PreparedDataset(store_dir).split(cfg.protocol).test]
    props_path = store_dir / "cases" / f"{test[0]}.json"
    props = json.loads(props_path.read_text())
    props["label_file"] = "raw/label/" + Path(props["label_file"]).name
    props_path.write_text(json.dumps(props))
    with pytest.raises(MissingFileError, match=rf"{test[0]} \(relative path raw/label/"):
        run_experiment(cfg, store_dir, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- who owns a run folder

_HOLDER = """
import sys, time
from sam3dlib.utils import folder_lock
folder_lock.acquire(sys.argv[1], "run folder (--out)")
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture
def held_run(tmp_path):
    """A run folder held by another live process (as a training in its first epoch holds it)."""
    import subprocess
    import sys

    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield run, proc
    finally:
        proc.kill()
        proc.wait()


def test_a_second_training_into_a_held_run_folder_stops_naming_the_holder(held_run, synapse_store):
    """Two trainings into one --out: the second stops with one line naming the first; --force
    cannot take the folder from a live holder, and nothing of the run is written or deleted."""
    from _fixtures_train import tiny_config

    from sam3dlib.training import train
    from sam3dlib.utils.folder_lock import FolderInUseError

    run, proc = held_run
    (run / "config.json").write_text("{}")  # the holder's file: not deleted by --force
    for force in (False, True):
        with pytest.raises(FolderInUseError, match=rf"run folder \(--out\) {run} is in use by pid {proc.pid} on host"):
            train(tiny_config(), synapse_store, run, progress=False, force=force)
    assert sorted(p.name for p in run.iterdir()) == [".sam3d.lock", "config.json"]


def test_a_crashed_holder_does_not_leave_the_run_folder_stuck(held_run):
    """SIGKILL of the holder frees the folder (the kernel drops its lock); the record is replaced."""
    import os

    from sam3dlib.utils import folder_lock

    run, proc = held_run
    proc.kill()
    proc.wait()
    with folder_lock.hold(run, "run folder (--out)"):
        record = json.loads((run / folder_lock.LOCK_FILE).read_text())
        assert record["pid"] == os.getpid()
    assert (run / folder_lock.LOCK_FILE).read_text() == ""


def test_a_live_holder_named_in_the_record_holds_the_folder_without_a_kernel_lock(tmp_path):
    """Where the file system does not lock, the record decides: a live pid on this host (same
    start time) holds the folder, a dead one does not."""
    import os
    import socket
    import subprocess
    import sys

    from sam3dlib.utils import folder_lock

    run = tmp_path / "run"
    run.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {"host": socket.gethostname(), "pid": live.pid, "since": "then", "command": "sam3d train",
                  "process_start": folder_lock.process_start_time(live.pid)}
        (run / folder_lock.LOCK_FILE).write_text(json.dumps(record))  # no flock held by anyone
        with pytest.raises(folder_lock.FolderInUseError, match=f"pid {live.pid} .*sam3d train"):
            folder_lock.acquire(run, "run folder (--out)")
    finally:
        live.kill()
        live.wait()
    folder_lock.acquire(run)  # the same record, its process now dead
    try:
        assert json.loads((run / folder_lock.LOCK_FILE).read_text())["pid"] == os.getpid()
    finally:
        folder_lock.release(run)


def test_resume_on_rebuilt_data_is_refused_and_never_rewrites_what_earlier_epochs_used(smoke_run, synapse_store,
                                                                                      tmp_path):
    """A store rebuilt with another spacing under an unfinished run: resume refuses, saying what
    changed; told explicitly, it continues and keeps the run's dataset_meta.json."""
    from _fixtures_train import copy_store

    from sam3dlib.training import train
    from sam3dlib.training.run_dir import RunExistsError
    from sam3dlib.utils.finished import FINISHED

    store = copy_store(synapse_store, tmp_path / "store")
    run = tmp_path / "run"
    shutil.copytree(smoke_run["run"], run, ignore=shutil.ignore_patterns(FINISHED, "predictions"))
    before = (run / "dataset_meta.json").read_bytes()
    meta = json.loads((store / "dataset.json").read_text())
    old_spacing = meta["target_spacing"]
    meta["target_spacing"] = [old_spacing[0] * 2, *old_spacing[1:]]
    (store / "dataset.json").write_text(json.dumps(meta))
    cfg = smoke_run["config"]
    with pytest.raises(RunExistsError, match=r"the data in .* changed since the run started \(target_spacing: "
                                             + r"\[" + str(old_spacing[0])):
        train(cfg, store, run, resume=True, progress=False)
    assert (run / "dataset_meta.json").read_bytes() == before
    train(cfg, store, run, resume=True, progress=False, allow_data_change=True)
    assert (run / "dataset_meta.json").read_bytes() == before
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["resumed_on_changed_data"][0].startswith("target_spacing")
    assert (run / FINISHED).is_file()


# ---------------------------------------------------------------- NIfTI headers the reader must not take at face value


def _resave(src: Path, dest: Path, data=None, units: str | None = None, scale: float = 1.0,
            zero_pixdim_z: bool = False) -> Path:
    """``src``'s scan saved again: other data (type), its geometry in other units, or an sform-only
    header whose pixdim[3] is 0 (what ANTs/ITK bug reports show)."""
    import nibabel as nib
    import numpy as np

    img = nib.load(str(src))
    affine = img.affine.copy()
    affine[:3] *= scale
    arr = np.asanyarray(img.dataobj) if data is None else data(np.asanyarray(img.dataobj))
    out = nib.Nifti1Image(arr, affine)
    if units:
        out.header.set_xyzt_units(units)
    if zero_pixdim_z:
        out.header.set_qform(None, code=0)
        out.header["pixdim"][3] = 0
    nib.save(out, str(dest))
    return dest


@pytest.fixture
def raw_synapse(tmp_path) -> Path:
    from sam3dlib.data.phantoms import write_phantom

    return write_phantom("synapse", tmp_path / "raw", n_cases=2, size="tiny")


def _rgb(arr):
    import numpy as np

    rgb = np.zeros(arr.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = np.clip(arr, 0, 255)
    return rgb


def test_an_rgb_nifti_is_refused_in_one_line_and_listed_by_check_data(raw_synapse, tmp_path, capsys):
    from sam3dlib.cli import main
    from sam3dlib.data.check import check_dataset
    from sam3dlib.data.io import DataFileError, load_label_nifti, read_nifti

    img = raw_synapse / "img" / "img0001.nii.gz"
    _resave(img, img, data=_rgb)
    lab = raw_synapse / "label" / "label0005.nii.gz"
    _resave(lab, lab, data=_rgb)
    with pytest.raises(DataFileError, match=rf"{img}: NIfTI data type RGB"):
        read_nifti(img)
    with pytest.raises(DataFileError, match=rf"{lab}: NIfTI data type RGB"):
        load_label_nifti(lab)
    problems = [str(p) for p in check_dataset("synapse", raw_synapse, expect_all=False)]
    assert any(p.startswith(f"{img}: NIfTI data type RGB") for p in problems), problems
    assert any(p.startswith(f"{lab}: NIfTI data type RGB") for p in problems), problems
    assert main(["prepare", "synapse", "--raw", str(raw_synapse), "--out", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sam3d prepare: error: ") and "NIfTI data type RGB" in err[-1]


@pytest.mark.parametrize("units, scale", [("mm", 1.0), ("micron", 1000.0), ("meter", 0.001)])
def test_voxel_sizes_in_micrometres_or_metres_are_read_in_mm_as_itk_does(raw_synapse, tmp_path, units, scale):
    import numpy as np

    from sam3dlib.data.io import read_nifti

    src = raw_synapse / "img" / "img0001.nii.gz"
    ref = read_nifti(src)
    vol = read_nifti(_resave(src, tmp_path / f"{units}.nii.gz", units=units, scale=scale))
    assert np.allclose(vol.spacing, (0.8, 0.8, 2.5), rtol=1e-5)
    assert np.allclose(vol.affine, ref.affine, rtol=1e-5, atol=1e-4)


def test_an_absurd_resampled_size_stops_before_any_allocation(raw_synapse, tmp_path):
    """Voxel sizes in metres labelled mm: 1000 x too large; resampling to 0.8 mm would take
    terabytes: one line, naming the file, instead of an allocation error."""
    from sam3dlib.data.io import DataFileError
    from sam3dlib.data.preprocess import preprocess_case

    bad = _resave(raw_synapse / "img" / "img0001.nii.gz", tmp_path / "m.nii.gz", units="mm", scale=1000.0)
    meta = {"target_spacing": [2.5, 0.8, 0.8], "normalization": {"channels": []}, "num_channels": 1}
    with pytest.raises(DataFileError, match=rf"{bad}: resampling from voxel sizes .* would make a .* GiB"):
        preprocess_case(bad, meta)


def test_a_zero_voxel_size_in_the_header_uses_the_affine_and_says_so(raw_synapse, capsys):
    """sform 0.8 x 0.8 x 2.5 mm with pixdim[3] = 0 (qform code 0): nibabel reads 1.0 mm; the reader
    takes the sform's 2.5 mm and names the file; check-data lists it."""
    import numpy as np

    from sam3dlib.data.check import check_dataset
    from sam3dlib.data.io import HeaderWarning, read_nifti

    img = raw_synapse / "img" / "img0001.nii.gz"
    _resave(img, img, zero_pixdim_z=True)
    with pytest.warns(HeaderWarning, match=rf"{img}: header voxel sizes \(pixdim\) \[0.8, 0.8, 1\] mm disagree "
                                           r"with its sform \[0.8, 0.8, 2.5\] mm \(qform code 0\)"):
        vol = read_nifti(img)
    assert np.allclose(vol.spacing, (0.8, 0.8, 2.5))
    problems = [str(p) for p in check_dataset("synapse", raw_synapse, expect_all=False)]
    assert any(p.startswith(f"{img}: header voxel sizes") for p in problems), problems
    assert "pixdim[1,2,3] should be non-zero" not in capsys.readouterr().err  # nibabel's note names no file


# ---------------------------------------------------------------- interruption, links, messages of the command


@pytest.fixture
def scans(tmp_path) -> Path:
    """A folder of two scans to predict (img0001, img0005 of a tiny Synapse phantom)."""
    from sam3dlib.data.phantoms import write_phantom

    raw = write_phantom("synapse", tmp_path / "raw", n_cases=2, size="tiny")
    return raw / "img"


def test_a_predict_rerun_removes_stale_temporaries_and_skips_complete_outputs(smoke_run, scans, tmp_path, one_thread):
    """Prediction killed while writing: the rerun removes the killed writer's temporary file,
    keeps the complete output and predicts the rest; --overwrite predicts everything again."""
    from sam3dlib.inference.predictor import load_run, predict_folder

    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".img0005.nii.gz.k1ll3d.tmp"
    stale.write_bytes(b"half")
    done = out / "img0001.nii.gz"
    shutil.copy(scans / "img0001.nii.gz", done)  # stands for a complete output of the first call
    before = done.read_bytes()
    loaded = load_run(smoke_run["run"], "cpu")
    written = predict_folder(loaded, scans, out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["img0001.nii.gz", "img0005.nii.gz"]
    assert sorted(p.name for p in written) == ["img0001.nii.gz", "img0005.nii.gz"]
    assert done.read_bytes() == before
    predict_folder(loaded, scans, out, progress=False, overwrite=True)
    assert done.read_bytes() != before


def test_a_dangling_link_among_the_inputs_is_named_before_any_work(smoke_run, scans, tmp_path, capsys):
    from sam3dlib.cli import main

    (scans / "img0009.nii.gz").symlink_to(tmp_path / "gone.nii.gz")
    (scans / "img0002.nii.gz").symlink_to(scans / "img0001.nii.gz")  # a link that resolves: followed
    out = tmp_path / "out"
    assert main(["predict", "--run", str(smoke_run["run"]), "-i", str(scans), "-o", str(out), "--device", "cpu",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "img0009.nii.gz -> " in err[0] and "gone.nii.gz" in err[0], err
    assert not out.exists()


def test_ctrl_c_prints_one_line_saying_what_stopped_and_that_a_rerun_resumes(raw_synapse, tmp_path, monkeypatch,
                                                                            capsys):
    from sam3dlib.cli import main
    from sam3dlib.data import prepare

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "preprocess_case", interrupted)
    assert main(["prepare", "synapse", "--raw", str(raw_synapse), "--out", str(tmp_path / "store")]) == 130
    err = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines()
           if line.strip() and not line.startswith(("analyse synapse", "prepare synapse"))]  # progress bars
    assert len(err) == 1 and err[0].startswith("sam3d prepare: prepare interrupted;") and "rerun" in err[0], err


def test_a_device_error_names_the_flag_of_the_command_that_printed_it(smoke_run, scans, tmp_path, monkeypatch,
                                                                       capsys):
    """A GPU asked for on a CPU machine: predict says --device cpu (it has no --set)."""
    import torch

    from sam3dlib.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["predict", "--run", str(smoke_run["run"]), "-i", str(scans / "img0001.nii.gz"), "-o",
                 str(tmp_path / "p.nii.gz"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "use --device cpu" in err and "--set" not in err


# ---------------------------------------------------------------- files written by other versions, by other tools


def test_a_run_config_without_settings_of_its_version_is_refused_naming_both_versions(tmp_path):
    """An older config.json lacking mirror_tta and sw_overlap is not read with today's defaults."""
    from sam3dlib.config import CONFIG_FORMAT, ExperimentConfig
    from sam3dlib.study.registry import get_config
    from sam3dlib.utils.errors import ConfigError

    values = get_config("table1_synapse", "smoke").to_dict()
    del values["mirror_tta"], values["sw_overlap"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values))
    with pytest.raises(ConfigError, match=r"written by sam3dlib \(version not recorded\) \(config format 1\) without "
                                          rf"the setting\(s\) mirror_tta, sw_overlap; sam3dlib \S+ \(config format {CONFIG_FORMAT}\)"):
        ExperimentConfig.load(path)
    path.write_text(json.dumps({**values, "mirror_tta": True, "sw_overlap": 0.5, "config_format": CONFIG_FORMAT + 1,
                                "sam3dlib_version": "9.0"}))
    with pytest.raises(ConfigError, match=rf"written by sam3dlib 9.0 \(config format {CONFIG_FORMAT + 1}\), which sam3dlib"):
        ExperimentConfig.load(path)


def test_a_setting_added_later_is_filled_with_what_the_older_version_did(tmp_path):
    from sam3dlib.config import CONFIG_FORMAT, ExperimentConfig
    from sam3dlib.study.registry import get_config
    from sam3dlib.utils.errors import InputNote

    cfg = get_config("table1_synapse", "smoke")
    values = cfg.to_dict()
    del values["fast_attention"], values["optimizer"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values))
    with pytest.warns(InputNote, match="without fast_attention, optimizer; read with .*fast_attention=False"):
        loaded = ExperimentConfig.load(path)
    assert loaded.fast_attention is False and loaded.optimizer == "sgd"
    written = json.loads(cfg.to_json())
    assert written["config_format"] == CONFIG_FORMAT and written["sam3dlib_version"]
    path.write_text(cfg.to_json())
    assert ExperimentConfig.load(path) == cfg


def test_a_training_checkpoint_of_another_format_is_described_as_such(tmp_path):
    import torch

    from sam3dlib.modeling.run_checkpoint import load_checkpoint
    from sam3dlib.modeling.weights_file import CheckpointError

    path = tmp_path / "best.pt"
    torch.save({"format": 2, "sam3dlib_version": "0.9.0", "decoder": {}}, path)
    with pytest.raises(CheckpointError, match=r"a sam3dlib training checkpoint of format 2 \(written by sam3dlib "
                                              r"0.9.0\); sam3dlib \S+ reads format 1"):
        load_checkpoint(path)


def test_a_dataparallel_sam_checkpoint_is_read_and_the_prefix_reported(sam_vit_tiny_checkpoint, tmp_path):
    import torch

    from sam3dlib.modeling.encoders import load_encoder_state
    from sam3dlib.modeling.weights_file import CheckpointNote

    state = torch.load(sam_vit_tiny_checkpoint, weights_only=True)
    wrapped = tmp_path / "finetuned.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, wrapped)
    with pytest.warns(CheckpointNote, match=rf"{wrapped}: every key starts with DataParallel's 'module.' prefix"):
        got = load_encoder_state(wrapped, "vit_tiny", (32, 32))
    assert torch.equal(got["patch_embed.proj.weight"], state["image_encoder.patch_embed.proj.weight"])


def test_checkpoint_refusals_are_one_accurate_line(sam_vit_tiny_checkpoint, tmp_path):
    """No ANSI codes, no advice to load untrusted code, 'incomplete' only for an incomplete file."""
    import torch

    from sam3dlib.modeling.weights_file import CheckpointError, read_state_dict

    pickled = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2), pickled)
    with pytest.raises(CheckpointError) as info:
        read_state_dict(pickled)
    text = str(info.value)
    assert "\x1b" not in text and "\n" not in text and "weights_only" not in text and "incomplete" not in text
    assert "holds Python objects besides tensors" in text


def test_an_unfinished_prepare_is_reported_as_such_not_as_bad_folds(tmp_path, capsys):
    """prepare killed after its plan and folds were written: check-data and train say that
    prepare did not finish (and that a rerun resumes), not that splits_final.json is wrong."""
    from sam3dlib.cli import main
    from sam3dlib.data.check import check_user_dataset
    from sam3dlib.data.planning import PlannerSettings
    from sam3dlib.data.prepare import prepare_dataset
    from sam3dlib.data.user_phantoms import write_user_phantom
    from sam3dlib.modeling.memory import decoder_state_bytes, training_bytes_per_voxel

    raw = write_user_phantom(tmp_path / "raw", "msd", n_cases=3)
    store = tmp_path / "store"
    prepare_dataset(None, raw, store, settings=PlannerSettings(training_bytes_per_voxel, decoder_state_bytes),
                    progress=False)
    (store / "cases" / "phantom_001.json").unlink()  # as if killed before this case finished
    problems = [str(p) for p in check_user_dataset(store)]
    assert problems == [f"{store}: sam3d prepare did not finish: 1 of 3 case(s) are missing (phantom_001); rerun "
                        "the same `sam3d prepare` command to resume (finished cases are kept)"], problems
    assert main(["train", "custom", "--data", str(store), "--out", str(tmp_path / "run"), "--profile", "smoke",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "sam3d prepare did not finish" in err and "splits_final" not in err


def test_an_unfinished_paper_store_is_reported_as_such(synapse_store, tmp_path):
    from _fixtures_train import copy_store

    from sam3dlib.data.store import PreparedDataset, StoreError

    store = copy_store(synapse_store, tmp_path / "store")
    first = PreparedDataset(store).case_ids[0]
    (store / "cases" / f"{first}.json").unlink()
    with pytest.raises(StoreError, match=rf"sam3d prepare did not finish: 1 of 4 case\(s\) are missing \({first}\)"):
        PreparedDataset(store).split("paper")


def test_a_full_disk_during_prepare_says_no_space_left_on_the_device_while_writing_the_file(tmp_path, monkeypatch):
    """numpy reports a full disk as 'N requested and M written' (no errno): the message says the disk is full."""
    import numpy as np

    from sam3dlib.utils.fileio import OutputError, atomic_save_npy, mount_point

    def short_write(fh, *args, **kwargs):
        fh.write(b"\x93NUMPY")
        raise OSError("1198080 requested and 623584 written")

    monkeypatch.setattr(np, "save", short_write)
    target = tmp_path / "cases" / "img0001_image.npy"
    with pytest.raises(OutputError) as info:
        atomic_save_npy(target, np.zeros(3))
    assert str(info.value).startswith(f"cannot write {target}: no space left on {mount_point(tmp_path)} (")
    assert f"while writing {target}: the disk is full" in str(info.value)
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_a_killed_worker_stops_the_map_with_one_line_naming_the_case():
    """A pool worker killed (OOM killer): no hang; one line naming the case(s) in flight and memory."""
    import time

    from _worker_jobs import killed_on_two

    from sam3dlib.utils.pool import WorkerLostError, map_in_processes

    t0 = time.monotonic()
    got = []
    with pytest.raises(WorkerLostError, match=r"a worker process died while processing case (c2|one of .*c2.*): "
                                              r"most likely the system ran out of memory .*--workers 1"):
        for value in map_in_processes(killed_on_two, [0, 1, 2, 3], 2, "test", progress=False,
                                      name=lambda i: f"c{i}", what="case"):
            got.append(value)
    assert got[:1] == [0] and 20 not in got and time.monotonic() - t0 < 60


# ---------------------------------------------------------------- paths with spaces, values as typed


def _make_dry_run(target: str, **variables: str) -> list[list[str]]:
    """The commands ``make`` would run for ``target`` (setup taken as done), each split as the shell would."""
    import shlex
    import subprocess

    root = Path(__file__).resolve().parents[1]
    args = ["make", "-s", "-n", "-o", ".venv/.installed", target, *(f"{k}={v}" for k, v in variables.items())]
    out = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=60, check=True).stdout
    return [shlex.split(line) for line in out.replace("\\\n", " ").splitlines() if line.strip()]


def test_make_targets_keep_paths_with_spaces_whole():
    """`make reproduce-table1 DATA_DIR="/data/my data"` passes each path as one argument."""
    from sam3dlib.cli import build_parser

    (cmd,) = _make_dry_run("reproduce-table1", DATA_DIR="/data/my data", ENCODER_WEIGHTS="/w/sam weights.pth",
                           OUT="/tmp/my results", SEEDS="0 1", PROFILE="smoke")
    args = build_parser().parse_args(cmd[cmd.index("sam3dlib") + 1:])
    assert (args.data_dir, args.encoder_weights, args.out, args.seeds) == ("/data/my data", "/w/sam weights.pth",
                                                                      "/tmp/my results/table1", "0 1")
    (demo,) = _make_dry_run("demo", OUT="/tmp/my results")
    assert demo[demo.index("--out") + 1] == "/tmp/my results/demo"
    bench = _make_dry_run("bench", OUT="/tmp/my results")
    assert all(c[c.index("--out") + 1] == "/tmp/my results/bench" for c in bench)


def test_printed_next_commands_work_with_paths_with_spaces(tmp_path, capsys):
    """The `next:` hint of `sam3d phantom` pasted into a shell gives prepare the same folder."""
    import shlex

    from sam3dlib.cli import build_parser, main
    from sam3dlib.study.inputs import missing_data_message

    out = tmp_path / "my phantoms" / "synapse"
    assert main(["phantom", "synapse", "--out", str(out), "--cases", "2", "--size", "tiny"]) == 0
    hint = capsys.readouterr().out.split("next: ", 1)[1].strip()
    args = build_parser().parse_args(shlex.split(hint)[1:])
    assert str(args.raw) == str(out)
    message = missing_data_message("synapse", tmp_path / "my data")
    route = message.split("without the data: ", 1)[1].split("; ", 1)[0]
    first, second = (shlex.split(part) for part in route.split(" && "))
    assert build_parser().parse_args(second[1:]).out == str(tmp_path / "my data" / "synapse")


def test_seeds_given_as_a_list_on_the_papermill_command_line():
    """`papermill -p seeds "[0, 1]"` hands the notebook the text "[0, 1]"."""
    from sam3dlib.study.notebook_params import ParameterError, as_seeds

    assert as_seeds("seeds", "[0, 1]") == (0, 1)
    with pytest.raises(ParameterError, match=r"got '\[0, x\]'"):
        as_seeds("seeds", "[0, x]")


# ---------------------------------------------------------------- the notebook kernel


@pytest.fixture
def foreign_python3(tmp_path, monkeypatch) -> Path:
    """A Jupyter path whose kernel 'python3' is another Python, one without sam3dlib."""
    python = tmp_path / "other-env" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'sam3dlib'\" >&2\nexit 1\n")
    python.chmod(0o755)
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({"argv": [str(python), "-m", "ipykernel_launcher", "-f",
                                                           "{connection_file}"], "display_name": "Python 3",
                                                  "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return python


def test_a_kernel_that_cannot_import_sam3dlib_is_refused_in_one_line_before_any_work(foreign_python3, tmp_path):
    from sam3dlib.study.kernel import KernelError
    from sam3dlib.study.reproduce import reproduce_table

    out = tmp_path / "results"
    with pytest.raises(KernelError, match=rf"^--kernel python3: its Python {foreign_python3} cannot import sam3dlib "
                                          r"\(ModuleNotFoundError: No module named 'sam3dlib'\)"):
        reproduce_table(1, profile="smoke", data_dir=None, out=out, kernel="python3")
    assert not out.exists()
    with pytest.raises(KernelError, match="no Jupyter kernel of that name"):
        reproduce_table(1, profile="smoke", data_dir=None, out=out, kernel="no-such-kernel")


def test_the_default_kernel_is_the_running_interpreter_whatever_python3_is(foreign_python3):
    import sys

    from jupyter_client.kernelspec import KernelSpecManager

    from sam3dlib.study.kernel import check_kernel, kernel_for

    with kernel_for(None) as name:
        assert name != "python3"
        assert KernelSpecManager().get_kernel_spec(name).argv[0] == sys.executable
        assert check_kernel(name) == sys.executable


def test_a_failed_execution_leaves_no_notebook_that_looks_like_a_result(tmp_path, monkeypatch):
    import papermill

    from sam3dlib.study import reproduce

    def dies_half_way(src, dest, **kwargs):
        Path(dest).write_text("{}")
        raise RuntimeError("kernel died")

    monkeypatch.setattr(papermill, "execute_notebook", dies_half_way)
    nb = tmp_path / "01_table.ipynb"
    nb.write_text("{}")
    (tmp_path / "run").mkdir()
    with pytest.raises(RuntimeError, match="kernel died"):
        reproduce._execute(nb, tmp_path / "run", {}, False)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["01_table.failed.ipynb"]


def test_a_dangling_label_link_is_named_as_such_not_as_a_missing_label(tmp_path, capsys):
    """A label that is a link to a file that is gone: check-data and prepare name the link and its
    target (it used to read "label file missing")."""
    from sam3dlib.cli import main
    from sam3dlib.data.check import check_dataset
    from sam3dlib.data.phantoms import write_phantom

    raw = write_phantom("lung", tmp_path / "raw", n_cases=3, size="tiny")
    label = sorted((raw / "labelsTr").glob("*.nii.gz"))[0]
    label.unlink()
    label.symlink_to(tmp_path / "gone.nii.gz")
    problems = [str(p) for p in check_dataset("lung", raw, expect_all=False)]
    assert any(p.startswith(f"{label}: a link to {tmp_path / 'gone.nii.gz'}") and "dangling link" in p
               for p in problems), problems
    assert not any("label file missing" in p for p in problems), problems
    assert main(["prepare", "lung", "--raw", str(raw), "--out", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "dangling link" in err[-1] and str(label) in err[-1], err[-1]
