"""The reproduction ladder of a paper table: four columns side by side, per class and mean.

1. **the paper**: its SAM3D row as printed;
2. **the authors' maps, scored by sam3dlib**: their released prediction maps
   (``released_predictions``) against the test labels, paired by case id, by our evaluator
   (:mod:`sam3dlib.evaluation.authors_scores`); their ``dice_pre.txt`` compared case by case;
3. **the authors' weights, run by sam3dlib**: their released decoder (``released_weights``)
   imported as a run (:mod:`sam3dlib.study.released_run`), predicting the test cases with our
   pipeline and the official SAM ViT-B;
4. **retrained by sam3dlib**: this table's runs, mean ± sd over seeds.

Each column is labelled with its files' sha256 and the data it used; a difference column
against the paper follows each of ours; an input that is absent shows ``not run`` and says
why. With built-in phantoms and no released files given, stand-ins in the authors' formats are
made from this table's own seed-0 run (:func:`phantom_release`), and every label says so: the
columns then only show that the code path works. The authors released nothing for the skip
ablation (Table 5): its rungs 2 and 3 say so. Per-case CSVs of each rung go beside the table.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sam3dlib.data.specs import get_spec
from sam3dlib.data.store import PreparedDataset
from sam3dlib.evaluation.metrics import AVERAGE, aggregate
from sam3dlib.modeling.constants import RANDOM_WEIGHTS
from sam3dlib.study import report
from sam3dlib.study.notebook_params import NotebookParams
from sam3dlib.study.registry import TableInfo

RUNGS = {
    "paper": "the paper",
    "maps": "authors' maps, scored by sam3dlib",
    "weights": "authors' weights, run by sam3dlib",
    "retrained": "retrained by sam3dlib",
}
#: What the authors released per dataset (their README): weights and maps for the four datasets.
RELEASED_FOR = ("synapse", "acdc", "lung", "brats")
NO_RELEASE_TABLE5 = ("not available: the authors released no weights or prediction maps for the skip "
                     "ablation (Table 5)")


@dataclass
class Rung:
    """One column: its numbers (``region, metric, mean, sd``; DSC in [0, 1]) or why it did not run."""

    key: str
    label: str
    summary: pd.DataFrame | None = None
    per_case: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ran(self) -> bool:
        return self.summary is not None


@dataclass
class Ladder:
    """The ladder of one table row of ours (Table 5: one per sub-table and variant): the paper's
    column and ``rungs`` (maps, weights, retrained)."""

    table: str
    dataset: str
    method: str
    rungs: list[Rung]
    frame: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)

    def legend(self) -> str:
        """One line per column: what it is, its files' sha256 and data, or why it did not run."""
        lines = [f"Table {self.table}, {self.method} on {self.dataset}:", f"- {RUNGS['paper']}: as printed ({report.PAPER})"]
        for r in self.rungs:
            lines.append(f"- {RUNGS[r.key]}: {r.label}")
            lines += [f"    {n}" for n in r.notes]
        lines.append("DSC in %, HD95 in voxels (the authors' scripts' convention; the paper states no unit); 'Δ' columns = that column − the paper.")
        return "\n".join(lines)

    def status(self) -> str:
        """Which columns ran (no numbers, no hashes: the same on every machine)."""
        return f"Table {self.table} {self.method}: {RUNGS['paper']}: shown, " + ", ".join(
            f"{RUNGS[r.key]}: {'shown' if r.ran else 'not run'}" for r in self.rungs)

    def to_markdown(self) -> str:
        f = self.frame
        lines = ["| " + " | ".join(["metric", "region", *f.columns]) + " |",
                 "|" + "|".join([":---", ":---"] + ["---:"] * len(f.columns)) + "|"]
        for (metric, region), row in f.iterrows():
            lines.append("| " + " | ".join([metric, region, *(str(v) for v in row)]) + " |")
        return self.legend() + "\n\n" + "\n".join(lines) + "\n"

    def _repr_markdown_(self) -> str:
        return self.to_markdown()


def _fmt(mean: float, sd: float | None = None) -> str:
    if mean is None or pd.isna(mean):
        return ""
    return f"{mean:.2f}" + (f" ± {sd:.2f}" if sd is not None and not pd.isna(sd) else "")


def _scaled(summary: pd.DataFrame) -> pd.DataFrame:
    """``metric, region -> mean, sd`` with DSC x100 (the paper's units)."""
    s = summary.copy()
    if "sd" not in s.columns:
        s["sd"] = np.nan
    k = np.where(s["metric"] == "DSC", 100.0, 1.0)
    s["mean"], s["sd"] = s["mean"] * k, s["sd"] * k
    return s.set_index(["metric", "region"])[["mean", "sd"]]


def ladder_frame(paper: pd.DataFrame, rungs: list[Rung]) -> pd.DataFrame:
    """Rows ``(metric, region)`` (the paper's, then ours it lacks, average last); columns per rung + Δ."""
    paper_v = paper.set_index(["metric", "region"])["value"]
    keys = list(paper_v.index)
    for r in rungs:
        if r.ran:
            keys += [k for k in _scaled(r.summary).index if k not in keys and k[0] in ("DSC", "HD95")]
    keys = sorted(dict.fromkeys(keys), key=lambda k: (k[0] != "DSC", k[1] == AVERAGE))
    cols: dict[str, list[str]] = {RUNGS["paper"]: [_fmt(paper_v.get(k)) for k in keys]}
    for r in rungs:
        if not r.ran:
            cols[RUNGS[r.key]] = ["not run"] * len(keys)
            cols[f"Δ {r.key}"] = [""] * len(keys)
            continue
        s = _scaled(r.summary)
        cols[RUNGS[r.key]] = [_fmt(*s.loc[k]) if k in s.index else "" for k in keys]
        cols[f"Δ {r.key}"] = [(f"{s.loc[k, 'mean'] - paper_v[k]:+.2f}" if k in s.index and k in paper_v.index else "")
                              for k in keys]
    frame = pd.DataFrame(cols, index=pd.MultiIndex.from_tuples(keys, names=["metric", "region"]))
    return frame


# ------------------------------------------------------------------ the rungs

def _phantom(store: PreparedDataset) -> bool:
    """Whether the store holds built-in phantoms (its ``dataset.json`` says so)."""
    return bool(store.meta.get("phantom"))


def data_label(store: PreparedDataset) -> str:
    """The data a column used: the store's own label and, for real data, where it is."""
    return f"{store.data_label} (stand-in, not the dataset)" if _phantom(store) else \
        f"{store.data_label}: the test cases of {store.root}"


def test_labels(store: PreparedDataset, case_ids: list[str]) -> dict[str, Path]:
    """``{case_id: original label file}`` of the test cases (what their maps are scored against)."""
    out = {}
    for c in case_ids:
        lf = store.properties(c).get("label_file")
        if lf and Path(lf).is_file():
            out[c] = Path(lf)
    return out


def maps_rung(store: PreparedDataset, test_ids: list[str], pred_dir: Path | None, why_absent: str,
              stand_in: bool = False) -> Rung:
    """Rung 2: their maps scored by our evaluator (paired by case id), their score file compared."""
    from sam3dlib.evaluation.authors_scores import score_released_predictions

    if pred_dir is None:
        return Rung("maps", f"not run: {why_absent}")
    res = score_released_predictions(store.spec, pred_dir, test_labels(store, test_ids))
    kind = "STAND-IN maps made from this table's seed-0 run in the authors' format" if stand_in else "maps"
    label = f"{kind} {pred_dir.name}/ (files sha256 {res.sha256[:12]}), {data_label(store)}"
    return Rung("maps", label, aggregate(res.per_case, store.spec), res.per_case, res.describe().splitlines())


def weights_rung(store: PreparedDataset, weights: Path | None, why_absent: str, run_dir: Path,
                 encoder_weights: Path | None, overrides: dict, stand_in: bool = False,
                 device: str = "cpu", made: bool = False) -> Rung:
    """Rung 3: their decoder imported as a run (``run_dir``), predicting the test cases with our pipeline."""
    from sam3dlib.pipeline import evaluate_run
    from sam3dlib.study.released_run import describe, import_released

    if weights is None:
        return Rung("weights", f"not run: {why_absent}")
    dataset = store.spec.name
    import_released(dataset, weights, run_dir, store.root, encoder_weights, force=True,
                    **{"device": device, **overrides})
    evaluate_run(run_dir, store.root, progress=False)
    per_case = pd.read_csv(run_dir / "per_case.csv")
    kind = "weights"
    if made:
        kind = "STAND-IN weights made from this table's seed-0 run in the authors' format"
    elif stand_in:
        kind = "weights, run with the STAND-IN encoder and settings of this table's seed-0 run"
    from sam3dlib.utils.fileio import read_json

    prov = read_json(run_dir / "provenance.json", ValueError, expect=dict)
    enc = ("random stand-in encoder" if encoder_weights is None else
           f"encoder {Path(encoder_weights).name} (sha256 {str(prov.get('encoder_sha256'))[:12]})")
    label = f"{kind}: {describe(run_dir)}; {enc}; {data_label(store)}"
    return Rung("weights", label, aggregate(per_case, store.spec), per_case)


def retrained_rung(run_dirs: list[Path], conditions: report.RunConditions, store: PreparedDataset) -> Rung:
    """Rung 4: this table's runs of the experiment, mean ± sd over seeds."""
    summaries = [report.read_summary(rd / "summary.csv") for rd in run_dirs]
    per_case = pd.concat([pd.read_csv(rd / "per_case.csv").assign(seed=s) for s, rd in zip(conditions.seeds, run_dirs)],
                         ignore_index=True)
    label = f"{conditions.describe()}; {data_label(store)}"
    return Rung("retrained", label, report.seeds_summary(summaries), per_case)


def phantom_release(run_dir: Path, out: Path) -> tuple[Path, Path]:
    """Stand-ins of the authors' files made from one of our runs: ``weights/.../model_best.model`` (+ .pkl)
    in their trainer tree and ``predictions/`` (its test maps + ``dice_pre.txt``). Returns (weights, maps)."""
    from sam3dlib.config import ExperimentConfig
    from sam3dlib.evaluation.authors_scores import write_authors_scores
    from sam3dlib.modeling.released import save_authors_checkpoint
    from sam3dlib.modeling.run_checkpoint import BEST, load_checkpoint

    cfg = ExperimentConfig.load(run_dir / "config.json")
    spec = get_spec(cfg.dataset)
    state = load_checkpoint(run_dir / "checkpoints" / BEST)
    weights = out / "weights"
    fold = weights / "sam3d" / "3d_fullres" / f"Task_{cfg.dataset}" / "sam3d_trainer__sam3d_Plansv2.1" / "fold_0"
    save_authors_checkpoint(fold / "model_best.model", state["decoder"], int(state.get("epoch") or 0),
                            spec.num_classes, spec.num_channels)
    maps = out / "predictions"
    if maps.exists():
        shutil.rmtree(maps)
    shutil.copytree(run_dir / "predictions", maps)
    write_authors_scores(pd.read_csv(run_dir / "per_case.csv"), maps / "dice_pre.txt", spec)
    return weights, maps


def _import_overrides(run_dir: Path, from_run: bool, p: NotebookParams) -> tuple[Path | None, dict]:
    """Encoder file and config of the imported run: the seed-0 run's own when it is a stand-in (a random
    or test encoder, phantom data: the released files are then stand-ins too), else the paper's
    configuration with the official ViT-B (``encoder_weights``)."""
    from sam3dlib.config import ExperimentConfig

    if not from_run:
        return (Path(p.encoder_weights) if p.encoder_weights else None), {}
    cfg = ExperimentConfig.load(run_dir / "config.json")
    keep = ("encoder", "patch_size", "mirror_tta", "encoder_mode", "encoder_scale", "encoder_pool", "seed",
            "sw_overlap", "encoder_chunk_size", "protocol")
    over = {k: getattr(cfg, k) for k in keep}
    over["profile"] = cfg.profile
    weights = cfg.encoder_weights if cfg.encoder_weights != RANDOM_WEIGHTS else None
    return (Path(weights) if weights else None), over


def ladder_for(result, info: TableInfo, p: NotebookParams) -> Ladder:
    """The ladder of one of ``result``'s experiments (a :class:`~sam3dlib.study.table_run.TableResult`)."""
    from sam3dlib.study.table_run import store_root

    store = PreparedDataset(store_root(result, info.dataset))
    runs = result.run_dirs[info.config]
    split = store.split(p.protocol)
    test_ids = [c for c in split.test if c in set(store.case_ids)]
    paper = report.paper_rows(info.table)
    paper = paper[paper["method"] == info.paper_method]
    out = Path(result.out_dir) / "ladder" / f"{info.table}_{info.config}"
    rungs: list[Rung] = []
    if info.table.startswith("5") or info.dataset not in RELEASED_FOR:
        rungs += [Rung("maps", NO_RELEASE_TABLE5), Rung("weights", NO_RELEASE_TABLE5)]
    else:
        weights, maps = p.released_weights, p.released_predictions
        stand_in = _phantom(store) and weights is None and maps is None
        if stand_in:
            weights, maps = phantom_release(runs[0], out / "phantom_release")
        from_run = stand_in or result.conditions.stand_in
        enc, over = _import_overrides(runs[0], from_run, p)
        need_enc = not from_run and enc is None
        rungs.append(maps_rung(store, test_ids, maps, "no released_predictions given (RELEASED_PREDICTIONS=DIR)",
                               stand_in))
        rungs.append(weights_rung(store, None if need_enc else weights,
                                  "needs encoder_weights, the official SAM ViT-B file" if need_enc and weights else
                                  "no released_weights given (RELEASED_WEIGHTS=PATH)", out / "released_run", enc,
                                  over, from_run, p.device, made=stand_in))
    rungs.append(retrained_rung(runs, result.conditions, store))
    ladder = Ladder(info.table, info.dataset, info.paper_method, rungs, ladder_frame(paper, rungs))
    ladder.files = write_ladder(ladder, out)
    return ladder


def write_ladder(ladder: Ladder, out: Path) -> dict[str, Path]:
    """``ladder.csv`` / ``ladder.md`` and one ``per_case_<rung>.csv`` per rung that ran, in ``out``."""
    from sam3dlib.utils.fileio import atomic_write_csv, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    files = {"ladder_csv": atomic_write_csv(out / "ladder.csv", ladder.frame.reset_index()),
             "ladder_md": atomic_write_text(out / "ladder.md", ladder.to_markdown())}
    for r in ladder.rungs:
        if r.per_case is not None:
            files[f"per_case_{r.key}"] = atomic_write_csv(out / f"per_case_{r.key}.csv", r.per_case)
    return files


def ladder_tables(result, params: NotebookParams | None = None) -> list[Ladder]:
    """The ladder of every experiment of a table run (Table 5: rungs 2-3 not available)."""
    from sam3dlib.study.registry import experiments

    p = params or NotebookParams()
    return [ladder_for(result, info, p) for info in experiments(result.table) if info.config in result.run_dirs]


__all__ = ["RUNGS", "Ladder", "Rung", "ladder_for", "ladder_frame", "ladder_tables", "phantom_release"]
