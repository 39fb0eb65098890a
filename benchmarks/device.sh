#!/usr/bin/env bash
# One call on a lent GPU: install, the GPU tests, a budgeted benchmark run, a profile of the best step.
#
#   bash benchmarks/device.sh        # through the device tool: command "bash benchmarks/device.sh", timeout_s 600
#
# Each stage runs under its own time limit with its own log; one that fails or times out keeps its log
# and the next still runs. The whole script stays within DEVICE_SECONDS (default 530: under 9 minutes,
# inside the tool's 10-minute command limit); the benchmarks get what the install and the tests left,
# less PROFILE_SECONDS for the profile, SERVE_SECONDS for the serve load test and a margin. Outputs,
# flat, at most 8 files (the tool fetches 8):
#   <gpu>-<date>-<sha>.json                        the results file (benchmarks/results.py)
#   install.log gpu_tests.log bench.log serve.log profile.log  one log per stage
#   profile.md                                     the profile table (benchmarks/profile_step.py)
#   summary.txt                                    what is printed at the end
# into $OUT when it is set (the device tool), else the JSON into benchmarks/results/ and the rest into
# benchmarks/results/device/ (not committed). Environment: PYTHON (default python3), DEVICE_SECONDS,
# PROFILE_SECONDS (default 100), SERVE_SECONDS (default 75).
set -u
cd "$(dirname "$0")/.." || exit 2
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
TOTAL=${DEVICE_SECONDS:-530}
PROFILE_S=${PROFILE_SECONDS:-100}
SERVE_S=${SERVE_SECONDS:-75}
if [ -n "${OUT:-}" ]; then
  RESULTS=$OUT
  LOGS=$OUT
else
  RESULTS=benchmarks/results
  LOGS=benchmarks/results/device
fi
mkdir -p "$RESULTS" "$LOGS"
START=$SECONDS
STAGES=()

left() { echo $((TOTAL - (SECONDS - START))); }

# stage NAME LIMIT_S COMMAND...: COMMAND under `timeout`, all its output in $LOGS/NAME.log.
stage() {
  local name=$1 limit=$2 t0=$SECONDS rc status
  shift 2
  echo "== $name (limit ${limit}s): $*"
  timeout --kill-after=15 "$limit" "$@" >"$LOGS/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    124 | 137) status="TIMED OUT at ${limit}s" ;;
    *) status="FAILED (exit $rc)" ;;
  esac
  tail -n 3 "$LOGS/$name.log"
  STAGES+=("$(printf '%-10s %-24s %4ds  %s' "$name" "$status" $((SECONDS - t0)) "$LOGS/$name.log")")
}

# 1. The project on the machine's own torch and triton (no network: nothing else is installed).
stage install 120 bash -c "$PY -m pip install --no-deps --no-build-isolation -e . && nvidia-smi \
  && $PY -c 'import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())'"

# 2. Correctness on the GPU before any number is taken.
stage gpu_tests 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider -ra --continue-on-collection-errors

# 3. The performance record: as much of `pytest benchmarks/` as fits. 45 s of the limit beyond the
# budget let a case that runs past its estimate finish; a run stopped anyway leaves a partial file.
# The serve load test's share only where PyTriton is installed (the device machine has no network and
# does not ship it): otherwise those seconds go to the benchmarks.
"$PY" -c 'import pytriton.triton' 2>/dev/null || SERVE_S=0
BUDGET=$(($(left) - PROFILE_S - SERVE_S - 50))
[ "$BUDGET" -lt 60 ] && BUDGET=60
MARK=$(mktemp)
stage bench $((BUDGET + 45)) "$PY" -m pytest benchmarks/ --budget "$BUDGET" --results-dir "$RESULTS" \
  -q -p no:cacheprovider -rfE
RESULT_FILE=$(find "$RESULTS" -maxdepth 1 -name '*.json' -newer "$MARK" | head -n 1)
rm -f "$MARK"

# 4. `fastcycle serve` under load, where PyTriton is installed: 16 clients x 16 requests, 256x256, bf16;
# its figures are the JSON line at the end of serve.log.
if [ "$SERVE_S" -gt 0 ]; then
  stage serve "$SERVE_S" "$PY" -m benchmarks.bench_serve --device cuda --amp --clients 16 --requests 16 \
    --size 256 --out /tmp/fastcycle_bench_serve.json
else
  echo "skipped: PyTriton is not installed (pip install fastcycle[serve])" >"$LOGS/serve.log"
fi

# 5. Where the best step's time goes (the fastest training case measured above, else best-b8).
LIMIT=$(($(left) - 10))
[ "$LIMIT" -lt 60 ] && LIMIT=60
stage profile "$LIMIT" "$PY" -m benchmarks.profile_step ${RESULT_FILE:+--results "$RESULT_FILE"} \
  --out "$LOGS/profile.md"

# 6. The summary: the profile, the benchmark table, the serve figures, then each stage (last, so it is never cut off).
{
  echo
  echo "== profile ($LOGS/profile.md)"
  cat "$LOGS/profile.md" 2>/dev/null || echo "(no profile: see $LOGS/profile.log)"
  echo
  echo "== benchmarks (${RESULT_FILE:-no results file written}; log $LOGS/bench.log)"
  sed -n '/ benchmarks --budget /,$p' "$LOGS/bench.log"
  echo
  echo "== serve ($LOGS/serve.log)"
  tail -n 1 "$LOGS/serve.log" 2>/dev/null
  echo
  echo "== stages (${TOTAL}s allowed, $((SECONDS - START))s taken; benchmark budget ${BUDGET}s)"
  printf '%s\n' "${STAGES[@]}"
} | tee "$LOGS/summary.txt"
