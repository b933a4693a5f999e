"""Bad inputs, table-driven: each answered by a clear error naming the file/argument and the
problem, a non-zero exit code (CLI rows run ``sam3dlib.cli.main`` in-process) and no partial
output left behind (no output file of the failed call, no temporary ``.*.tmp`` file anywhere).

A row is ``(name, build)``: ``build(ctx)`` makes the bad input under ``ctx.tmp`` and returns a
:class:`Bad` with the CLI argv (or a library call), the expected exit code (or exception
type), the words the message must contain and the outputs that must not exist afterwards.
"""
from __future__ import annotations

import errno
import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from _fixtures_train import copy_store, tiny_config

from sam3dlib.cli import main

FIRST = "img0001"  # first case id of the tiny Synapse phantom (sorted), a training case


@dataclass
class Bad:
    """What a row runs and expects."""

    argv: list[str] | None = None
    call: Callable[[], object] | None = None
    expect: int | type[BaseException] = 2
    words: tuple[str, ...] = ()
    absent: tuple[Path, ...] = ()  # outputs that must not exist afterwards
    after: Callable[[], None] | None = None  # extra checks


@dataclass
class Ctx:
    tmp: Path
    raw: Path
    store: Path
    run: Path
    sam_tiny: Path
    monkeypatch: pytest.MonkeyPatch
    n: list[int] = field(default_factory=lambda: [0])

    def raw_copy(self) -> Path:
        dest = self.tmp / "raw"
        shutil.copytree(self.raw, dest)
        return dest

    def run_copy(self) -> Path:
        dest = self.tmp / "run"
        shutil.copytree(self.run, dest)
        return dest

    def image(self, case: str = FIRST) -> nib.Nifti1Image:
        return nib.load(self.raw / "img" / f"{case}.nii.gz")

    def label(self, case: str = FIRST) -> nib.Nifti1Image:
        return nib.load(self.raw / "label" / f"label{case[3:]}.nii.gz")

    def save(self, arr: np.ndarray, affine: np.ndarray, name: str, folder: Path | None = None) -> Path:
        path = (folder or self.tmp) / name
        nib.save(nib.Nifti1Image(arr, affine), path)
        return path

    def prepare(self, raw: Path) -> Bad:
        out = self.tmp / "store_out"
        return Bad(argv=["prepare", "synapse", "--raw", str(raw), "--out", str(out)], absent=(out,))

    def predict(self, image: Path | list[Path], run: Path | None = None) -> Bad:
        out = self.tmp / "pred" / "out.nii.gz"
        images = [str(p) for p in (image if isinstance(image, list) else [image])]
        return Bad(argv=["predict", "--run", str(run or self.run), "-i", *images, "-o", str(out),
                         "--device", "cpu", "--no-progress"], absent=(out,))

    def train(self, *sets: str, data: Path | None = None, out: Path | None = None) -> Bad:
        out = out or self.tmp / "train_out"
        argv = ["train", "table1_synapse", "--profile", "smoke", "--data", str(data or self.store), "--out", str(out),
                "--no-evaluate", "--no-progress", "--set", "epochs=1", "--set", "iterations_per_epoch=1",
                "--set", "val_iterations=1", "--set", "patch_size=8,32,32",
                "--set", f"cache_dir={self.tmp / 'cache'}"]
        for s in sets:
            argv += ["--set", s]
        return Bad(argv=argv, absent=(out,))


def _with(bad: Bad, **changes) -> Bad:
    for k, v in changes.items():
        setattr(bad, k, v)
    return bad


# --------------------------------------------------------------------------- row builders


def corrupt_nifti(c: Ctx) -> Bad:
    raw = c.raw_copy()
    bad = raw / "img" / f"{FIRST}.nii.gz"
    bad.write_bytes(np.random.default_rng(0).bytes(3000))
    return _with(c.prepare(raw), words=(str(bad), "cannot read NIfTI"))


def truncated_nifti(c: Ctx) -> Bad:
    src = (c.raw / "img" / f"{FIRST}.nii.gz").read_bytes()
    path = c.tmp / "truncated.nii.gz"
    path.write_bytes(src[: len(src) // 2])
    return _with(c.predict(path), words=(str(path), "cannot read NIfTI"))


def label_shape_mismatch(c: Ctx) -> Bad:
    raw = c.raw_copy()
    lab = c.label()
    path = raw / "label" / f"label{FIRST[3:]}.nii.gz"
    c.save(np.asarray(lab.dataobj)[:-2], lab.affine, path.name, path.parent)
    return _with(c.prepare(raw), words=(str(path), "label shape", "differs from the image"))


def label_affine_mismatch(c: Ctx) -> Bad:
    raw = c.raw_copy()
    lab = c.label()
    aff = lab.affine.copy()
    aff[:3, 3] += 5.0
    path = raw / "label" / f"label{FIRST[3:]}.nii.gz"
    c.save(np.asarray(lab.dataobj), aff, path.name, path.parent)
    return _with(c.prepare(raw), words=(str(path), "affine differs"))


def label_outside_set(c: Ctx) -> Bad:
    raw = c.raw_copy()
    lab = c.label()
    arr = np.asarray(lab.dataobj).copy()
    arr[0, 0, 0] = 20
    path = raw / "label" / f"label{FIRST[3:]}.nii.gz"
    c.save(arr, lab.affine, path.name, path.parent)
    return _with(c.prepare(raw), words=(str(path), "[20]", "label set"))


def nan_intensity(c: Ctx) -> Bad:
    raw = c.raw_copy()
    img = c.image()
    arr = np.asarray(img.dataobj, dtype=np.float32).copy()
    arr[3, 3, 3] = np.nan
    path = raw / "img" / f"{FIRST}.nii.gz"
    c.save(arr, img.affine, path.name, path.parent)
    return _with(c.prepare(raw), words=(str(path), "NaN/inf"))


def inf_intensity(c: Ctx) -> Bad:
    img = c.image()
    arr = np.asarray(img.dataobj, dtype=np.float32).copy()
    arr[2, 2, 2] = np.inf
    path = c.save(arr, img.affine, "inf.nii.gz")
    return _with(c.predict(path), words=(str(path), "NaN/inf"))


def single_slice(c: Ctx) -> Bad:
    img = c.image()
    path = c.save(np.asarray(img.dataobj)[:, :, 4:5], img.affine, "one_slice.nii.gz")
    return _with(c.predict(path), words=(str(path), "single slice"))


def image_2d(c: Ctx) -> Bad:
    img = c.image()
    path = c.save(np.asarray(img.dataobj)[:, :, 4], img.affine, "slice2d.nii.gz")
    return _with(c.predict(path), words=(str(path), "2D image", "3D volume"))


def wrong_modalities(c: Ctx) -> Bad:
    img = c.image()
    arr = np.asarray(img.dataobj)
    path = c.save(np.stack([arr, arr], axis=-1), img.affine, "two_channels.nii.gz")
    return _with(c.predict(path), words=(str(path), "expected 1 channel(s), found 2"))


def sam_checkpoint_not_sam(c: Ctx) -> Bad:
    path = c.tmp / "not_sam.pth"
    torch.save({"backbone.conv1.weight": torch.zeros(3, 3)}, path)
    return _with(c.train(f"encoder_weights={path}"), words=(str(path), "holds no SAM image encoder"))


def sam_checkpoint_wrong_shapes(c: Ctx) -> Bad:
    state = torch.load(c.sam_tiny, weights_only=True)
    key = next(k for k in state if k.endswith("attn.qkv.weight"))
    state[key] = state[key][:-3]
    path = c.tmp / "wrong_shapes.pth"
    torch.save(state, path)
    return _with(c.train(f"encoder_weights={path}"), words=(str(path), "do not fit"))


def sam_checkpoint_other_vit(c: Ctx) -> Bad:
    return _with(c.train(f"encoder_weights={c.sam_tiny}", "encoder=vit_b"),
                 words=(str(c.sam_tiny), "vit_tiny image encoder", "encoder='vit_b'"))


def sam_checkpoint_truncated(c: Ctx) -> Bad:
    data = c.sam_tiny.read_bytes()
    path = c.tmp / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    return _with(c.train(f"encoder_weights={path}"), words=(str(path), "cannot be read", "incomplete"))


def run_checkpoint_not_sam3d(c: Ctx) -> Bad:
    run = c.run_copy()
    best = run / "checkpoints" / "best.pt"
    torch.save({"weights": torch.zeros(2)}, best)
    return _with(c.predict(c.raw / "img" / f"{FIRST}.nii.gz", run), words=(str(best), "not a sam3dlib training checkpoint"))


def run_checkpoint_wrong_shapes(c: Ctx) -> Bad:
    from sam3dlib.modeling.run_checkpoint import load_checkpoint, save_checkpoint

    run = c.run_copy()
    best = run / "checkpoints" / "best.pt"
    state = load_checkpoint(best)
    key = next(k for k, v in state["decoder"].items() if v.ndim == 5)
    state["decoder"][key] = state["decoder"][key][:1]
    save_checkpoint(best, **{k: v for k, v in state.items() if k not in ("format", "rng")})
    return _with(c.predict(c.raw / "img" / f"{FIRST}.nii.gz", run), words=(str(best), "do not fit"))


def run_checkpoint_truncated(c: Ctx) -> Bad:
    run = c.run_copy()
    best = run / "checkpoints" / "best.pt"
    data = best.read_bytes()
    best.write_bytes(data[: len(data) // 3])
    return _with(c.predict(c.raw / "img" / f"{FIRST}.nii.gz", run), words=(str(best), "cannot be read"))


def split_missing_case_train(c: Ctx) -> Bad:
    """A real-data store (not a phantom) that lacks cases its split names: refused, not silently smaller."""
    store = copy_store(c.store, c.tmp / "partial_store")
    meta = json.loads((store / "dataset.json").read_text())
    meta.update(phantom=False, source_root=str(c.tmp / "gone"))
    (store / "dataset.json").write_text(json.dumps(meta))
    return _with(c.train(data=store), words=(str(store), "lacks", "img0003", "--allow-missing-cases"))


def split_missing_case_check(c: Ctx) -> Bad:
    raw = c.raw_copy()
    (raw / "img" / "img0002.nii.gz").unlink()
    (raw / "label" / "label0002.nii.gz").unlink()
    return Bad(argv=["check-data", "synapse", str(raw)], expect=1, words=(str(raw / "img0002"), "img0002", "not found"))


def evaluate_missing_case(c: Ctx) -> Bad:
    from sam3dlib.pipeline import evaluate_run

    run = c.run_copy()
    return Bad(call=lambda: evaluate_run(run, c.store, case_ids=["img0040"], device="cpu", progress=False),
               expect=ValueError, words=("img0040", "not in the store"), absent=(run / "per_case.csv", run / "predictions"))


def unwritable_out_predict(c: Ctx) -> Bad:
    blocker = c.tmp / "file.txt"
    blocker.write_text("a file, not a folder")
    out = blocker / "sub" / "out.nii.gz"
    bad = c.predict(c.raw / "img" / f"{FIRST}.nii.gz")
    bad.argv[bad.argv.index("-o") + 1] = str(out)
    return _with(bad, words=(str(out.parent), "--output folder", "not a folder"), absent=(out,))


def unwritable_out_train(c: Ctx) -> Bad:
    blocker = c.tmp / "file.txt"
    blocker.write_text("a file, not a folder")
    out = blocker / "run"
    return _with(c.train(out=out), words=(str(out), "--out", "not a folder"), absent=(out,))


def unwritable_out_prepare(c: Ctx) -> Bad:
    blocker = c.tmp / "store_file"
    blocker.write_text("a file, not a folder")
    return Bad(argv=["prepare", "synapse", "--raw", str(c.raw), "--out", str(blocker)],
               words=(str(blocker), "--out", "is a file"))


def disk_full_checkpoint(c: Ctx) -> Bad:
    """ENOSPC half-way through the epoch-2 ``latest.pt``: epoch 1's stays intact and loadable."""
    from sam3dlib.modeling import run_checkpoint as checkpointing
    from sam3dlib.modeling.run_checkpoint import load_checkpoint
    from sam3dlib.utils import fileio

    real = checkpointing.atomic_torch_save

    def full_disk_save(path, obj):
        if Path(path).name == "latest.pt" and obj["epoch"] == 2:
            def write(fh):
                buffer = io.BytesIO()
                torch.save(obj, buffer)
                fh.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                fh.flush()
                raise OSError(errno.ENOSPC, "No space left on device")
            return fileio.atomic_write(path, write)
        return real(path, obj)

    c.monkeypatch.setattr(checkpointing, "atomic_torch_save", full_disk_save)
    out = c.tmp / "disk_full_run"
    latest = out / "checkpoints" / "latest.pt"

    def after():
        ck = load_checkpoint(latest)
        assert ck["epoch"] == 1
        assert not (out / "finished.json").exists()

    bad = c.train("epochs=2", out=out)
    return _with(bad, words=(str(latest), "disk is full"), absent=(out / "finished.json",), after=after)


def papermill_wrong_type(c: Ctx) -> Bad:
    from sam3dlib.study.notebook_params import ParameterError, check_params

    return Bad(call=lambda: check_params(dataset="synapse", seed="abc"), expect=ParameterError,
               words=("'seed'", "integer", "abc"))


def bad_override(c: Ctx) -> Bad:
    return _with(c.train("patch_size=8,30,30"), words=("patch_size", "multiples of 16"))


def not_a_store(c: Ctx) -> Bad:
    empty = c.tmp / "empty"
    empty.mkdir()
    return _with(c.train(data=empty), words=(str(empty / "dataset.json"), "not a prepared store"))


ROWS: list[tuple[str, Callable[[Ctx], Bad]]] = [
    ("corrupt NIfTI (prepare)", corrupt_nifti),
    ("truncated NIfTI (predict)", truncated_nifti),
    ("image/label shape mismatch (prepare)", label_shape_mismatch),
    ("image/label affine mismatch (prepare)", label_affine_mismatch),
    ("label outside the label set (prepare)", label_outside_set),
    ("NaN intensity (prepare)", nan_intensity),
    ("inf intensity (predict)", inf_intensity),
    ("single-slice volume (predict)", single_slice),
    ("2D image where 3D expected (predict)", image_2d),
    ("wrong number of modalities (predict)", wrong_modalities),
    ("SAM checkpoint with wrong keys (train)", sam_checkpoint_not_sam),
    ("SAM checkpoint with wrong shapes (train)", sam_checkpoint_wrong_shapes),
    ("SAM checkpoint of another ViT size (train)", sam_checkpoint_other_vit),
    ("truncated SAM checkpoint (train)", sam_checkpoint_truncated),
    ("run checkpoint that is not SAM3D (predict)", run_checkpoint_not_sam3d),
    ("run checkpoint with wrong shapes (predict)", run_checkpoint_wrong_shapes),
    ("truncated run checkpoint (predict)", run_checkpoint_truncated),
    ("split names a missing case (train, real store)", split_missing_case_train),
    ("split names a missing case (check-data)", split_missing_case_check),
    ("evaluation names a missing case (library)", evaluate_missing_case),
    ("unwritable output folder (predict)", unwritable_out_predict),
    ("unwritable output folder (train)", unwritable_out_train),
    ("unwritable output folder (prepare)", unwritable_out_prepare),
    ("disk full during a checkpoint write (train)", disk_full_checkpoint),
    ("papermill parameter of the wrong type (library)", papermill_wrong_type),
    ("bad --set value (train)", bad_override),
    ("--data is not a prepared store (train)", not_a_store),
]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def raw_phantom(tmp_path_factory) -> Path:
    from sam3dlib.data.phantoms import write_phantom

    return write_phantom("synapse", tmp_path_factory.mktemp("bad_raw") / "raw", n_cases=4, size="tiny")


@pytest.fixture(scope="module")
def tiny_run(synapse_store, tmp_path_factory) -> Path:
    """A one-epoch smoke run (enough for ``load_run``)."""
    from sam3dlib.training import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("bad_run")
        cfg = tiny_config(epochs=1, iterations_per_epoch=1, cache_dir=str(root / "cache"))
        return train(cfg, synapse_store, root / "run", progress=False)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def ctx(tmp_path, raw_phantom, synapse_store, tiny_run, sam_vit_tiny_checkpoint, monkeypatch) -> Ctx:
    return Ctx(tmp_path, raw_phantom, synapse_store, tiny_run, Path(sam_vit_tiny_checkpoint), monkeypatch)


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.tmp")]


@pytest.mark.parametrize("name, build", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input(name, build, ctx, capsys):
    torch.set_num_threads(1)
    bad = build(ctx)
    if bad.argv is not None:
        code = main(bad.argv)
        err = capsys.readouterr().err
        assert code == bad.expect, (name, code, err)
        message = err
        assert "Traceback" not in err
    else:
        with pytest.raises(bad.expect) as info:  # type: ignore[arg-type]
            bad.call()
        message = str(info.value)
    for word in bad.words:
        assert word in message, f"{name}: {word!r} missing from the message: {message}"
    for path in bad.absent:
        assert not path.exists(), f"{name}: partial output {path} left behind"
    assert not _temp_files(ctx.tmp), f"{name}: temporary files left: {_temp_files(ctx.tmp)}"
    if bad.after is not None:
        bad.after()


def _bad_input_builders() -> set[str]:
    """Names of this module's functions that build a bad input (``def name(c: Ctx) -> Bad``)."""
    import ast

    tree = ast.parse(Path(__file__).read_text())
    return {f.name for f in tree.body if isinstance(f, ast.FunctionDef) and not f.name.startswith("_")
            and isinstance(f.returns, ast.Name) and f.returns.id == "Bad"}


def test_table_has_every_bad_input_once_and_matches_the_docs():
    """Every bad input written here runs (once), and docs/RELIABILITY.md states the table's size."""
    import re

    builders = [fn.__name__ for _, fn in ROWS]
    assert len({name for name, _ in ROWS}) == len(ROWS) and len(set(builders)) == len(builders)
    assert set(builders) == _bad_input_builders()
    doc = (Path(__file__).resolve().parents[1] / "docs" / "RELIABILITY.md").read_text()
    stated = re.search(r"`tests/test_bad_inputs.py` is a table of (\d+) rows", doc)
    assert stated and int(stated.group(1)) == len(ROWS), "docs/RELIABILITY.md states another number of rows"


# --------------------------------------------------------------------------- handled, not errors


def test_volume_smaller_than_the_crop_is_padded(ctx, tmp_path):
    """A scan smaller than the training crop is zero-padded in prediction (output = input geometry)."""
    torch.set_num_threads(1)
    img = ctx.image()
    arr = np.asarray(img.dataobj, dtype=np.float32)[4:20, 4:20, :5]  # 16 x 16 x 5 voxels < 32 x 32 x 8 crop
    path = ctx.save(arr, img.affine, "small.nii.gz")
    out = tmp_path / "small_pred.nii.gz"
    assert main(["predict", "--run", str(ctx.run), "-i", str(path), "-o", str(out), "--device", "cpu"]) == 0
    pred = nib.load(out)
    assert pred.shape == arr.shape
    np.testing.assert_allclose(pred.affine, img.affine, atol=1e-5)


def test_training_crop_larger_than_the_volumes(ctx, tmp_path):
    """Cached and online training pad volumes smaller than the crop (here 24 x 64 x 64 > 16 x 48 x 48)."""
    from sam3dlib.modeling.run_checkpoint import load_checkpoint
    from sam3dlib.training import train

    torch.set_num_threads(1)
    for mode in ("cached", "online"):
        cfg = tiny_config(epochs=1, iterations_per_epoch=1, patch_size=(24, 64, 64), encoder_mode=mode,
                          cache_dir=str(tmp_path / "cache"))
        run = train(cfg, ctx.store, tmp_path / mode, progress=False)
        ck = load_checkpoint(run / "checkpoints" / "latest.pt")
        assert all(torch.isfinite(v).all() for v in ck["decoder"].values() if v.is_floating_point())


@pytest.mark.parametrize("change", ["crop", "checkpoint"])
def test_cache_of_another_checkpoint_or_crop_is_rebuilt(ctx, tmp_path, change):
    """Features cached with another crop or encoder checkpoint are never reused."""
    from sam3dlib.data.store import PreparedDataset, case_paths
    from sam3dlib.modeling.encoders import save_random_sam_weights
    from sam3dlib.modeling.factory import build_model
    from sam3dlib.training.feature_cache import FeatureCache, cache_settings

    torch.set_num_threads(1)
    store = PreparedDataset(ctx.store)
    cases = store.case_ids[:1]
    cfg_a = tiny_config(encoder_weights=str(ctx.sam_tiny))
    if change == "crop":
        cfg_b = cfg_a.replace(patch_size=(8, 48, 48))
    else:
        other = save_random_sam_weights(tmp_path / "other_tiny.pth", "vit_tiny", seed=1)
        cfg_b = cfg_a.replace(encoder_weights=str(other))
    model_a, model_b = build_model(cfg_a, store.spec), build_model(cfg_b, store.spec)
    cache_a = FeatureCache(tmp_path / "cache", cache_settings(cfg_a, model_a))
    cache_b = FeatureCache(tmp_path / "cache", cache_settings(cfg_b, model_b))
    assert cache_a.root != cache_b.root
    assert cache_a.build(store, cases, model_a, progress=False) == cases
    # someone copies the old entries into the new setting's folder: detected and rebuilt
    shutil.copytree(cache_a.root, cache_b.root)
    image = case_paths(store.root, cases[0])["image"]
    assert not cache_b.is_current(cases[0], image)
    with pytest.raises(ValueError, match="other settings"):
        cache_b.entry(cases[0])
    assert cache_b.build(store, cases, model_b, progress=False) == cases
    assert cache_b.entry(cases[0]).features.shape[0] == len(cache_b.tiles_for(store.image(cases[0]).shape[2:])[0])


# --------------------------------------------------------------------------- never overwrite


def test_finished_run_is_not_overwritten_without_force(ctx, capsys):
    """``sam3d train --out DIR``: a finished run is refused (even with --resume it is left as is);
    --force starts over (only the run's own files go); an unfinished run needs --resume."""
    from sam3dlib.modeling.run_checkpoint import load_checkpoint
    from sam3dlib.training import train

    torch.set_num_threads(1)
    run = ctx.run_copy()
    (run / "notes.txt").write_text("mine")
    latest = run / "checkpoints" / "latest.pt"
    before = latest.read_bytes()
    argv = ctx.train(out=run).argv

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(run) in err and "finished" in err and "--force" in err
    assert latest.read_bytes() == before

    assert main(argv + ["--resume"]) == 0  # nothing left to do: untouched
    assert latest.read_bytes() == before
    assert main(argv + ["--resume", "--force"]) == 2
    assert "exclude each other" in capsys.readouterr().err

    stamp = latest.stat().st_mtime_ns
    assert main(argv + ["--force"]) == 0
    assert latest.stat().st_mtime_ns != stamp and load_checkpoint(latest)["epoch"] == 1
    assert (run / "notes.txt").read_text() == "mine" and (run / "finished.json").is_file()

    unfinished = ctx.tmp / "unfinished"
    train(tiny_config(epochs=2, iterations_per_epoch=1, cache_dir=str(ctx.tmp / "cache")), ctx.store, unfinished,
          progress=False, max_epochs=1)
    assert not (unfinished / "finished.json").exists()
    argv = ctx.train("epochs=2", out=unfinished).argv
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unfinished" in err and "--resume" in err
    assert main(argv + ["--resume"]) == 0
    assert load_checkpoint(unfinished / "checkpoints" / "latest.pt")["epoch"] == 2
    assert (unfinished / "finished.json").is_file()


def test_atomic_writes_get_the_mode_open_would_give(tmp_path):
    """mkstemp makes 0600 files: results written atomically were unreadable to other users."""
    import os

    from sam3dlib.utils.fileio import atomic_write_json

    old = os.umask(0o022)
    try:
        path = atomic_write_json(tmp_path / "r.json", {"a": 1}) or tmp_path / "r.json"
        os.umask(0o077)
        private = atomic_write_json(tmp_path / "p.json", {"a": 1}) or tmp_path / "p.json"
    finally:
        os.umask(old)
    assert (os.stat(path).st_mode & 0o777) == 0o644
    assert (os.stat(private).st_mode & 0o777) == 0o600
