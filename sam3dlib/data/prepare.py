"""``sam3d prepare``: raw layout (or nnU-Net v1 preprocessed folder) -> canonical prepared store.

Two passes, as nnU-Net v1's planning + preprocessing:

1. *analysis* over all labelled cases found: spacings and cropped shapes (-> target spacing by
   nnU-Net's ``ExperimentPlanner3D_v21`` rule unless given), CT foreground intensity statistics
   (every 10th foreground voxel of the cropped images, pooled over all labelled cases, exactly
   as nnU-Net did, which for Synapse includes the 12 test cases), and the MRI nonzero-mask rule
   (use the mask for a channel iff cropping shrinks the median case by more than 25 %);
   written to ``dataset.json`` first, so an interrupted run resumes with the same settings;
2. *per case* :func:`~sam3dlib.data.preprocess.preprocess_case`, each output written atomically,
   the properties JSON last; finished cases are skipped on a rerun.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sam3dlib.data.io import DataFileError, affine_geometry, axcodes_of, load_label_nifti
from sam3dlib.data.planning import (
    ANALYSIS_SAMPLE_EVERY,
    NUM_FOLDS,
    Fingerprint,
    PlannerSettings,
    check_target_spacing,
    crop_size_ratio,
    ct_statistics,
    describe_plan,
    kfold_splits,
    make_plan,
    target_spacing_v21,
    use_nonzero_mask,
)
from sam3dlib.data.preprocess import canonical_orientation, crop_case, preprocess_case
from sam3dlib.data.readers import (
    RawCase,
    find_raw_cases,
    load_pickle,
    nnunet_v1_plans,
    nnunet_v1_splits,
)
from sam3dlib.data.specs import get_spec
from sam3dlib.data.splits import check_folds, check_num_folds, labelled_split_of
from sam3dlib.data.store import (
    CASES_DIR,
    EXPECTED_CASES_KEY,
    META_FILE,
    SPLITS_FILE,
    PreparedDataset,
    case_paths,
    read_meta,
)
from sam3dlib.data.user_dataset import UserDataset
from sam3dlib.utils.errors import ConfigError, MissingFileError
from sam3dlib.utils.fileio import atomic_save_npy, atomic_write_json
from sam3dlib.utils.pool import map_in_processes
from sam3dlib.utils.shell import shell_command

ORIENTATION_SOURCE = "the axis codes most cases have (ties: the first case's); others are flipped/permuted to it"


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("sam3dlib")
    except Exception:  # noqa: BLE001 - not installed (running from a checkout)
        return "unknown"


def _analyse_one(args) -> dict:
    """Fingerprint of one case: spacing, shapes, foreground samples of ``ct_channels``, voxels per label.

    ``declared`` (user datasets): the ``dataset.json`` whose labels the label file must hold.
    ``orientation``: the store's canonical axis codes (the case is brought to them).
    """
    case, num_channels, ct_channels, label_values, declared, orientation = args
    if declared is not None and case.label is not None:
        check_declared_labels(case.label, label_values, declared)
    img, lab, props = crop_case(case.images, case.label, num_channels, label_values, orientation)
    out = {"case_id": case.case_id, "spacing": props["original_spacing"], "shape_after_crop": props["shape_after_crop"],
           "shape": [props["original_shape"][t] for t in props["transpose"]]}
    if lab is not None:
        if ct_channels:
            out["fg"] = {c: img[c][lab > 0][::ANALYSIS_SAMPLE_EVERY] for c in ct_channels}
        out["class_voxels"] = np.bincount(lab.ravel(), minlength=max(label_values) + 1 if label_values else 1)
    return out


def check_declared_labels(label_path: Path, label_values, declared: Path) -> None:
    """The label file holds integers only, all of them declared in ``declared`` (a ``dataset.json``):
    the one label reader's rule (:func:`sam3dlib.data.io.load_label_nifti`), naming ``declared``.

    Raises:
        DataFileError: naming the label file, the offending values and ``declared``.
    """
    try:
        load_label_nifti(label_path, label_values)
    except DataFileError as exc:
        raise DataFileError(f"{exc} (labels declared in {declared})") from None


def _imap(fn, items, num_workers: int, desc: str, progress: bool = True):
    """``fn`` over ``(case, ...)`` items in order, in ``num_workers`` processes; a worker that dies
    (out of memory) stops it with one line naming the case (:func:`~sam3dlib.utils.pool.map_in_processes`)."""
    return map_in_processes(fn, items, num_workers, desc, progress, name=lambda args: args[0].case_id, what="case")


def analyse(dataset: str, cases: Sequence[RawCase], num_workers: int = 0,
            target_spacing: Sequence[float] | str | None = None) -> dict:
    """Pass 1: the dataset-level settings (``dataset.json`` content) for ``cases``."""
    spec = get_spec(dataset)
    ct = spec.modality == "CT"
    labelled = [c for c in cases if c.label is not None]
    if not labelled:
        raise DataFileError(f"{dataset}: none of the {len(cases)} cases has a label file; cannot compute statistics")
    orientation = canonical_orientation([c.images[0] for c in cases])
    res = list(_imap(_analyse_one, [(c, spec.num_channels, (0,) if ct else (), tuple(spec.labels), None, orientation)
                                    for c in labelled], num_workers, f"analyse {dataset}"))
    spacings = np.array([r["spacing"] for r in res])
    crop_shapes = np.array([r["shape_after_crop"] for r in res])
    if target_spacing is None:
        target = target_spacing_v21(spacings, crop_shapes)
        t_src = f"nnU-Net v1 ExperimentPlanner3D_v21 rule on {len(res)} cases"
    elif isinstance(target_spacing, str):
        if target_spacing != "spec" or spec.target_spacing is None:
            raise ConfigError(f"target_spacing={target_spacing!r}: use 'spec' (only where datasets.json has one) "
                             "or three numbers z y x")
        target, t_src = list(spec.target_spacing), "datasets.json (spec)"
    else:
        target = check_target_spacing(target_spacing)
        t_src = "given by the user"
    if ct:
        norm = ct_statistics(np.concatenate([r["fg"][0] for r in res if "fg" in r] or [np.zeros(1)]), len(res))
    else:
        shapes = np.array([r["shape"] for r in res])
        norm = {"scheme": "nonCT", "use_nonzero_mask": [use_nonzero_mask(crop_shapes, shapes)] * spec.num_channels,
                "median_crop_size_ratio": crop_size_ratio(crop_shapes, shapes)}
    return {"dataset": spec.name, "num_channels": spec.num_channels, "num_classes": spec.num_classes,
            "labels": {str(k): v for k, v in spec.labels.items()}, "target_spacing": target,
            "target_spacing_source": t_src, "normalization": norm, "orientation": orientation,
            "orientation_source": ORIENTATION_SOURCE, "sam3dlib_version": _version()}


def _prepare_one(args) -> str:
    case, meta, out = args
    paths = case_paths(out, case.case_id)
    img, lab, props = preprocess_case(list(case.images), meta, case.label)
    props["case_id"] = case.case_id
    atomic_save_npy(paths["image"], img)
    if lab is not None:
        atomic_save_npy(paths["label"], lab)
    atomic_write_json(paths["properties"], props)
    return case.case_id


def unlabelled_split_cases(dataset: str, cases: Sequence[RawCase]) -> dict[str, str]:
    """``{case_id: split}`` of the cases the shipped split lists as labelled that have no label file."""
    return labelled_split_of(dataset, [c.case_id for c in cases if c.label is None and c.layout != "nnunet_v1"])


def missing_labels_message(missing: dict[str, str]) -> str:
    """'N case(s) of the split without a label: id (train), ...' for an error or a warning."""
    listed = ", ".join(f"{c} ({s})" for c, s in sorted(missing.items())[:10])
    return f"{len(missing)} case(s) the split lists as labelled have no label: {listed}{' ...' if len(missing) > 10 else ''}"


# ---------------------------------------------------------------- nnU-Net v1 preprocessed input


def _itk_affine(origin, spacing, direction) -> np.ndarray:
    """SimpleITK (LPS) origin/spacing/direction of an (x, y, z) image -> NIfTI (RAS) affine."""
    d = np.asarray(direction, float).reshape(3, 3)
    aff = np.eye(4)
    aff[:3, :3] = d * np.asarray(spacing, float)[None, :]
    aff[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff


def _nnunet_meta(dataset: str, cases: Sequence[RawCase]) -> dict:
    spec = get_spec(dataset)
    stage = Path(cases[0].extra["stage_dir"])
    plans = nnunet_v1_plans(stage)
    first = load_pickle(Path(cases[0].extra["properties"]))
    orientation = axcodes_of(_itk_affine(first["itk_origin"], first["itk_spacing"], first["itk_direction"]))
    target = [float(x) for x in first["spacing_after_resampling"]]
    norm: dict = {"scheme": "unknown", "note": f"no plans file next to {stage}; cannot preprocess new scans"}
    transpose_fwd = [0, 1, 2]
    if plans is not None:
        schemes = plans.get("normalization_schemes", {})
        ip = plans.get("dataset_properties", {}).get("intensityproperties") or {}
        transpose_fwd = list(plans.get("transpose_forward", [0, 1, 2]))
        if schemes.get(0) == "CT" and 0 in ip:
            norm = {"scheme": "CT", **{k: float(ip[0][k]) for k in ("percentile_00_5", "percentile_99_5", "mean", "sd")}}
        elif schemes:
            mask = plans.get("use_mask_for_norm", {})
            norm = {"scheme": "nonCT", "use_nonzero_mask": [bool(mask.get(c, False)) for c in range(spec.num_channels)]}
        norm["computed_on"] = "nnU-Net v1 plans file"
    splits = nnunet_v1_splits(stage)
    meta = {"dataset": spec.name, "num_channels": spec.num_channels, "num_classes": spec.num_classes,
            "labels": {str(k): v for k, v in spec.labels.items()}, "target_spacing": target,
            "target_spacing_source": f"spacing_after_resampling of {stage.name}", "normalization": norm,
            "nnunet_transpose_forward": transpose_fwd, "orientation": orientation,
            "orientation_source": "the first case's (nnU-Net v1 does not reorient; new scans are brought to it)",
            "sam3dlib_version": _version()}
    if splits:
        meta["nnunet_splits_final_fold0"] = {k: sorted(map(str, v)) for k, v in splits[0].items()}
        meta["nnunet_splits_final_note"] = ("ignored: the authors' trainers overwrite fold 0 with the hard-coded "
                                            "lists shipped in splits.json")
    return meta


def _convert_nnunet_one(args) -> str:
    case, meta, out = args
    src = case.images[0]
    try:
        arr = np.load(src)["data"] if src.suffix == ".npz" else np.load(src, mmap_mode="r")
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise DataFileError(f"{src}: cannot read nnU-Net array ({type(exc).__name__}: {exc})") from exc
    if arr.ndim != 4 or arr.shape[0] != meta["num_channels"] + 1:
        raise DataFileError(f"{src}: expected (channels + seg) x Z x Y x X with {meta['num_channels'] + 1} "
                         f"channels, got shape {arr.shape}")
    p = load_pickle(Path(case.extra["properties"]))
    img = np.asarray(arr[:-1], dtype=np.float32)
    seg = np.asarray(arr[-1])
    lab = np.where(seg < 0, 0, seg).astype(np.uint8)
    tf = list(meta.get("nnunet_transpose_forward", [0, 1, 2]))
    sitk_zyx = list(p["original_size_of_raw_data"])
    affine = _itk_affine(p["itk_origin"], p["itk_spacing"], p["itk_direction"])
    props = {"case_id": case.case_id, "original_shape": [int(s) for s in sitk_zyx[::-1]],
             "original_affine": affine.tolist(), "nifti_header": affine_geometry(affine),
             "original_orientation": axcodes_of(affine), "orientation": axcodes_of(affine),
             "original_spacing": [float(p["original_spacing"][t]) for t in tf],
             "transpose": [[2, 1, 0][t] for t in tf],
             "crop_bbox": [[int(a), int(b)] for a, b in (p["crop_bbox"][t] for t in tf)],
             "shape_after_crop": [int(p["size_after_cropping"][t]) for t in tf],
             "spacing_after_resampling": [float(s) for s in p["spacing_after_resampling"]],
             "shape_after_resampling": list(img.shape[1:]),
             "separate_axis": None, "image_files": [str(x) for x in p.get("list_of_data_files", [])],
             "label_file": str(p.get("seg_file")) if p.get("seg_file") else None, "nnunet_source": str(src)}
    from sam3dlib.data.preprocess import separate_axis
    props["separate_axis"] = separate_axis(props["original_spacing"], props["spacing_after_resampling"])
    paths = case_paths(out, case.case_id)
    atomic_save_npy(paths["image"], img)
    atomic_save_npy(paths["label"], lab)
    atomic_write_json(paths["properties"], props)
    return case.case_id


# ---------------------------------------------------------------- entry point


def prepare_dataset(dataset: str, raw: Path, out: Path, num_workers: int = 0,
                    target_spacing: Sequence[float] | str | None = None, layout: str | None = None,
                    allow_missing_labels: bool = False) -> PreparedDataset:
    """Convert ``raw`` into the prepared store ``out`` (resumable).

    Args:
        dataset: ``synapse``, ``acdc``, ``lung`` or ``brats``.
        raw: raw data root (BTCV, ACDC, MSD/nnFormer layout) or nnU-Net v1 preprocessed task/stage folder.
        out: store folder (created).
        num_workers: worker processes (0 = in this process).
        target_spacing: ``None`` (nnU-Net v21 rule on the data, what the code did), ``"spec"``
            (the value recorded in datasets.json) or (z, y, x) in mm. Ignored when resuming or
            reading an nnU-Net v1 folder.
        layout: force a layout instead of autodetecting it.
        allow_missing_labels: prepare cases that the shipped split lists as labelled (train or
            test) although their label file is missing; they are recorded in ``dataset.json``
            (``unlabelled_split_cases``). Without it such a case is an error.

    Returns:
        The :class:`PreparedDataset` at ``out``.
    """
    from sam3dlib.data.store import check_store_target
    from sam3dlib.utils.fileio import check_output_dir

    spec = get_spec(dataset)
    raw, out = Path(raw), Path(out)
    check_output_dir(out, "prepared store folder (--out)")
    check_store_target(out)
    cases = find_raw_cases(spec.name, raw, layout)
    layout = cases[0].layout
    missing_img = [c for c in cases if not c.images]
    if missing_img:
        raise MissingFileError(f"{raw}: no image file for case(s) {', '.join(c.case_id for c in missing_img[:5])}; "
                                f"run `{shell_command('sam3d', 'check-data', spec.name, raw)}`")
    unlabelled = unlabelled_split_cases(spec.name, cases)
    if unlabelled and not allow_missing_labels:
        raise MissingFileError(f"{raw}: {missing_labels_message(unlabelled)}; restore the label file(s), or pass "
                                "--allow-missing-labels (allow_missing_labels=True) to prepare them unlabelled")
    meta_path = out / META_FILE
    if meta_path.is_file():
        meta = read_meta(out)
        if meta.get("dataset") != spec.name:
            raise DataFileError(f"{meta_path}: store is for {meta.get('dataset')!r}, not {spec.name!r}; use another --out")
    else:
        meta = _nnunet_meta(spec.name, cases) if layout == "nnunet_v1" else analyse(spec.name, cases, num_workers, target_spacing)
        meta["source_layout"] = layout
        meta["source_root"] = str(raw.resolve())
        meta["phantom"] = (raw / "PHANTOM.json").is_file()
        meta["unlabelled_split_cases"] = unlabelled
        meta[EXPECTED_CASES_KEY] = sorted(c.case_id for c in cases)
        atomic_write_json(meta_path, meta)
    (out / CASES_DIR).mkdir(parents=True, exist_ok=True)
    todo = [c for c in cases if not case_paths(out, c.case_id)["properties"].is_file()]
    fn = _convert_nnunet_one if layout == "nnunet_v1" else _prepare_one
    for _ in _imap(fn, [(c, meta, out) for c in todo], num_workers, f"prepare {spec.name}"):
        pass
    return PreparedDataset(out)


# ---------------------------------------------------------------- a user's dataset (MSD / nnU-Net v2)


def plan_user_dataset(raw: Path, settings: PlannerSettings, overrides: dict | None = None,
                      num_workers: int = 0, progress: bool = True) -> tuple[dict, list[dict], UserDataset]:
    """Read and check every case of a user's raw folder, then plan (nothing is written).

    Returns:
        ``(dataset-level meta with the plan, folds, the UserDataset)``.

    Raises:
        DatasetFormatError / DataFileError: the first bad file, named.
        ConfigError: a plan override that does not fit the data (e.g. ``num_folds``).
    """
    from sam3dlib.data.planning import is_ct
    from sam3dlib.data.user_dataset import load_user_dataset

    ds = load_user_dataset(raw)
    if "num_folds" in (overrides or {}):
        check_num_folds(int(overrides["num_folds"]), len(ds.cases), f"{raw} (--plan num_folds)")
    if ds.splits is None:  # before reading any voxel: too few cases for any split
        check_num_folds(NUM_FOLDS, len(ds.cases), str(raw), explicit=False)
    ct_channels = tuple(c for c, n in enumerate(ds.channel_names) if is_ct(n))
    chosen = (overrides or {}).get("normalization")
    if chosen is not None:
        ct_channels = tuple(c for c, how in enumerate(chosen) if how == "ct")
    values = tuple(sorted(ds.labels))
    orientation = canonical_orientation([c.images[0] for c in ds.cases])
    jobs = [(c, len(ds.channel_names), ct_channels, values, ds.root / META_FILE, orientation) for c in ds.cases]
    res = list(_imap(_analyse_one, jobs, num_workers, f"analyse {ds.name}", progress))
    fp = Fingerprint.from_cases(res, len(values))
    meta = make_plan(ds.name, ds.channel_names, ds.labels, fp, settings, overrides, ds.label_regions)
    if ds.splits is not None:
        folds = [{k: list(v) for k, v in f.items()} for f in ds.splits]
        meta["split_source"] = f"{ds.root / 'splits_final.json'} ({len(folds)} folds)"
    else:
        folds = kfold_splits(ds.case_ids, int((overrides or {}).get("num_folds", NUM_FOLDS)))
        meta["split_source"] = f"seeded {len(folds)}-fold split (sam3dlib.data.planning.kfold_splits)"
    folds = check_folds(folds, ds.case_ids, meta["split_source"])
    meta.update(source_layout=ds.layout, source_root=str(Path(raw).resolve()), channel_names=list(ds.channel_names),
                orientation=orientation, orientation_source=ORIENTATION_SOURCE, sam3dlib_version=_version())
    return meta, folds, ds


#: ``dataset.json`` key of a user store: what its raw files were when it was prepared
SOURCE_FILES_KEY = "source_files"


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [int(st.st_size), int(st.st_mtime_ns)]


def source_record(ds: UserDataset) -> dict:
    """What the raw files of ``ds`` are now: size and mtime (ns) of each case's image and label
    files, SHA-256 of ``dataset.json`` and ``splits_final.json`` (``None`` when absent).

    Returns:
        ``{"dataset_json_sha256": ..., "splits_sha256": ..., "cases": {id: {relative path: [size, mtime_ns]}}}``.
    """
    import hashlib


    def sha(p: Path) -> str | None:
        return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None

    cases = {c.case_id: {str(Path(os.path.relpath(f, ds.root))): _stamp(f) for f in (*c.images, c.label) if f is not None}
             for c in ds.cases}
    return {"dataset_json_sha256": sha(ds.root / META_FILE), "splits_sha256": sha(ds.root / SPLITS_FILE),
            "cases": cases}


def source_changes(recorded: dict, current: dict) -> list[str]:
    """What differs between two :func:`source_record` results ("case X changed", "dataset.json changed" ...)."""
    changes = [f"{name} changed" for key, name in (("dataset_json_sha256", "dataset.json"),
                                                    ("splits_sha256", "splits_final.json"))
               if recorded.get(key) != current.get(key)]
    old, new = recorded.get("cases", {}), current.get("cases", {})
    changes += [f"case {c} added" for c in sorted(set(new) - set(old))]
    changes += [f"case {c} removed" for c in sorted(set(old) - set(new))]
    changes += [f"case {c} changed" for c in sorted(set(old) & set(new)) if old[c] != new[c]]
    return changes


def _resume_user_store(raw: Path, out: Path, overrides: dict | None) -> tuple[dict, Sequence[RawCase]]:
    """The stored plan and the raw cases of an existing store, refused if the raw data changed."""
    from sam3dlib.data.specs import is_user_meta
    from sam3dlib.data.user_dataset import load_user_dataset

    meta_path = out / META_FILE
    meta = read_meta(out)
    if not is_user_meta(meta) or meta.get("source_root") != str(raw.resolve()):
        raise DataFileError(f"{meta_path}: this store was prepared from {meta.get('source_root')!r}, not {raw}; "
                            "use another --out, or --force to rebuild it from this folder")
    if overrides:
        raise ConfigError(f"{meta_path}: the store already has a plan; plan settings apply to a new store only "
                          "(use another --out, or --force to rebuild it)")
    ds = load_user_dataset(raw)
    if SOURCE_FILES_KEY in meta:  # stores of sam3dlib <= 0.x lack the record: resumed as they are
        changes = source_changes(meta[SOURCE_FILES_KEY], source_record(ds))
        if changes:
            listed = "; ".join(changes[:8]) + (f"; ... ({len(changes)} in all)" if len(changes) > 8 else "")
            raise DataFileError(f"{raw}: the raw data changed since {out} was prepared ({listed}); prepare into a "
                                "new --out, or pass --force to rebuild the store from scratch")
    return meta, ds.cases


def _new_user_store(raw: Path, out: Path, settings: PlannerSettings, overrides: dict | None, num_workers: int,
                    progress: bool) -> tuple[dict, Sequence[RawCase]]:
    """Plan ``raw`` and write the store's ``splits_final.json`` and ``dataset.json`` (cases follow)."""

    meta, folds, ds = plan_user_dataset(raw, settings, overrides, num_workers, progress)
    meta[SOURCE_FILES_KEY] = source_record(ds)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / SPLITS_FILE, folds)
    atomic_write_json(out / META_FILE, meta)
    return meta, ds.cases


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace the folder ``out`` (if any) by ``tmp`` with renames; the old store is deleted last."""
    import shutil

    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def prepare_user_dataset(raw: str | Path, out: str | Path, settings: PlannerSettings, overrides: dict | None = None,
                         num_workers: int = 0, progress: bool = True, force: bool = False) -> PreparedDataset:
    """``sam3d prepare --raw DIR --out data/NAME``: plan and prepare a user's MSD or nnU-Net v2 dataset.

    Every case is read and checked before anything is written (a bad file leaves ``out``
    untouched); then ``splits_final.json`` and ``dataset.json`` (with the plan and the raw
    files' :func:`source_record`) are written, then the cases. A rerun resumes an interrupted
    prepare with the stored plan; it is refused when the raw data changed since (a case's
    files added, removed or modified, ``dataset.json`` or ``splits_final.json`` edited) or
    plan ``overrides`` are given. ``force`` rebuilds the store from scratch in a temporary
    folder beside ``out`` and swaps it in when complete (a failure leaves ``out`` as it was).

    Args:
        raw: the raw folder (``dataset.json``, ``imagesTr/``, ``labelsTr/``).
        out: the store folder (absent, empty, or a store).
        settings: memory model and budget of the planner.
        overrides: plan values to impose (:data:`sam3dlib.data.planning.OVERRIDABLE`).
        num_workers: worker processes (0 = in this process).
        progress: progress bars.
        force: rebuild ``out`` from scratch even if it is a store.

    Raises:
        DatasetFormatError, DataFileError, ConfigError: bad input, naming the file or setting;
            a store from another raw folder or from changed raw data.
        OutputError: ``out`` cannot be written, or is a non-empty folder that is not a store.
    """
    import tempfile

    from sam3dlib.data.store import check_store_target
    from sam3dlib.utils.fileio import check_output_dir

    raw, out = Path(raw), Path(out)
    check_output_dir(out, "prepared store folder (--out)")
    check_store_target(out)
    if force:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".building", dir=out.parent))
        try:
            meta, cases = _new_user_store(raw, tmp, settings, overrides, num_workers, progress)
            _prepare_cases(cases, meta, tmp, num_workers, progress)
            _swap_in(tmp, out)
        finally:
            if tmp.exists():
                import shutil
                shutil.rmtree(tmp, ignore_errors=True)
        return PreparedDataset(out)
    if (out / META_FILE).is_file():
        meta, cases = _resume_user_store(raw, out, overrides)
    else:
        meta, cases = _new_user_store(raw, out, settings, overrides, num_workers, progress)
    _prepare_cases(cases, meta, out, num_workers, progress)
    return PreparedDataset(out)


def _prepare_cases(cases: Sequence[RawCase], meta: dict, out: Path, num_workers: int, progress: bool) -> None:
    """Preprocess the cases not yet complete in ``out`` (a case is complete when its properties exist)."""
    (out / CASES_DIR).mkdir(parents=True, exist_ok=True)
    todo = [c for c in cases if not case_paths(out, c.case_id)["properties"].is_file()]
    for _ in _imap(_prepare_one, [(c, meta, out) for c in todo], num_workers, f"prepare {meta['dataset']}", progress):
        pass


__all__ = ["describe_plan", "plan_user_dataset", "prepare_dataset", "prepare_user_dataset", "target_spacing_v21"]
