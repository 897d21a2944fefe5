#!/usr/bin/env bash
# The checks a machine with a real GPU owes the project, in one go (under ~8 minutes on a
# datacenter GPU), written to one results file (default gpu-check-results.md):
#   1. the adapter tramway chooses, every adapter's self-check (`tramway info`);
#   2. the engine test suite on that adapter (kernels, models against PyTorch, optimizers,
#      guarantees, portability);
#   3. the kernel benchmark (GFLOP/s per matmul layout and path, other kernels), and NN, NT
#      and TN at each shape of a MiniLM step on the path the GPU takes (`--parity`);
#   4. the step benchmark (AdamW, SAM, TRAM-x, TRAM-θ_{t−1} on all-MiniLM-L6-v2) at batch 32 × 128;
#   5. a MiniLM TRAM-x fine-tune of 2000 steps on the movie sentences, with a profile of a step.
#
#   bash tools/gpu-check.sh [--quick] [RESULTS_FILE]
#
# --quick is the rehearsal on a machine without a GPU (lavapipe): the same parts, each shortened
# (kernel benchmarks in their quick form, parity in 2 rounds, the step benchmark at 8 × 24
# tokens for 2 rounds, a fine-tune of 20 steps of 8 × 32, the tests in the debug profile CI
# already built), so the script is checked end to end before a GPU runs it.
#
# Needs what `.ci/run` installs (a Rust toolchain, python3 for the fetch scripts); the GPU's
# driver must already be there. Each part's time is printed; a failing part is recorded and the
# rest still run.
set -uo pipefail
cd "$(dirname "$0")/.."
quick=0
if [ "${1:-}" = "--quick" ]; then quick=1; shift; fi
out="${1:-gpu-check-results.md}"
if [ $quick = 1 ]; then
  test_profile=(); kernels=(--quick); step=(--batch 8 --seq 24 --rounds 2); ft=(--batch-size 8 --max-len 32 --steps 20 --warmup 2 --log-every 5 --eval-every 10 --max-eval 32); parity_rounds=2
else
  test_profile=(--release); kernels=(); step=(--batch 32 --seq 128 --rounds 5); ft=(--batch-size 32 --max-len 64 --steps 2000 --warmup 100 --log-every 100 --eval-every 500); parity_rounds=5
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tramway/target}"
export CARGO_TERM_COLOR=never
status=0
{
  echo "# tramway GPU check — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); $(uname -srm)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/GPU: /'
} > "$out"

part() {
  local title="$1"; shift
  local t0=$SECONDS
  echo "== $title"
  { echo; echo "## $title"; echo; echo '```'; } >> "$out"
  if "$@" >> "$out" 2>&1; then r=ok; else r="FAILED (exit $?)"; status=1; fi
  { echo '```'; echo; echo "$title: $r in $((SECONDS - t0)) s"; } >> "$out"
  echo "   $r in $((SECONDS - t0)) s"
}

part "build" cargo build --release --examples --bins -q
part "fetch model and data" bash -c "models/fetch.sh minilm >/dev/null && models/fetch_data.sh sentiment >/dev/null"
part "tramway info (every adapter opened and self-checked)" "$CARGO_TARGET_DIR/release/tramway" info
part "engine tests on the chosen adapter" cargo test "${test_profile[@]}" --test engine -q
part "kernel benchmark" "$CARGO_TARGET_DIR/release/examples/bench_kernels" "${kernels[@]}"
part "matmul layouts (vector vs scalar kernel)" "$CARGO_TARGET_DIR/release/examples/bench_kernels" "${kernels[@]}" --layouts
part "matmul layout parity at the MiniLM step's shapes" "$CARGO_TARGET_DIR/release/examples/bench_kernels" --parity "--rounds=${parity_rounds}"
part "step benchmark (${step[*]})" "$CARGO_TARGET_DIR/release/examples/bench_step" models/all-MiniLM-L6-v2 "${step[@]}"
run_dir="$(mktemp -d)/minilm"
part "MiniLM TRAM-x fine-tune (${ft[*]})" "$CARGO_TARGET_DIR/release/tramway" finetune \
  --model models/all-MiniLM-L6-v2 --train data/sentiment/movie_sentences.train.csv \
  --eval movie-sentences=data/sentiment/movie_sentences.test.csv --eval movie-reviews=data/sentiment/movie_reviews.csv \
  --optimizer tram-x --lr 5e-5 "${ft[@]}" --no-save \
  --out "$run_dir" --metrics "$run_dir/metrics.jsonl" --profile "$run_dir/profile.md"
if [ -f "$run_dir/profile.md" ]; then
  { echo; cat "$run_dir/profile.md"; } >> "$out"
fi
echo "results: $out"
exit $status
