#!/usr/bin/env bash
# Fleet status fan-out (issue 11). Prints figures; asserts nothing.
#
#   bench/fleet.sh [COUNTS] [FORKS]     (defaults: "1 5 10 20", 10)
#
# Runs ansible/playbooks/fleet/status.yml against N units and compares it
# with N runs against one unit (what a script looping over the units would
# take): the ratio is what Ansible's parallelism (FORKS at a time) gives.
# Each "unit" is this machine reached with a local connection, running the
# real firstboot (`firstboot --root DIR status --json`, a root of its own)
# and slurping a QA report: the per-unit work on the laptop's side is the
# real module runs; SSH and the unit's own CPU are left out (tests/tests/
# fleet.rs prints the same comparison against two units booted in QEMU,
# where both guests share this machine's two cores).
set -euo pipefail
cd "$(dirname "$0")/.."
counts="${1:-1 5 10 20}"
forks="${2:-10}"
bin="${FLYPACK_BIN_DIR:-target/release}"
[ -x "$bin/firstboot" ] || { echo "no $bin/firstboot: cargo build --release (or set FLYPACK_BIN_DIR)"; exit 1; }
work="$(mktemp -d /var/tmp/flypack-bench-fleet.XXXXXX)"
trap 'rm -rf "$work"' EXIT
fb="$(realpath "$bin/firstboot")"
inventory() { # N -> inventory path
  local n=$1 inv="$work/inv-$1.yml"
  echo "all: {hosts: {" > "$inv"
  for i in $(seq -w 1 "$n"); do
    mkdir -p "$work/u$i/var/lib/flypack/qa"
    printf '#!/bin/sh\nexec %s --root %s "$@"\n' "$fb" "$work/u$i" > "$work/u$i/fb"
    chmod +x "$work/u$i/fb"
    printf '{"schema":1,"hostname":"fp-bench-%s","time":"t","version":"0","verdict":"GO","checks":[]}\n' "$i" \
      > "$work/u$i/var/lib/flypack/qa/report.json"
    echo "  fp-bench-$i: {ansible_connection: local, ansible_python_interpreter: /usr/bin/python3, fleet_status_firstboot: $work/u$i/fb, fleet_status_qa_report: $work/u$i/var/lib/flypack/qa/report.json}," >> "$inv"
  done
  echo "}}" >> "$inv"
  echo "$inv"
}
run() { # inventory [limit] -> seconds
  local t0 t1
  t0=$(date +%s.%N)
  (cd ansible && ANSIBLE_FORKS="$forks" ansible-playbook -i "$1" playbooks/fleet/status.yml ${2:+--limit "$2"} \
    -e ansible_become=false -e fleet_status_fail_unless_go=false -e "fleet_status_report_dir=$work/report" >/dev/null)
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}
one=$(inventory 1)
run "$one" >/dev/null # warm the caches
single=$(run "$one")
printf 'one unit: %.1f s (forks %s, %s cores)\n' "$single" "$forks" "$(nproc)"
for n in $counts; do
  [ "$n" = 1 ] && continue
  t=$(run "$(inventory "$n")")
  printf '%3d units: %6.1f s; %d x one unit: %6.1f s; ratio %.2f\n' "$n" "$t" "$n" "$(echo "$n * $single" | bc)" \
    "$(echo "$t / ($n * $single)" | bc -l)"
done
