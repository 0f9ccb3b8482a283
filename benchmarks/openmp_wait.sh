#!/bin/bash
# How OpenMP's idle threads should wait, on this CPU: `dreamtext text "a red cube" --model
# builtin:shapes --no-export` with three settings, rotated each round:
#   SPIN1K  GOMP_SPINCOUNT=1000     (dreamtext's default since stop 44)
#   DEFAULT GOMP_SPINCOUNT=300000   (libgomp's own default)
#   PASSIVE OMP_WAIT_POLICY=PASSIVE (sleep at once)
# in three loads: none (400 steps, 3 rounds), two busy Python loops (100 steps, 3 rounds) and two
# dreamtext runs at once (150 steps each, 2 rounds, seconds until both are done).
# Usage: bash benchmarks/openmp_wait.sh [FOLDER]  (FOLDER: scratch space, default a temp folder)
# Prints one line a run; wall includes the imports (~8 s on 2 cores). Results: RESULTS.md, stop 44.
set -u
folder=${1:-$(mktemp -d)}
mkdir -p "$folder" && cd "$folder" || exit 1
export HF_HUB_OFFLINE=1
unset OMP_WAIT_POLICY GOMP_SPINCOUNT OMP_NUM_THREADS DREAMTEXT_THREADS
setting_env() {
  case $1 in
    SPIN1K) echo GOMP_SPINCOUNT=1000 ;;
    DEFAULT) echo GOMP_SPINCOUNT=300000 ;;
    PASSIVE) echo OMP_WAIT_POLICY=PASSIVE ;;
  esac
}
one_run() {  # SETTING ITERS WORKSPACE: one run, its "wall user" seconds
  rm -rf "$3"
  env "$(setting_env "$1")" /usr/bin/time -f "%e s wall, %U CPU s" \
    dreamtext text "a red cube" --model builtin:shapes --iters "$2" --no-export \
    --workspace "$3" > "$3.log" 2> "$3.err"
  tail -1 "$3.err"
}
for round in 1 2 3; do
  for setting in SPIN1K DEFAULT PASSIVE; do
    echo "idle round $round $setting: $(one_run $setting 400 ws) load $(cut -d' ' -f1 /proc/loadavg)"
  done
done
for round in 1 2 3; do
  for setting in SPIN1K DEFAULT PASSIVE; do
    python -c 'while True: pass' & loop1=$!
    python -c 'while True: pass' & loop2=$!
    line=$(one_run $setting 100 ws)
    kill $loop1 $loop2; wait $loop1 $loop2 2> /dev/null
    echo "two busy loops round $round $setting: $line"
  done
done
for round in 1 2; do
  for setting in SPIN1K DEFAULT PASSIVE; do
    start=$(date +%s.%N)
    one_run $setting 150 wa > /dev/null & one_run $setting 150 wb > /dev/null &
    wait
    echo "two runs round $round $setting: $(python -c "print(round($(date +%s.%N) - $start, 1))") s until both done"
  done
done
