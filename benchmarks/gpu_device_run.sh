#!/usr/bin/env bash
# The GPU check on a machine that has only this checkout and the .gpu/ folder of benchmarks/gpu_prepare.py:
#   bash benchmarks/gpu_device_run.sh check|targets|all [RESULTS_DIR [more gpu_check.py arguments]]
# Installs the carried wheels beside the image's packages (nothing is fetched), runs benchmarks/gpu_check.py
# on .gpu/data, and writes its JSON and Markdown to RESULTS_DIR (default $OUT where set, else
# benchmarks/results). Quiet: the step lines and the table are all it prints. PYTHON picks the interpreter
# (default python3, the image's); SKIP_WHEELS=1 uses the interpreter's own packages (a dry run elsewhere).
# BUDGET (default 540) caps the seconds of the whole check, inside a 10-minute call; results are written after
# every step, so a call cut short still returns what ran.
set -u
part="${1:-check}"
results="${2:-${OUT:-benchmarks/results}}"
if [ ! -f .gpu/data/cifar10-train.npz ] || [ ! -f .gpu/data/cifar10-test.npz ]; then
    echo "error: .gpu/data lacks the npz files; run python benchmarks/gpu_prepare.py first and carry .gpu" >&2
    exit 2
fi
shift $(( $# > 2 ? 2 : $# ))
python="${PYTHON:-python3}"
site=/tmp/curridistill-site
if [ -z "${SKIP_WHEELS:-}" ] && ls .gpu/whl/*.whl >/dev/null 2>&1; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .gpu/whl/*.whl || exit 3
fi
export PYTHONPATH="$PWD/src:$site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
[ -f .gpu/COMMIT ] && export CURRIDISTILL_COMMIT="$(cat .gpu/COMMIT)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
"$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
exec "$python" benchmarks/gpu_check.py --data .gpu/data --part "$part" --results "$results" --budget "${BUDGET:-540}" "$@"
