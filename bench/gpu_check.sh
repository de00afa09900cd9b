#!/usr/bin/env bash
# The prepared GPU check (docs/engines.md): on a machine with an NVIDIA GPU, in one call of a few
# minutes, install what is missing, check correctness (CUDA vs CPU, bf16/fp16 vs fp32, ONNX Runtime
# and TensorRT vs PyTorch, per-sample routing, no NaN) and time everything side by side; results in
# $OUT (default ./gpu_check_out): gpu_check.json and gpu_check.md. Also one node serving N cameras
# (N = 1, 2, 4) against N single-camera nodes: per-camera FPS and latency, RSS and GPU memory.
#   bench/gpu_check.sh             full run (needs CUDA; pip-installs the GPU engines if missing)
#   bench/gpu_check.sh --dry-run   the CPU parts with a tiny model (what the test suite runs)
# Extra arguments go to `python -m zoedepth_ros.bench.gpu_check` (--iters, --parts, --arch ...).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
PYTHON="${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}"

if [[ " $* " != *" --dry-run "* ]]; then
    # A fresh GPU machine: the project's requirements, then the GPU engines (CUDA 12 builds).
    if ! "$PYTHON" -c "import zoedepth_ros, torch, onnxruntime" 2>/dev/null; then
        "$PYTHON" -m pip install -q -r requirements/test.txt && "$PYTHON" -m pip install -q --no-deps -e .
    fi
    "$PYTHON" -c "import tensorrt" 2>/dev/null || "$PYTHON" -m pip install -q "tensorrt>=10.13,<11" || \
        echo "gpu_check: tensorrt could not be installed; its rows are skipped"
    if ! "$PYTHON" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then
        "$PYTHON" -m pip uninstall -q -y onnxruntime && "$PYTHON" -m pip install -q "onnxruntime-gpu>=1.32,<1.33" || \
            echo "gpu_check: onnxruntime-gpu could not be installed; ONNX Runtime runs on the CPU"
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
exec "$PYTHON" -m zoedepth_ros.bench.gpu_check --out "$OUT" "$@"
