#!/usr/bin/env bash
# bench/load_test.py for two trees, side by side on one machine, alternating round by round: the noise of a
# shared VM lands on both. For each run it prints the share of the VM's CPU time that the host gave to other
# guests meanwhile (steal), which decides the tail on such a machine.
#   bench/load_compare.sh /path/to/other/checkout [rounds] [extra load_test.py arguments for this tree...]
# The other checkout runs with this tree's .venv and PYTHONPATH pointing at it (it needs no install).
set -u
other=${1:?usage: bench/load_compare.sh OTHER_CHECKOUT [ROUNDS] [ARGS...]}
rounds=${2:-3}
shift $(($# < 2 ? $# : 2))
here=$(cd "$(dirname "$0")/.." && pwd)
python=$here/.venv/bin/python
steal() { awk '/^cpu /{print $9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
run() {
  local name=$1 before after; shift
  echo "## $name"
  before=$(steal)
  "$@"
  after=$(steal)
  echo "$before $after" | awk '{printf "steal: %.1f%% of this VM'"'"'s CPU time during the run\n", 100*($3-$1)/($4-$2)}'
}
echo "# $(date -u +%FT%TZ); $(nproc) cores; CPU flags: $(grep -o -w -E 'avx512_bf16|amx_bf16|avx2' /proc/cpuinfo |
  sort -u | tr '\n' ' ')"
for round in $(seq 1 "$rounds"); do
  run "$(git -C "$other" rev-parse --short HEAD) ($other), round $round" \
    env PYTHONPATH="$other" bash -c "cd '$other' && '$python' bench/load_test.py"
  run "$(git -C "$here" rev-parse --short HEAD) (this tree) $*, round $round" \
    bash -c "cd '$here' && '$python' bench/load_test.py $*"
done
