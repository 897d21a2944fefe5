#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, and tramway's experiment grid run on it.
#
# Installs Debian's slurm-wlm and munge when absent, writes a slurm.conf for this host into a
# scratch folder, starts munged, slurmctld and slurmd there (nothing under /etc is touched), then:
#   1. runs experiments/domain-shift.toml --quick locally (the reference);
#   2. submits the same grid with `tramway experiment --slurm` as a job array, cancels one of
#      its pending array tasks (a killed task), waits for the array, and checks that exactly that
#      run is missing while every other array task completed (Slurm's job-completion log);
#   3. resubmits: the new array holds only the missing run; waits, checks it completed;
#   4. `--report` gathers the table, and every run's numbers (losses, accuracies, perplexities,
#      steps) equal the local run's;
# then stops the daemons it started. CI runs it (`.ci/run`).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${TRAMWAY_CACHE:-$HOME/.cache/tramway}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"

bash tools/apt-need.sh slurmctld=slurm-wlm munged=munge

echo "== building tramway (release) and fetching the quick grid's models and data"
cargo build -q --release --bin tramway
exe="$CARGO_TARGET_DIR/release/tramway"
bash models/fetch.sh >/dev/null
bash models/fetch_data.sh >/dev/null

work="$(mktemp -d /tmp/tramway-slurm.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

echo "== a one-node cluster in $work"
mkdir -p "$work/state" "$work/spool" "$work/munge"
chmod 700 "$work/munge"
dd if=/dev/urandom of="$work/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$work/munge/munge.key"
sock="$work/munge/munge.sock"
munged --force --key-file="$work/munge/munge.key" --socket="$sock" --pid-file="$work/munge/munged.pid" \
  --log-file="$work/munge/munged.log" --seed-file="$work/munge/munged.seed"
pids+=("$(cat "$work/munge/munged.pid")")

host="$(hostname -s)"
cpus="$(nproc)"
mem="$(free -m | awk '/^Mem:/ { print $2 - 1024 }')"
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cat > "$work/slurm.conf" <<EOF
ClusterName=tramway-smoke
SlurmctldHost=$host
SlurmUser=$(id -un)
SlurmdUser=$(id -un)
SlurmctldPort=$(port)
SlurmdPort=$(port)
AuthType=auth/munge
AuthInfo=socket=$sock
CredType=cred/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobCompType=jobcomp/filetxt
JobCompLoc=$work/jobcomp.log
AccountingStorageType=accounting_storage/none
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=smoke Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$work/slurm.conf"
slurmctld -f "$SLURM_CONF"
for _ in $(seq 50); do [ -s "$work/slurmctld.pid" ] && break; sleep 0.2; done
pids+=("$(cat "$work/slurmctld.pid")")
slurmd -f "$SLURM_CONF"
for _ in $(seq 50); do [ -s "$work/slurmd.pid" ] && break; sleep 0.2; done
pids+=("$(cat "$work/slurmd.pid")")
for _ in $(seq 60); do sinfo -h -o %t 2>/dev/null | grep -q idle && break; sleep 1; done
sinfo

grid=experiments/domain-shift.toml
echo "== the quick grid locally (the reference)"
"$exe" experiment "$grid" --quick --out "$work/local" >/dev/null

# Wait until job $1 has left the queue (bounded).
wait_job() {
  for _ in $(seq 900); do
    [ -z "$(squeue -h -j "$1" 2>/dev/null)" ] && return 0
    sleep 2
  done
  echo "slurm-smoke: job $1 still queued after 30 min" >&2
  squeue >&2
  return 1
}
# The final states of job array $1's tasks that ran, from Slurm's job-completion log (one line
# each: task index and state). (sacct needs a slurmdbd with a database; the completion log is
# what slurmctld itself writes when each task ends.)
states() {
  { grep " ArrayJobId=$1 " "$work/jobcomp.log" || true; } |
    sed -E 's/.*JobState=([A-Z_]+).* ArrayTaskId=([0-9]+).*/\2 \1/' | sort -n
}

echo "== the same grid as a Slurm job array"
out="$work/slurm"
submit() { "$exe" experiment "$grid" --quick --out "$out" --slurm | tee "$work/submit.txt"; awk '/submitted job array/ { print $4 }' "$work/submit.txt" | tr -d ';'; }
job1="$(submit | tail -n 1)"
runs="$(grep -o '^[0-9]* of [0-9]* runs' "$work/submit.txt" | awk '{ print $3 }')"
last=$((runs - 1))
scancel "${job1}_${last}"
echo "cancelled array task ${job1}_${last} (a killed run)"
wait_job "$job1"
states "$job1" > "$work/states1.txt"
cat "$work/states1.txt"
completed="$(grep -c ' COMPLETED$' "$work/states1.txt" || true)"
if [ "$completed" -ne "$last" ] || [ "$(wc -l < "$work/states1.txt")" -ne "$last" ] || grep -q "^$last " "$work/states1.txt"; then
  echo "slurm-smoke: $completed of $last array tasks completed (expected all but the cancelled one)" >&2
  tail -n 30 "$work"/slurm/slurm/*.out >&2 || true
  exit 1
fi
missing="$(find "$out" -name summary.json | wc -l)"
[ "$missing" -eq "$last" ] || { echo "slurm-smoke: $missing summaries after the first array, expected $last" >&2; exit 1; }

echo "== resubmitted: only the missing run"
job2="$(submit | tail -n 1)"
grep -q "^1 of $runs runs" "$work/submit.txt" || { echo "slurm-smoke: the resubmitted array is not just the missing run" >&2; exit 1; }
grep -q "^#SBATCH --array=$last\$" "$out/slurm/array.sbatch"
wait_job "$job2"
states "$job2" | tee "$work/states2.txt"
[ "$(cat "$work/states2.txt")" = "$last COMPLETED" ] || { echo "slurm-smoke: the retry did not complete" >&2; exit 1; }
"$exe" experiment "$grid" --quick --out "$out" --slurm | grep -q "every run of the grid has finished"

echo "== the report, and every run's numbers against the local run"
"$exe" experiment "$grid" --quick --out "$out" --report >/dev/null
test -s "$out/results.md"
python3 - "$work/local" "$out" <<'PY'
import json, pathlib, sys
local, slurm = map(pathlib.Path, sys.argv[1:])
a = sorted(p.relative_to(local) for p in local.rglob("summary.json"))
b = sorted(p.relative_to(slurm) for p in slurm.rglob("summary.json"))
assert a == b and a, f"runs differ: {a} vs {b}"
for rel in a:
    x, y = (json.loads((root / rel).read_text()) for root in (local, slurm))
    for k in ("task", "optimizer", "seed", "steps", "final_loss", "evals"):
        assert x[k] == y[k], f"{rel}: {k} {x[k]} (local) vs {y[k]} (Slurm)"
print(f"slurm-smoke: {len(a)} runs, every number equal to the local run's")
PY
echo "slurm-smoke passed"
