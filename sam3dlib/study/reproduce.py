"""Regenerate a paper table: check inputs, run the experiments, write tables and figures.

Two layers:

* :func:`run_table` is what a table notebook calls (``notebooks/0N_*.ipynb``): it runs the
  table's experiments for every seed (on built-in phantoms when ``data_dir`` is None), then
  writes under ``out_dir`` the per-case CSV, the table in the paper's long format with our rows
  (``tableN.csv``), the rendered comparison (``tableN.md`` / ``tableN.html``) and PNG figures.
* :func:`reproduce_table` is ``make reproduce-tableN`` / ``sam3d reproduce N``: it checks the
  data and checkpoint *before any work*, then executes the table's notebook with papermill into
  ``<out>/runs/<run id>/`` (never into ``notebooks/``) and points ``<out>/latest`` at it.

Run folders: the run id is ``<profile>-seeds<..>-<hash of the inputs>``. A finished run with the
same inputs is not redone (nor overwritten) unless ``force=True``, which runs again under a new
id (``...-2``); ``latest`` (a symlink, plus a ``LATEST`` text file) names the newest run.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sam3dlib.study import report
from sam3dlib.modeling.constants import RANDOM_INIT
from sam3dlib.data.specs import get_spec
from sam3dlib.data.store import PreparedDataset
from sam3dlib.utils.fileio import atomic_write_text
from sam3dlib.utils.finished import is_finished, mark_finished
from sam3dlib.study.notebook_params import NotebookParams, ParameterError, as_seeds

CHECKPOINT_URL = "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"
DEFAULT_CHECKPOINT = Path("checkpoints/sam_vit_b_01ec64.pth")

#: Where each dataset comes from (the paper's sources) and the raw folder ``sam3d prepare`` reads.
DATA_SOURCES: dict[str, tuple[str, str]] = {
    "synapse": (
        "Synapse multi-organ CT (MICCAI 2015 Multi-Atlas Abdomen Labeling / BTCV)",
        "https://www.synapse.org/#!Synapse:syn3193805 (register, download RawData: img/ and label/)",
    ),
    "acdc": (
        "ACDC cardiac cine-MRI (MICCAI 2017 challenge)",
        "https://www.creatis.insa-lyon.fr/Challenge/acdc/ (training/patientNNN folders)",
    ),
    "lung": ("Medical Segmentation Decathlon Task06_Lung", "http://medicaldecathlon.com/ (Task06_Lung.tar)"),
    "brats": ("Medical Segmentation Decathlon Task01_BrainTumour", "http://medicaldecathlon.com/ (Task01_BrainTumour.tar)"),
}

#: Table -> notebook file under ``notebooks/``.
NOTEBOOKS = {
    "1": "01_synapse_table1.ipynb",
    "2": "02_acdc_table2.ipynb",
    "3": "03_lung_table3.ipynb",
    "4": "04_brats_table4.ipynb",
    "5": "05_skip_ablation_table5.ipynb",
}
LATEST = "latest"


class MissingInputError(FileNotFoundError):
    """Data or checkpoint needed by a reproduction is missing; the message says how to get it."""


# --------------------------------------------------------------------------------------------
# Input checks


def table_datasets(table: int | str) -> list[str]:
    """Datasets a table needs, in order (Table 5: acdc, synapse)."""
    return list(dict.fromkeys(e.dataset for e in report.experiments(table)))


def missing_data_message(dataset: str, data_dir: Path) -> str:
    store = Path(data_dir) / dataset
    name, url = DATA_SOURCES[dataset]
    return (
        f"missing prepared dataset folder {store} (no {store / 'dataset.json'}).\n"
        f"    Get {name} from {url},\n"
        f"    then run: sam3d prepare {dataset} --raw /path/to/raw/{dataset} --out {store}\n"
        f"    (to try the pipeline without the data: sam3d phantom {dataset} --out phantoms/{dataset} && "
        f"sam3d prepare {dataset} --raw phantoms/{dataset} --out {store})"
    )


def check_inputs(table: int | str, profile: str, data_dir: str | os.PathLike | None, checkpoint: str | os.PathLike | None) -> None:
    """Stop before any work when the table's data or the SAM checkpoint is missing.

    Args:
        table: paper table (1-5).
        profile: ``paper``/``quick`` need ``checkpoint``; ``smoke`` uses the stand-in encoder.
        data_dir: folder holding ``<dataset>/dataset.json`` prepared stores; None = phantoms (no check).
        checkpoint: the official SAM ViT-B file.

    Raises:
        MissingInputError: listing every missing file or folder and how to get it.
    """
    problems = []
    if data_dir is not None:
        for ds in table_datasets(table):
            if not (Path(data_dir) / ds / "dataset.json").is_file():
                problems.append(missing_data_message(ds, Path(data_dir)))
    if profile != "smoke":
        if checkpoint is None or not Path(checkpoint).is_file():
            problems.append(
                f"missing SAM checkpoint file {checkpoint} (profile {profile!r} needs the official ViT-B weights).\n"
                f"    Download it: mkdir -p {Path(checkpoint or DEFAULT_CHECKPOINT).parent} && "
                f"curl -L -o {checkpoint or DEFAULT_CHECKPOINT} {CHECKPOINT_URL}\n"
                f"    (or pass another file with SAM_CHECKPOINT=..., or use PROFILE=smoke for the stand-in encoder)"
            )
    if problems:
        raise MissingInputError(f"cannot reproduce Table {report.table_key(table)}:\n  - " + "\n  - ".join(problems))


# --------------------------------------------------------------------------------------------
# Phantom data


def _phantom_key(dataset: str, seed: int, n_cases: int | None, size: str) -> str:
    from sam3dlib.data import phantoms
    from sam3dlib.data import preprocess

    h = hashlib.sha256()
    for mod in (phantoms, preprocess):
        h.update(Path(mod.__file__).read_bytes())
    return f"{dataset}-{size}-n{n_cases or 'default'}-seed{seed}-{h.hexdigest()[:10]}"


def default_cache_root() -> Path:
    """``~/.cache/sam3dlib/phantoms`` (phantom stores are built once per code version)."""
    return Path.home() / ".cache" / "sam3dlib" / "phantoms"


def ensure_phantom_data(
    dataset: str,
    cache_root: str | os.PathLike | None = None,
    seed: int = 0,
    n_cases: int | None = None,
    size: str = "small",
) -> Path:
    """A prepared phantom store of ``dataset``, built once and reused.

    Returns:
        A data folder ``D`` with ``D/<dataset>/dataset.json`` (pass ``D`` as ``data_dir``).
    """
    from sam3dlib.data.prepare import prepare_dataset
    from sam3dlib.data.phantoms import write_phantom

    root = Path(cache_root) if cache_root is not None else default_cache_root()
    data_dir = root / _phantom_key(dataset, seed, n_cases, size)
    target = data_dir / dataset
    if (target / "dataset.json").is_file() and (data_dir / "READY").is_file():
        return data_dir
    # the raw files stay where they are written: the store's properties point at them (the
    # evaluation scores against the original label files, as the paper's scripts do)
    raw = write_phantom(dataset, data_dir / "raw", n_cases=n_cases, seed=seed, size=size)
    tmp = data_dir / f".{dataset}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    prepare_dataset(dataset, raw, tmp)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    atomic_write_text(data_dir / "READY", "phantom\n")
    return data_dir


def phantom_size_for(profile: str) -> str:
    """Phantom size used by a profile: ``tiny`` (16 x 48 x 48) for smoke, ``small`` otherwise."""
    return "tiny" if profile == "smoke" else "small"


# --------------------------------------------------------------------------------------------
# Running a table (the notebooks' library call)


def config_device(device: str) -> str:
    """Notebook device -> ``ExperimentConfig.device`` (``auto``, ``cpu``, ``cuda``; ``cuda:N`` -> ``cuda``)."""
    return "cuda" if device.startswith("cuda") else device


@dataclass
class TableResult:
    """What :func:`run_table` produced (also on disk under ``out_dir``)."""

    table: str
    out_dir: Path
    conditions: report.RunConditions
    long: pd.DataFrame
    tables: list[report.ComparisonTable]
    per_case: pd.DataFrame
    run_dirs: dict[str, list[Path]]
    data_dirs: dict[str, Path] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    def ours(self) -> pd.DataFrame:
        return self.long[self.long["source"] == report.THIS_RUN].reset_index(drop=True)

    def mean_dsc(self) -> dict[str, float]:
        """Average DSC (%) of each of our rows, keyed ``"<table> <method>"``."""
        o = self.ours()
        o = o[(o["metric"] == "DSC") & (o["region"] == report.AVERAGE)]
        return {f"{r.table} {r.method}": float(r.value) for r in o.itertuples()}

    def relpath(self, key: str) -> str:
        """A written file relative to ``out_dir`` (for display without machine paths)."""
        return os.path.relpath(self.files[key], self.out_dir)


def _experiment_config(name: str, p: NotebookParams, seed: int, skip: bool):
    from sam3dlib.config import get_config

    overrides: dict[str, Any] = {"seed": seed, "protocol": p.protocol, "device": config_device(p.device)}
    if p.encoder is not None:
        overrides["encoder"] = p.encoder
    if p.encoder_mode is not None:
        overrides["encoder_mode"] = p.encoder_mode
    if p.sam_checkpoint is not None:
        overrides["sam_checkpoint"] = os.fspath(p.sam_checkpoint)
    overrides.update(p.overrides)
    return get_config(name, profile=p.profile, **overrides)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def conditions_from_run(run_dir: Path, p: NotebookParams, dataset: str, phantom: bool, seeds: Sequence[int]) -> report.RunConditions:
    """The run's conditions from its ``provenance.json`` / ``config.json``, falling back to ``p``."""
    prov = _read_json(run_dir / "provenance.json")
    cfg = _read_json(run_dir / "config.json")
    cfg = cfg.get("config", cfg) if isinstance(cfg.get("config"), dict) else cfg
    encoder = str(prov.get("encoder") or cfg.get("encoder") or p.encoder or "vit_b")
    ckpt = prov.get("encoder_checkpoint") or cfg.get("sam_checkpoint") or (os.fspath(p.sam_checkpoint) if p.sam_checkpoint else None)
    sha = prov.get("encoder_sha256")
    if prov.get("random_encoder") is True or ckpt in (None, "", RANDOM_INIT):
        ck = RANDOM_INIT
    else:
        ck = Path(str(ckpt)).name + (f" (sha256 {sha[:12]})" if isinstance(sha, str) and sha != RANDOM_INIT else "")
    return report.RunConditions(
        encoder=encoder,
        encoder_checkpoint=ck,
        data="phantom" if bool(prov.get("phantom", phantom)) else dataset,
        profile=str(prov.get("profile") or cfg.get("profile") or p.profile),
        protocol=str(prov.get("protocol") or cfg.get("protocol") or p.protocol),
        seeds=tuple(int(s) for s in seeds),
    )


def _finished_same(run_dir: Path, cfg, store: Path) -> bool:
    """Whether ``run_dir`` holds a finished run of exactly ``cfg`` on ``store``."""
    from sam3dlib.config import ExperimentConfig
    from sam3dlib.study.experiment import is_scored

    if not is_scored(run_dir):
        return False
    try:
        same_cfg = ExperimentConfig.load(run_dir / "config.json").to_dict() == cfg.to_dict()
    except (ValueError, TypeError, OSError, json.JSONDecodeError):
        return False
    prov = _read_json(run_dir / "provenance.json")
    return same_cfg and prov.get("data_dir") == os.fspath(store.resolve())


def _run_one(info: report.TableInfo, p: NotebookParams, data_dir: Path, seed: int, out: Path, progress: bool = False) -> Path:
    """One experiment: reuse a finished run of the same config and data, resume an interrupted one."""
    from sam3dlib.config import ExperimentConfig
    from sam3dlib.study.experiment import is_scored, run_experiment

    cfg = _experiment_config(info.config, p, seed, info.skip)
    store = data_dir / info.dataset
    if _finished_same(out, cfg, store):
        print(f"{info.config} seed {seed}: reusing the finished run with the same config and data")
        return out
    resume = False
    if (out / "checkpoints" / "latest.pt").is_file() and (out / "config.json").is_file():
        try:
            resume = ExperimentConfig.load(out / "config.json").to_dict() == cfg.to_dict()
        except (ValueError, TypeError, json.JSONDecodeError):
            resume = False
    if out.exists() and not resume:
        shutil.rmtree(out)  # an earlier run of another config in this notebook's output folder
    run_dir = Path(run_experiment(cfg, store, out, resume=resume, progress=progress))
    if not is_scored(run_dir):
        raise FileNotFoundError(f"{run_dir}: run_experiment returned without a finished, scored run")
    return run_dir


def overlay_arrays(run_dir: Path, store_root: Path, case_id: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, str] | None:
    """Image, ground truth and prediction of a predicted test case on the original grid (z, y, x).

    Args:
        run_dir: an experiment's run folder (``predictions/<case>.nii.gz``).
        store_root: the prepared store the run used (``<data_dir>/<dataset>``).
        case_id: the case; None = the first predicted case.

    Returns:
        ``(image, gt, pred, case_id)`` or None when no prediction matches. The image is read
        from the case's raw file when it still exists (zeros otherwise).
    """
    import nibabel as nib

    from sam3dlib.data.preprocess import TRANSPOSE, restore_label

    preds = sorted((run_dir / "predictions").glob("*.nii.gz"))
    if not preds:
        return None
    store = PreparedDataset(store_root)
    for pred_path in preds:
        case = pred_path.name[: -len(".nii.gz")]
        if case_id is not None and case != case_id:
            continue
        if case not in store.case_ids or store.label(case) is None:
            continue
        props = store.properties(case)
        t = list(props.get("transpose", TRANSPOSE))
        pred = np.transpose(np.asanyarray(nib.load(pred_path).dataobj), t)
        gt = np.transpose(restore_label(np.asarray(store.label(case)), props), t)
        image = np.zeros(gt.shape, np.float32)
        files = props.get("image_files") or []
        if files and Path(files[0]).is_file():
            raw = np.asanyarray(nib.load(files[0]).dataobj).astype(np.float32)
            raw = raw[..., 0] if raw.ndim == 4 else raw
            if raw.shape == tuple(int(s) for s in props["original_shape"]):
                image = np.transpose(raw, t)
        if pred.shape != gt.shape:
            continue
        return image, gt, pred, case
    return None


def run_table(table: int | str, params: NotebookParams | Mapping[str, Any], *, cache_root: str | os.PathLike | None = None, figures: bool = True) -> TableResult:
    """Run every experiment of a paper table and write its tables and figures.

    Args:
        table: paper table 1-5 (5 = 5a ACDC + 5b Synapse).
        params: the notebook's parameters (checked with :class:`NotebookParams`).
        cache_root: where phantom stores are built when ``params.data_dir`` is None.
        figures: also draw and save the PNG figures.

    Returns:
        :class:`TableResult`; files under ``params.out_dir``: ``tableN.csv`` (paper's long
        format + our rows), ``tableN.md``, ``tableN.html``, ``per_case.csv``, ``figures/*.png``,
        ``experiments/<config>-seed<k>/`` (each run's own files).
    """
    p = params if isinstance(params, NotebookParams) else NotebookParams.from_mapping(params)
    key = report.table_key(table)
    infos = report.experiments(key)
    if p.dataset is not None:
        infos = tuple(i for i in infos if i.dataset == p.dataset)
        if not infos:
            raise ParameterError(f"notebook parameter 'dataset': Table {key} has no {p.dataset!r} experiment")
    out = Path(p.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_dirs: dict[str, Path] = {}
    phantoms: dict[str, bool] = {}
    for ds in dict.fromkeys(i.dataset for i in infos):
        if p.data_dir is None:
            data_dirs[ds] = ensure_phantom_data(ds, cache_root, seed=0, size=phantom_size_for(p.profile))
        else:
            if not (Path(p.data_dir) / ds / "dataset.json").is_file():
                raise MissingInputError(missing_data_message(ds, Path(p.data_dir)))
            data_dirs[ds] = Path(p.data_dir)
        phantoms[ds] = PreparedDataset(data_dirs[ds] / ds).is_phantom
    ours, per_case, run_dirs, cond = [], [], {}, None
    for info in infos:
        label = f"{info.config}"
        run_dirs[label] = []
        summaries = []
        for seed in p.seeds:
            rd = _run_one(info, p, data_dirs[info.dataset], seed, out / "experiments" / f"{info.config}-seed{seed}")
            run_dirs[label].append(rd)
            summaries.append(report.read_summary(rd / "summary.csv"))
            pc = pd.read_csv(rd / "per_case.csv")
            per_case.append(pc.assign(table=info.table, method=info.paper_method + report.OURS_SUFFIX, seed=seed))
        cond = conditions_from_run(run_dirs[label][0], p, info.dataset, phantoms[info.dataset], p.seeds)
        ours.append(report.our_rows(report.seeds_summary(summaries), get_spec(info.dataset), cond, table=info.table, method=info.paper_method, skip=info.skip))
    ours_df = pd.concat(ours, ignore_index=True)
    long = report.long_table(key, ours_df)
    subtables = sorted(dict.fromkeys(i.table for i in infos))
    tables = [report.comparison_table(t, ours_df) for t in subtables]
    per_case_df = pd.concat(per_case, ignore_index=True)
    name = f"table{key}"
    files = report.write_table_files(out, name, long, tables)
    files["per_case"] = report.write_csv_atomic(per_case_df, out / "per_case.csv")
    result = TableResult(key, out, cond, long, tables, per_case_df, run_dirs, data_dirs, files)
    if figures:
        draw_figures(result, data_dirs)
    return result


def store_root(result: TableResult, dataset: str) -> Path:
    """The prepared store a table run used for ``dataset``."""
    return Path(result.data_dirs[dataset]) / dataset


def draw_figures(result: TableResult, data_dirs: Mapping[str, Path]) -> dict[str, Path]:
    """Draw and save the table's figures under ``out_dir/figures``; returns the PNG paths."""
    from sam3dlib.study import report_figures as rf

    figdir = result.out_dir / "figures"
    ours = result.ours()
    paper = report.paper_rows(result.table)
    figs = {
        "dsc_bars": rf.plot_dsc_bars(ours, paper, result.conditions),
        "params_vs_dsc": rf.plot_params_vs_dsc(report.load_paper_tables(), ours, result.conditions),
    }
    logs = [(label, rd / "log.csv") for label, rds in result.run_dirs.items() for rd in rds if (rd / "log.csv").is_file()]
    if logs:
        figs["training_curves"] = rf.plot_training_curves([p for _, p in logs], result.conditions, labels=[f"{lab} ({p.parent.name})" for lab, p in logs])
    first_label, first_runs = next(iter(result.run_dirs.items()))
    info = next(i for i in report.experiments(result.table) if i.config == first_label)
    arrays = overlay_arrays(first_runs[0], Path(data_dirs[info.dataset]) / info.dataset)
    if arrays is not None:
        image, gt, pred, case = arrays
        figs["overlays"] = rf.plot_overlays(image, gt, pred, None, get_spec(info.dataset), result.conditions, case_id=case)
    for k, fig in figs.items():
        result.files[f"fig_{k}"] = report.save_figure(fig, figdir / f"{k}.png")
    result.figures.update(figs)
    return {k: result.files[f"fig_{k}"] for k in figs}


# --------------------------------------------------------------------------------------------
# make reproduce-tableN


def notebooks_dir() -> Path:
    """The repository's ``notebooks/`` folder (next to the package)."""
    d = Path(__file__).resolve().parents[2] / "notebooks"
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: notebooks folder not found (run from a source checkout of sam3dlib)")
    return d


def _run_id(table: str, profile: str, data_dir: Path | None, checkpoint: Path | None, seeds: Sequence[int], device: str) -> str:
    h = hashlib.sha256()
    for part in (table, profile, os.fspath(data_dir.resolve()) if data_dir else "phantom",
                 os.fspath(checkpoint.resolve()) if checkpoint else "none", " ".join(map(str, seeds)), device):
        h.update(part.encode() + b"\0")
    if checkpoint is not None and checkpoint.is_file():
        st = checkpoint.stat()
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return f"{profile}-seeds{'_'.join(map(str, seeds))}-{h.hexdigest()[:8]}"


def select_run_dir(out: Path, base: str, force: bool = False) -> Path:
    """``out/runs/<base>``, unless a finished run holds it.

    A finished run (its :func:`~sam3dlib.utils.finished.is_finished` marker) with the same id
    is never overwritten: without ``force`` this raises; with ``force`` the next free id
    (``<base>-2``, ``<base>-3`` ...) is used. An unfinished run with the same id (interrupted)
    is redone in place.

    Raises:
        FileExistsError: a finished run with these inputs exists and ``force`` is False.
    """
    runs = Path(out) / "runs"
    run_dir, k = runs / base, 1
    while run_dir.exists():
        finished = is_finished(run_dir)
        if finished and not force:
            raise FileExistsError(
                f"{run_dir} already holds a finished run with these inputs (see {Path(out) / LATEST}); "
                "pass --force to run again under a new id"
            )
        if not finished and not force:
            break
        k += 1
        run_dir = runs / f"{base}-{k}"
    return run_dir


def _point_latest(out: Path, run_dir: Path) -> None:
    rel = os.path.relpath(run_dir, out)
    atomic_write_text(out / "LATEST", rel + "\n")
    tmp = out / f".{LATEST}.tmp{os.getpid()}"
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(rel, tmp, target_is_directory=True)
        os.replace(tmp, out / LATEST)
    except OSError:  # no symlinks on this filesystem: LATEST (text) is the pointer
        pass


def reproduce_table(
    n: int | str,
    profile: str = "paper",
    data_dir: str | os.PathLike | None = "data",
    checkpoint: str | os.PathLike | None = DEFAULT_CHECKPOINT,
    seeds: Sequence[int] | str | int = (0,),
    out: str | os.PathLike = "results/table1",
    force: bool = False,
    device: str = "auto",
    log_output: bool = False,
) -> Path:
    """Execute the table's notebook with papermill into ``<out>/runs/<run id>/``.

    Args:
        n: paper table 1-5.
        profile: ``paper``, ``quick`` or ``smoke``.
        data_dir: folder with prepared stores ``<data_dir>/<dataset>/`` (None: built-in phantoms).
        checkpoint: SAM ViT-B file (not needed, and not used, by ``smoke``).
        seeds: seeds to run (``"0 1 2"``); the table shows mean ± sd over them.
        out: results folder of this table (``results/tableN``).
        force: run again even if a finished run with the same inputs exists.
        device: ``auto``, ``cpu``, ``cuda`` ...

    Returns:
        The run folder (executed notebook, CSVs, tables, figures).

    Raises:
        MissingInputError: data or checkpoint missing (checked before any work).
        FileExistsError: a finished run with the same inputs exists and ``force`` is False.
        ParameterError: a bad profile/seeds/device.
    """
    key = report.table_key(n)
    if key not in NOTEBOOKS:
        raise ParameterError(f"table {n!r}: choose one of 1, 2, 3, 4, 5")
    NotebookParams.from_mapping({"profile": profile, "device": device})  # clear errors first
    seeds_t = as_seeds("seeds", seeds) or (0,)
    data = Path(data_dir) if data_dir is not None else None
    ckpt = Path(checkpoint) if checkpoint is not None else None
    check_inputs(key, profile, data, ckpt)
    nb = notebooks_dir() / NOTEBOOKS[key]
    if not nb.is_file():
        raise FileNotFoundError(f"{nb}: notebook not found")
    out = Path(out)
    if out.resolve() == notebooks_dir() or notebooks_dir() in out.resolve().parents:
        raise ParameterError(f"--out {out}: executed notebooks never go into notebooks/; choose e.g. results/table{key}")
    base = _run_id(key, profile, data, ckpt if profile != "smoke" else None, seeds_t, device)
    run_dir = select_run_dir(out, base, force)
    run_dir.mkdir(parents=True, exist_ok=True)
    params = {
        "data_dir": os.fspath(data.resolve()) if data is not None else None,
        "sam_checkpoint": os.fspath(ckpt.resolve()) if (ckpt is not None and profile != "smoke") else None,
        "profile": profile,
        "seeds": list(seeds_t),
        "seed": int(seeds_t[0]),
        "device": device,
        "out_dir": os.fspath(run_dir.resolve()),
    }
    atomic_write_text(run_dir / "params.json", json.dumps({"table": key, **params}, indent=2) + "\n")
    import papermill as pm

    t0 = time.perf_counter()
    pm.execute_notebook(
        os.fspath(nb),
        os.fspath(run_dir / nb.name),
        parameters=params,
        cwd=os.fspath(run_dir),
        progress_bar=False,
        log_output=log_output,
        kernel_name="python3",
    )
    seconds = time.perf_counter() - t0
    if not (run_dir / f"table{key}.csv").is_file():
        raise RuntimeError(f"{run_dir / nb.name}: the notebook ran but wrote no table{key}.csv")
    mark_finished(run_dir, {"table": key, "seconds": round(seconds, 1), **params})
    _point_latest(out, run_dir)
    return run_dir


__all__ = [
    "CHECKPOINT_URL",
    "DATA_SOURCES",
    "MissingInputError",
    "TableResult",
    "check_inputs",
    "draw_figures",
    "ensure_phantom_data",
    "reproduce_table",
    "overlay_arrays",
    "run_table",
    "select_run_dir",
    "store_root",
]
