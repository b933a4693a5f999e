"""Prediction with a trained run: NIfTI in, label NIfTI out (input's affine and shape).

The user's scan goes through the same preprocessing as training (crop to nonzero, resample
to the run's target spacing, normalise with the run's stored statistics), then sliding-window
inference with the run's patch size, 50% overlap, Gaussian weighting and (optionally)
mirroring TTA, then the softmax is mapped back to the original geometry (undo resampling
and cropping) and argmax'ed, as nnU-Net v1's export.
"""
from __future__ import annotations

import errno
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm  # text bars: no widgets (they need a widget-aware front end)

from sam3dlib.config import ExperimentConfig
from sam3dlib.data.io import DataFileError, channel_case_id, nifti_stem, read_header_shape
from sam3dlib.data.plans import spec_from_meta
from sam3dlib.modeling.constants import RANDOM_WEIGHTS
from sam3dlib.modeling.factory import build_model
from sam3dlib.modeling.run_checkpoint import BEST, LATEST, load_checkpoint
from sam3dlib.modeling.sam3d import SAM3D
from sam3dlib.modeling.weights_file import file_sha256
from sam3dlib.utils.devices import resolve_device
from sam3dlib.utils.errors import ConfigError, MissingFileError, UserInputError
from sam3dlib.utils.fileio import read_json
from sam3dlib.utils.finished import FINISHED, is_finished
from sam3dlib.utils.host_memory import reuse_freed_host_memory


class RunError(UserInputError, FileNotFoundError):
    """A run directory that cannot be used for prediction; the message says why."""


class UnfinishedRunWarning(UserWarning):
    """The run has no finished marker: its training stopped before the last epoch (or still runs)."""


@dataclass
class LoadedRun:
    """A trained model ready for prediction (unpacks as ``model, config, meta``)."""

    run_dir: Path
    model: SAM3D
    config: ExperimentConfig
    meta: dict
    device: torch.device
    checkpoint: str
    finished: bool = True
    mirror: bool | None = None  # None: the run's ``mirror_tta``
    step_size: float | None = None  # None: ``1 - sw_overlap`` of the run (0.5)

    def __iter__(self) -> Iterator:
        return iter((self.model, self.config, self.meta))

    def with_options(self, mirror: bool | None = None, step_size: float | None = None) -> LoadedRun:
        """This run with nnU-Net's inference options set (None keeps the current choice).

        Args:
            mirror: average the 8 mirrored predictions of each window (nnU-Net's test-time
                mirroring; False is its ``--disable_tta``).
            step_size: step between windows as a fraction of the patch (nnU-Net's ``step_size``;
                0.5 = 50% overlap). Smaller is slower and smoother.

        Raises:
            ConfigError: ``step_size`` outside (0, 1].
        """
        from sam3dlib.inference.sliding_window import check_step_size

        return replace(self, mirror=self.mirror if mirror is None else bool(mirror),
                       step_size=self.step_size if step_size is None else check_step_size(step_size))

    @property
    def mirror_axes(self) -> tuple[int, ...] | None:
        """The spatial axes mirrored at test time (all three, or None)."""
        return (0, 1, 2) if (self.config.mirror_tta if self.mirror is None else self.mirror) else None

    @property
    def overlap(self) -> float:
        """Window overlap, ``1 - step_size``."""
        return self.config.sw_overlap if self.step_size is None else 1.0 - self.step_size


def load_run(run_dir: str | os.PathLike, device: str = "auto", which: str = "best",
             device_flag: str = "--device ") -> LoadedRun:
    """Rebuild a run's model (encoder from its config, decoder from ``checkpoints/<which>.pt``).

    Args:
        run_dir: a folder written by :func:`sam3dlib.training.train`.
        device: ``auto``, ``cpu`` or ``cuda``.
        which: ``best`` (the authors' evaluation, ``--valbest``) or ``latest``.
        device_flag: how the calling command sets the device (named in a device error).

    Raises:
        RunError: missing or unreadable files (invalid JSON), or the encoder weights file changed
            since training.
        ConfigError: the run's ``config.json`` is invalid (names the file).

    Warns:
        UnfinishedRunWarning: the run has no finished marker (``LoadedRun.finished`` False).
    """
    run = Path(run_dir)
    for name in ("config.json", "dataset_meta.json", "provenance.json"):
        if not (run / name).is_file():
            raise RunError(f"{run / name} not found: {run} is not a finished sam3dlib training run")
    if which not in ("best", "latest"):
        raise ConfigError(f"which must be 'best' or 'latest', got {which!r}")
    ckpt = run / "checkpoints" / (BEST if which == "best" else LATEST)
    if not ckpt.is_file():
        raise RunError(f"{ckpt} not found: the run in {run} has not finished an epoch yet")
    config = ExperimentConfig.load(run / "config.json")
    meta = read_json(run / "dataset_meta.json", RunError, expect=dict)
    prov = read_json(run / "provenance.json", RunError, expect=dict)
    weights = config.encoder_weights
    if weights is not None and weights != RANDOM_WEIGHTS:
        if not Path(weights).is_file():
            raise RunError(f"the run's encoder weights {weights} are missing; the frozen encoder "
                           "is rebuilt from them (only the decoder is saved)")
        sha = file_sha256(weights)
        if sha != prov.get("encoder_sha256"):
            raise RunError(f"{weights} has sha256 {sha[:12]}..., the run was trained with "
                           f"{str(prov.get('encoder_sha256'))[:12]}...: not the same encoder")
    try:  # the checkpoint is read (weights only) before anything is built from the run's files
        state = load_checkpoint(ckpt, map_location="cpu")
    except ValueError as exc:
        raise RunError(str(exc)) from exc
    dev = resolve_device(device, flag=device_flag)
    reuse_freed_host_memory(dev.type)
    # the dataset's spec is the plan kept in the run's copy of the store's dataset.json
    model = build_model(config, spec_from_meta(meta))
    from sam3dlib.modeling.fingerprint import encoder_fingerprint

    if prov.get("encoder_fingerprint") and encoder_fingerprint(model) != prov["encoder_fingerprint"]:
        raise RunError(f"the rebuilt {config.encoder} encoder differs from the one {run} was trained with")
    try:
        model.decoder.load_state_dict(state["decoder"])
    except RuntimeError as exc:
        first = str(exc).splitlines()
        raise RunError(f"{ckpt}: the decoder weights do not fit the run's config ({config.name}, "
                       f"{config.encoder}, skip={config.skip}): {' '.join(s.strip() for s in first[:3])}") from exc
    model.to(dev).eval()
    finished = is_finished(run)
    if not finished:
        warnings.warn(f"{run} is an unfinished training run (no {FINISHED}): predicting with {ckpt.name} of "
                      f"epoch {state.get('epoch')} of {config.epochs}", UnfinishedRunWarning, stacklevel=2)
    return LoadedRun(run, model, config, meta, dev, str(ckpt), finished)


def _as_loaded(run: LoadedRun | str | os.PathLike, device: str = "auto") -> LoadedRun:
    return run if isinstance(run, LoadedRun) else load_run(run, device)


def predict_probabilities(loaded: LoadedRun, image: np.ndarray, progress: bool = False,
                          sw_batch_size: int = 2, desc: str | None = None, encode_once: bool = True) -> np.ndarray:
    """Softmax ``K x D x H x W`` of a preprocessed case ``C x D x H x W``.

    Windows, mirroring and step follow ``loaded`` (:meth:`LoadedRun.with_options`); a SAM3D
    model encodes each slice once per in-plane window and flip (``encode_once=False``: the
    whole model on every window, the reference path; the same probabilities, slower).
    ``progress`` shows a bar over the windows with an ETA, labelled ``desc``.

    On a GPU out-of-memory error the windows are retried with half the ``sw_batch_size``
    (down to 1), then on the CPU, each time with a ``ResourceWarning``
    (:func:`sam3dlib.utils.oom.run_with_oom_fallback`).
    """
    from sam3dlib.inference.sliding_window import sliding_window_predict
    from sam3dlib.utils.oom import run_with_oom_fallback

    cfg = loaded.config
    arr = np.array(image, dtype=np.float32)
    if arr.ndim != 4 or arr.shape[0] != loaded.model.in_channels:
        raise DataFileError(f"image of shape {arr.shape}: expected {loaded.model.in_channels} x D x H x W "
                         f"({cfg.dataset} has {loaded.model.in_channels} modality channel(s))")

    def attempt(batch: int, device: torch.device) -> torch.Tensor:
        return sliding_window_predict(
            loaded.model, arr, (cfg.patch_size[0], *loaded.model.crop_hw), overlap=loaded.overlap,
            mirror_axes=loaded.mirror_axes, sw_batch_size=batch, device=device, progress=progress,
            encode_once=encode_once, desc=desc,
        )

    start = loaded.device
    probs = run_with_oom_fallback(attempt, sw_batch_size if start.type != "cpu" else 1, start,
                                  what=f"prediction with {loaded.run_dir}", on_device_change=loaded.model.to)
    if next(loaded.model.parameters()).device != start:
        loaded.model.to(start)  # back where it was; the next case tries the GPU again
    return probs.numpy()


def predict_case(loaded: LoadedRun, image: np.ndarray, properties: dict, progress: bool = False,
                 desc: str | None = None) -> np.ndarray:
    """Label map of a preprocessed case on its original grid (NIfTI array order)."""
    from sam3dlib.data.preprocess import restore_label

    return restore_label(predict_probabilities(loaded, image, progress, desc=desc), properties)


def predict_file(run: LoadedRun | str | os.PathLike, in_path: str | os.PathLike | Sequence[str | os.PathLike],
                 out_path: str | os.PathLike, device: str = "auto", progress: bool = False,
                 mirror: bool | None = None, step_size: float | None = None, desc: str | None = None) -> Path:
    """Segment one scan and write the label NIfTI on the input's own grid with the input's header
    (qform, sform, codes, pixdim, units; :func:`sam3dlib.data.preprocess.save_label_nifti`).

    Args:
        run: a run directory or a :func:`load_run` result.
        in_path: one NIfTI file (BraTS: 4D with the modalities last) or one file per modality.
        out_path: the label file to write (``.nii.gz``).
        device: where to run when ``run`` is a path.
        progress: a bar over the windows with an ETA (labelled ``desc``).
        mirror, step_size: nnU-Net's inference options (:meth:`LoadedRun.with_options`; None:
            the run's).
    """
    from sam3dlib.data.preprocess import preprocess_case, save_label_nifti

    paths = [Path(in_path)] if isinstance(in_path, (str, os.PathLike)) else [Path(p) for p in in_path]
    check_not_overwriting_inputs(paths, out_path)
    loaded = _as_loaded(run, device).with_options(mirror, step_size)
    for p in paths:
        if not p.is_file():
            raise MissingFileError(f"input image {p} does not exist")
    image, _, props = preprocess_case(paths if len(paths) > 1 else paths[0], loaded.meta)
    label = predict_case(loaded, image, props, progress, desc)
    return save_label_nifti(label, props, out_path)


def _channels_of(path: Path) -> int:
    """Modality channels a NIfTI file holds (4th axis of a 4D file, else 1), from its header."""
    shape = read_header_shape(path)
    return int(shape[3]) if len(shape) == 4 else 1


def uses_channel_rule(meta: dict, num_channels: int) -> bool:
    """Whether input files ``X_0000.nii.gz`` ... form case ``X`` (:func:`sam3dlib.data.io.channel_case_id`):
    for a model with more than one channel, and for any run trained on an nnU-Net v2 store
    (``source_layout`` ``nnunet_v2``), whose one-channel scans are named ``X_0000`` as nnU-Net does."""
    return num_channels > 1 or meta.get("source_layout") == "nnunet_v2"


def group_inputs(folder: str | os.PathLike, num_channels: int = 1, channel_rule: bool | None = None) -> dict[str, list[Path]]:
    """``{case_id: [files]}`` of the NIfTI files in ``folder``, one entry per output to write.

    * the channel rule (``channel_rule``; default: for more than one channel, see
      :func:`uses_channel_rule`): ``X_0000.nii.gz`` ... ``X_000{C-1}.nii.gz`` form case ``X``
      (nnU-Net's naming); a file without the suffix is one case holding all channels (a 4D
      file, modality last). A case with a missing or extra channel is an error naming it;
    * without it: every file is its own case, named after the file (``scan_0001.nii.gz`` ->
      ``scan_0001``); the ``_NNNN`` suffix means nothing.

    Every case's channel count is checked from the headers before anything is predicted.

    Raises:
        MissingFileError: no folder, no NIfTI file in it, or a NIfTI name that cannot be read (a
            dangling link; all such are named before any work).
        DataFileError: a case's channels do not match the model's ``num_channels`` (names the
            files), or two files name one case.
    """
    rule = num_channels > 1 if channel_rule is None else channel_rule
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"input folder {folder} does not exist")
    named = [p for p in sorted(folder.iterdir()) if nifti_stem(p.name) is not None and not p.is_dir()]
    dangling = [p for p in named if not p.is_file()]  # a link whose target is gone: named, never skipped
    if dangling:
        listed = ", ".join(f"{p.name} -> {os.readlink(p)}" if p.is_symlink() else p.name for p in dangling[:5])
        raise MissingFileError(f"{folder}: {len(dangling)} input(s) cannot be read (links to files that do not "
                               f"exist): {listed}{' ...' if len(dangling) > 5 else ''}; fix or remove them")
    files = named  # links that resolve are followed like files
    if not files:
        raise MissingFileError(f"no .nii.gz/.nii files in input folder {folder}")
    cases: dict[str, list[Path]] = {}
    channel_files: set[str] = set()  # cases formed by the _NNNN rule
    for p in files:
        stem = nifti_stem(p.name)
        m = channel_case_id(stem) if rule else None
        case_id = m[0] if m else stem
        if case_id in cases and not (m and case_id in channel_files):  # x.nii + x.nii.gz, or X.nii.gz + X_0000
            raise DataFileError(f"{folder}: {cases[case_id][0].name} and {p.name} both name case {case_id}")
        if m:
            channel_files.add(case_id)
        cases.setdefault(case_id, []).append(p)
    problems = [msg for case_id, paths in cases.items() if (msg := _channel_problem(case_id, paths, num_channels, rule))]
    if problems:
        raise DataFileError(f"{folder}: the model takes {num_channels} channel(s) per case; " + "; ".join(problems[:10]))
    return cases


def _channel_problem(case_id: str, paths: list[Path], num_channels: int, rule: bool) -> str | None:
    """What is wrong with the channel files of one case, or None."""
    indexed = [(m, p) for p in paths if (m := channel_case_id(nifti_stem(p.name)))] if rule else []
    if indexed:
        have = sorted(ch for (_, ch), _ in indexed)
        want = list(range(num_channels))
        missing = [f"{case_id}_{c:04d}" for c in want if c not in have]
        extra = [p.name for (_, ch), p in indexed if ch not in want]
        if missing or extra or len(have) != len(set(have)):
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"extra {', '.join(extra)}"] if extra else [])
            return f"case {case_id}: " + (", ".join(parts) or "duplicate channel files")
        return None
    found = sum(_channels_of(p) for p in paths)
    if found != num_channels:
        return f"case {case_id} ({paths[0].name}) holds {found} channel(s)"
    return None


def check_not_overwriting_inputs(inputs: Sequence[str | os.PathLike], output: str | os.PathLike,
                                 output_is_folder: bool = False) -> None:
    """Refuse an output that would replace an input scan (paths compared after resolving links).

    Args:
        inputs: the input files, or the one input folder.
        output: the output file, or the output folder when ``output_is_folder``.
        output_is_folder: ``output`` is a folder: it must not be an input folder either.

    Raises:
        OutputError: the output (file or folder) is one of the inputs.
    """
    from sam3dlib.utils.fileio import OutputError

    out = Path(output).resolve()
    for p in map(Path, inputs):
        if out == p.resolve():
            what = "folder" if output_is_folder else "file"
            raise OutputError(errno.EEXIST, f"--output {output} is the input {what} {p}: the label map(s) would "
                                            "replace the scan(s); give another output")


def check_part(num_parts: int, part_id: int) -> None:
    """``num_parts >= 1`` and ``0 <= part_id < num_parts``.

    Raises:
        ConfigError: naming ``--num-parts`` / ``--part-id`` and the fault.
    """
    if isinstance(num_parts, bool) or not isinstance(num_parts, int) or num_parts < 1:
        raise ConfigError(f"--num-parts must be an integer >= 1; got {num_parts!r}")
    if isinstance(part_id, bool) or not isinstance(part_id, int) or not 0 <= part_id < num_parts:
        raise ConfigError(f"--part-id must be an integer in 0..{num_parts - 1} (--num-parts {num_parts}); got {part_id!r}")


def select_part(case_ids: Sequence[str], num_parts: int = 1, part_id: int = 0) -> list[str]:
    """The share of ``case_ids`` that job ``part_id`` of ``num_parts`` predicts (nnU-Net's way).

    The case ids are sorted and every ``num_parts``-th one is taken, starting at ``part_id``
    (``sorted(case_ids)[part_id::num_parts]``), so the same folder gives every job the same
    list, the K parts are disjoint and together cover every case, and their sizes differ by at
    most one.

    Raises:
        ConfigError: a bad ``num_parts`` / ``part_id`` (:func:`check_part`).
    """
    check_part(num_parts, part_id)
    return sorted(case_ids)[part_id::num_parts]


def predict_folder(run: LoadedRun | str | os.PathLike, in_dir: str | os.PathLike, out_dir: str | os.PathLike,
                   device: str = "auto", progress: bool = True, overwrite: bool = False, num_parts: int = 1,
                   part_id: int = 0, mirror: bool | None = None, step_size: float | None = None) -> list[Path]:
    """Segment every case of ``in_dir`` (:func:`group_inputs`) into ``out_dir/<case>.nii.gz``.

    With ``num_parts`` > 1 only the share :func:`select_part` gives ``part_id`` is predicted, so
    ``num_parts`` jobs (``part_id`` 0 .. ``num_parts - 1``) writing into one ``out_dir`` cover the
    folder without overlap (each removes only its own cases' stale temporaries).

    ``progress`` shows a bar over the cases and, for each case, one over its windows (both with
    an ETA). ``mirror`` and ``step_size`` are nnU-Net's inference options
    (:meth:`LoadedRun.with_options`; None: the run's).

    The inputs are grouped and their channel counts checked before anything is written; each
    output is written atomically, so an output that exists is complete. A rerun after an
    interruption removes the temporary files a killed writer left in ``out_dir`` and skips the
    cases whose output exists (``overwrite=True`` predicts them again), as nnU-Net's
    ``--continue_prediction`` does. If ``out_dir`` did not exist and nothing was written, it is
    removed again on failure. A run on an nnU-Net v2 store names the outputs after the case
    (``X_0000.nii.gz`` -> ``X.nii.gz``, :func:`uses_channel_rule`).

    Returns:
        The outputs of every case (also those skipped as complete).

    Raises:
        OutputError: ``out_dir`` is ``in_dir``.
    """
    from sam3dlib.utils.fileio import remove_stale_temps

    check_part(num_parts, part_id)
    check_not_overwriting_inputs([in_dir], out_dir, output_is_folder=True)
    loaded = _as_loaded(run, device).with_options(mirror, step_size)
    cases = group_inputs(in_dir, loaded.model.in_channels, uses_channel_rule(loaded.meta, loaded.model.in_channels))
    cases = {case_id: cases[case_id] for case_id in select_part(list(cases), num_parts, part_id)}
    out = Path(out_dir)
    created = not out.exists()
    if out.is_dir():  # only this share's: the other parts' jobs may be writing theirs now
        remove_stale_temps(out, targets=[f"{c}.nii.gz" for c in cases])
    todo = {c: f for c, f in cases.items() if overwrite or not (out / f"{c}.nii.gz").is_file()}
    if progress and len(todo) < len(cases):
        print(f"{len(cases) - len(todo)} of {len(cases)} case(s) already have an output in {out}: skipped "
              "(--overwrite predicts them again)")
    written = [out / f"{c}.nii.gz" for c in cases if c not in todo]
    try:
        for i, (case_id, files) in enumerate(tqdm(todo.items(), desc="cases", unit="case", disable=not progress)):
            written.append(predict_file(loaded, files, out / f"{case_id}.nii.gz", progress=progress,
                                        desc=f"case {i + 1}/{len(todo)} {case_id}"))
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    return written
