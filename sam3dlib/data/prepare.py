"""``sam3d prepare``: a raw folder plus a plan -> the canonical prepared store (one road for every dataset).

:func:`prepare_dataset` is the one entry point. The plan comes from a :class:`PlanSource`:

* :class:`CommittedPlan` (``dataset`` names a paper dataset): its committed plan
  (:mod:`sam3dlib.data.plans`), raw layouts BTCV / ACDC / MSD or an nnU-Net v1 preprocessed
  folder, and the statistics nnU-Net v1 measured on the data;
* :class:`PlannedFromData` (``dataset=None``): a user's MSD / nnU-Net v2 folder, planned by
  :func:`sam3dlib.data.planning.make_plan`, with its folds written to ``splits_final.json``.

Then the same two passes for every dataset, as nnU-Net's planning + preprocessing:

1. *analysis* over all labelled cases found: spacings and cropped shapes (-> target spacing by
   nnU-Net's ``ExperimentPlanner3D_v21`` rule unless given), CT foreground intensity statistics
   (every 10th foreground voxel of the cropped images, pooled over all labelled cases, exactly
   as nnU-Net did, which for Synapse includes the 12 test cases), and the MRI nonzero-mask rule
   (use the mask for a channel iff cropping shrinks the median case by more than 25 %);
   written to ``dataset.json`` (with the plan) first, so an interrupted run resumes with the
   same settings;
2. *per case* :func:`~sam3dlib.data.preprocess.preprocess_case`, each output written atomically,
   the properties JSON last; finished cases are skipped on a rerun.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sam3dlib.data import nnunet_v1
from sam3dlib.data.io import DataFileError, load_label_nifti
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
from sam3dlib.data.plans import committed_plan
from sam3dlib.data.preprocess import canonical_orientation, crop_case, preprocess_case
from sam3dlib.data.readers import RawCase, find_raw_cases
from sam3dlib.data.specs import PLAN_KEY, get_spec
from sam3dlib.data.splits import check_folds, check_num_folds, labelled_split_of
from sam3dlib.data.store import (
    CASES_DIR,
    EXPECTED_CASES_KEY,
    META_FILE,
    SPLITS_FILE,
    PreparedDataset,
    case_paths,
    check_store_target,
    read_meta,
)
from sam3dlib.data.user_dataset import UserDataset, load_user_dataset
from sam3dlib.utils.errors import ConfigError, MissingFileError
from sam3dlib.utils.fileio import atomic_save_npy, atomic_write_json, check_output_dir
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
            "orientation_source": ORIENTATION_SOURCE, "sam3dlib_version": _version(),
            PLAN_KEY: committed_plan(spec.name)}


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



# ---------------------------------------------------------------- where a store's plan comes from


class CommittedPlan:
    """A paper dataset: its committed plan, its raw layouts (or an nnU-Net v1 folder), and the
    statistics measured on the data as nnU-Net v1 did (:func:`analyse`).

    Args:
        dataset: ``synapse``, ``acdc``, ``lung`` or ``brats``.
        target_spacing: ``None`` (nnU-Net v21 rule on the data), ``"spec"`` (datasets.json's
            value) or (z, y, x) mm. Ignored when resuming or reading an nnU-Net v1 folder.
        layout: force a raw layout instead of autodetecting it.
        allow_missing_labels: prepare cases that the shipped split lists as labelled although
            their label file is missing (recorded in ``dataset.json`` ``unlabelled_split_cases``).
    """

    def __init__(self, dataset: str, target_spacing: Sequence[float] | str | None = None,
                 layout: str | None = None, allow_missing_labels: bool = False) -> None:
        self.name = get_spec(dataset).name
        self.target_spacing, self.layout, self.allow_missing_labels = target_spacing, layout, allow_missing_labels

    def find_cases(self, raw: Path) -> list[RawCase]:
        """The raw cases, checked: each has an image; the split's labelled cases have labels."""
        cases = find_raw_cases(self.name, raw, self.layout)
        missing_img = [c for c in cases if not c.images]
        if missing_img:
            raise MissingFileError(f"{raw}: no image file for case(s) {', '.join(c.case_id for c in missing_img[:5])}; "
                                   f"run `{shell_command('sam3d', 'check-data', self.name, raw)}`")
        self.unlabelled = unlabelled_split_cases(self.name, cases)
        if self.unlabelled and not self.allow_missing_labels:
            raise MissingFileError(f"{raw}: {missing_labels_message(self.unlabelled)}; restore the label file(s), or "
                                   "pass --allow-missing-labels (allow_missing_labels=True) to prepare them unlabelled")
        return cases

    def new_store(self, raw: Path, cases: Sequence[RawCase], out: Path, num_workers: int, progress: bool) -> dict:
        """Analyse the cases and write ``out/dataset.json`` (with the committed plan)."""
        layout = cases[0].layout
        meta = (nnunet_v1.nnunet_meta(self.name, cases, _version()) | {PLAN_KEY: committed_plan(self.name)}
                if layout == nnunet_v1.LAYOUT else analyse(self.name, cases, num_workers, self.target_spacing))
        meta["source_layout"] = layout
        meta["source_root"] = str(raw.resolve())
        meta["phantom"] = (raw / "PHANTOM.json").is_file()
        meta["unlabelled_split_cases"] = self.unlabelled
        meta[EXPECTED_CASES_KEY] = sorted(c.case_id for c in cases)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / META_FILE, meta)
        return meta

    def resume(self, raw: Path, out: Path) -> dict:
        """The stored ``dataset.json``, refused when it is of another dataset."""
        meta = read_meta(out)
        if meta.get("dataset") != self.name:
            raise DataFileError(f"{out / META_FILE}: store is for {meta.get('dataset')!r}, not {self.name!r}; "
                                "use another --out")
        return meta


class PlannedFromData:
    """A user's MSD / nnU-Net v2 folder, planned from its data (:func:`plan_user_dataset`).

    Args:
        settings: memory model and budget of the planner.
        overrides: plan values to impose (:data:`sam3dlib.data.planning.OVERRIDABLE`).
    """

    def __init__(self, settings: PlannerSettings, overrides: dict | None = None) -> None:
        self.settings, self.overrides = settings, overrides

    def find_cases(self, raw: Path) -> list[RawCase]:
        """The cases ``raw/dataset.json`` lists (its checks: :func:`load_user_dataset`)."""
        self.ds = load_user_dataset(raw)
        return list(self.ds.cases)

    def new_store(self, raw: Path, cases: Sequence[RawCase], out: Path, num_workers: int, progress: bool) -> dict:
        """Plan; write ``out/splits_final.json`` and ``out/dataset.json`` (with the raw files' record)."""
        meta, folds = plan_user_dataset(self.ds, self.settings, self.overrides, num_workers, progress)
        meta[SOURCE_FILES_KEY] = source_record(self.ds)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / SPLITS_FILE, folds)
        atomic_write_json(out / META_FILE, meta)
        return meta

    def resume(self, raw: Path, out: Path) -> dict:
        """The stored plan, refused if the store is of another folder or the raw data changed."""
        meta_path = out / META_FILE
        meta = read_meta(out)
        if meta.get("source_root") != str(raw.resolve()):
            raise DataFileError(f"{meta_path}: this store was prepared from {meta.get('source_root')!r}, not {raw}; "
                                "use another --out, or --force to rebuild it from this folder")
        if self.overrides:
            raise ConfigError(f"{meta_path}: the store already has a plan; plan settings apply to a new store only "
                              "(use another --out, or --force to rebuild it)")
        if SOURCE_FILES_KEY in meta:  # stores of sam3dlib <= 0.x lack the record: resumed as they are
            changes = source_changes(meta[SOURCE_FILES_KEY], source_record(self.ds))
            if changes:
                listed = "; ".join(changes[:8]) + (f"; ... ({len(changes)} in all)" if len(changes) > 8 else "")
                raise DataFileError(f"{raw}: the raw data changed since {out} was prepared ({listed}); prepare into "
                                    "a new --out, or pass --force to rebuild the store from scratch")
        return meta


#: what :func:`prepare_dataset` asks of a plan's source
PlanSource = CommittedPlan | PlannedFromData


def plan_source(dataset: str | None, settings: PlannerSettings | None = None, overrides: dict | None = None,
                target_spacing: Sequence[float] | str | None = None, layout: str | None = None,
                allow_missing_labels: bool = False) -> PlanSource:
    """The plan's source: ``dataset``'s committed plan, or (``None``) the planner on the raw folder.

    Raises:
        ConfigError: settings that do not apply to that source (plan overrides for a paper
            dataset; a layout, ``target_spacing="spec"`` or missing labels for a user's).
    """
    if dataset is not None:
        if overrides:
            raise ConfigError(f"{dataset} has a committed plan (the paper's settings); plan overrides apply to "
                              "your own datasets")
        return CommittedPlan(dataset, target_spacing, layout, allow_missing_labels)
    if layout is not None or allow_missing_labels or isinstance(target_spacing, str):
        raise ConfigError("layout, allow_missing_labels and target_spacing='spec' apply to the paper datasets; your "
                          "own dataset's layout and labels are told by its dataset.json")
    overrides = dict(overrides or {})
    if target_spacing is not None:
        overrides["target_spacing"] = list(target_spacing)
    if settings is None:
        raise ConfigError("planning your own dataset needs the planner's settings (memory model and budget); "
                          "sam3dlib.pipeline.prepare passes the decoder's")
    return PlannedFromData(settings, overrides)


# ---------------------------------------------------------------- a user's dataset (MSD / nnU-Net v2)


def plan_user_dataset(ds: UserDataset, settings: PlannerSettings, overrides: dict | None = None,
                      num_workers: int = 0, progress: bool = True) -> tuple[dict, list[dict]]:
    """Read and check every case of a user's raw folder ``ds``, then plan (nothing is written).

    Returns:
        ``(dataset-level meta with the plan, folds)``.

    Raises:
        DatasetFormatError / DataFileError: the first bad file, named.
        ConfigError: a plan override that does not fit the data (e.g. ``num_folds``).
    """
    from sam3dlib.data.planning import is_ct

    raw = ds.root
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
    return meta, folds


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



# ---------------------------------------------------------------- the one entry point


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


def prepare_dataset(dataset: str | None, raw: str | os.PathLike, out: str | os.PathLike, num_workers: int = 0,
                    target_spacing: Sequence[float] | str | None = None, layout: str | None = None,
                    allow_missing_labels: bool = False, *, settings: PlannerSettings | None = None,
                    overrides: dict | None = None, progress: bool = True, force: bool = False) -> PreparedDataset:
    """Convert the raw folder ``raw`` with its plan into the prepared store ``out`` (resumable).

    Every case is read and checked before anything is written; then ``dataset.json`` (with the
    plan; and ``splits_final.json`` when the plan's split is the store's folds), then the cases,
    each atomically. A rerun resumes an interrupted prepare with the stored plan (refused when
    the store is of another dataset or folder, or a user's raw data changed since). ``force``
    rebuilds the store from scratch in a temporary folder beside ``out`` and swaps it in when
    complete (a failure leaves ``out`` as it was).

    Args:
        dataset: a paper dataset (``synapse``, ``acdc``, ``lung``, ``brats``: its committed
            plan), or ``None``: a user's MSD / nnU-Net v2 folder, planned from its data.
        raw: the raw folder (BTCV, ACDC, MSD/nnFormer layout, an nnU-Net v1 preprocessed task or
            stage folder; or a user's folder with ``dataset.json``, ``imagesTr/``, ``labelsTr/``).
        out: the store folder (absent, empty, or a store).
        num_workers: worker processes (0 = in this process).
        target_spacing: ``None`` (nnU-Net's rule on the data), ``"spec"`` (a paper dataset's
            datasets.json value) or (z, y, x) mm. Ignored when resuming or reading an nnU-Net v1 folder.
        layout: force a paper layout instead of autodetecting it.
        allow_missing_labels: a paper dataset: prepare cases that the shipped split lists as
            labelled although their label file is missing (recorded in ``dataset.json``).
        settings: the planner's memory model and budget (a user's dataset;
            ``sam3dlib.pipeline.planner_settings()`` gives the decoder's).
        overrides: plan values to impose on a user's dataset (:data:`sam3dlib.data.planning.OVERRIDABLE`).
        progress: progress bars.
        force: rebuild ``out`` from scratch even if it is a store.

    Returns:
        The :class:`PreparedDataset` at ``out``.

    Raises:
        DatasetFormatError, DataFileError, MissingFileError, ConfigError: bad input, naming the
            file or setting; a store of another dataset or folder, or of changed raw data.
        OutputError: ``out`` cannot be written, or is a non-empty folder that is not a store.
    """
    import shutil
    import tempfile

    source = plan_source(dataset, settings, overrides, target_spacing, layout, allow_missing_labels)
    raw, out = Path(raw), Path(out)
    check_output_dir(out, "prepared store folder (--out)")
    check_store_target(out)
    cases = source.find_cases(raw)
    if force:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".building", dir=out.parent))
        try:
            meta = source.new_store(raw, cases, tmp, num_workers, progress)
            _prepare_cases(cases, meta, tmp, num_workers, progress)
            _swap_in(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return PreparedDataset(out)
    if (out / META_FILE).is_file():
        meta = source.resume(raw, out)
    else:
        meta = source.new_store(raw, cases, out, num_workers, progress)
    _prepare_cases(cases, meta, out, num_workers, progress)
    return PreparedDataset(out)


def _prepare_cases(cases: Sequence[RawCase], meta: dict, out: Path, num_workers: int, progress: bool) -> None:
    """Preprocess (or, from an nnU-Net v1 folder, convert) the cases not yet complete in ``out``
    (a case is complete when its properties exist)."""
    (out / CASES_DIR).mkdir(parents=True, exist_ok=True)
    todo = [c for c in cases if not case_paths(out, c.case_id)["properties"].is_file()]
    jobs = [(c, meta, out) for c in todo]
    for _ in _imap(_case_step(meta), jobs, num_workers, f"prepare {meta['dataset']}", progress):
        pass


def _case_step(meta: dict):
    """The per-case step of a store's source layout: preprocess, or copy nnU-Net v1's arrays."""
    return nnunet_v1.convert_case if meta.get("source_layout") == nnunet_v1.LAYOUT else _prepare_one


__all__ = ["CommittedPlan", "PlannedFromData", "describe_plan", "plan_source", "plan_user_dataset",
           "prepare_dataset", "target_spacing_v21"]
