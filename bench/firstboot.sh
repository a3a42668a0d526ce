#!/usr/bin/env bash
# firstboot benchmarks (issue 3). Prints figures; asserts nothing.
#
#   bench/firstboot.sh [IMAGE] [ROUNDS] [FIRMWARE]
#                       (defaults: out/flypack.img, 3, bios; or uefi)
#
# Boots IMAGE in QEMU (TCG) ROUNDS times, each time a fresh copy with
# images/unit.example.toml on its seed (static address and VLAN on the second
# NIC), and reports from firstboot's journal in the guest:
#   - each stage's duration and the sum from the first stage to the verdict
#     (median over the rounds),
#   - firstboot's peak resident memory (VmHWM of each run; goal <= 20 MiB),
#   - seconds from QEMU start to the FLYPACK-STATUS line,
#   - `systemd-analyze security` of our units (first round),
#   - the boot path before firstboot's stages (first round): systemd-analyze
#     time, the critical chain to flypack-firstboot.service, the slowest units,
#   - after the verdict: how busy the idle unit keeps its vCPUs (30 s of
#     /proc/stat; the stack's health probes are execs, costly under TCG) and
#     how long a `firstboot qa` re-run takes on it.
set -euo pipefail
cd "$(dirname "$0")/.."
image="${1:-out/flypack.img}"
rounds="${2:-3}"
firmware="${3:-bios}"
bin="${FLYPACK_BIN_DIR:-target/release}"
work="$(mktemp -d /var/tmp/flypack-bench-fb.XXXXXX)"
trap 'pkill -f "boot --quiet --keep-running.*$work" 2>/dev/null || true; rm -rf "$work"' EXIT
ssh-keygen -q -t ed25519 -N "" -f "$work/key"
key="$(cat "$work/key.pub")"
sed "s|  # \"ssh-ed25519 AAAAC3... engineer@laptop\",|  \"$key\",|" images/unit.example.toml > "$work/unit.toml"
for i in $(seq 1 "$rounds"); do
  cp --sparse=always "$image" "$work/img"
  "$bin/builder" customize "$work/img" --unit "$work/unit.toml" >/dev/null 2>&1
  port=$((20000 + RANDOM % 20000))
  "$bin/builder" --json boot --quiet --keep-running --firmware "$firmware" --expect-ready 900 --forward "$port:22" --log "$work/console.log" "$work/img" > "$work/events" 2>/dev/null &
  pid=$!
  until grep -q '"ready"' "$work/events" 2>/dev/null; do sleep 1; kill -0 $pid 2>/dev/null || { echo "boot failed"; exit 1; }; done
  secs=$(grep '"ready"' "$work/events" | python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])')
  ssh -q -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -i "$work/key" -p "$port" flypack@127.0.0.1 \
    sudo cat /var/lib/flypack/journal.json > "$work/journal.$i.json"
  echo "$secs" > "$work/ready.$i"
  ssh -q -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -i "$work/key" -p "$port" flypack@127.0.0.1 \
    'head -1 /proc/stat; sleep 30; head -1 /proc/stat; s=$(date +%s%N); sudo firstboot qa --format json >/dev/null; e=$(date +%s%N); echo qa $(( (e - s) / 1000000 ))' > "$work/idle.$i"
  if [ "$i" = 1 ]; then
    # The hardening of our units, for the record.
    ssh -q -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -i "$work/key" -p "$port" flypack@127.0.0.1 \
      'for u in flypack-firstboot flypack-firstboot-early flypack-backup flypack-status; do printf "%s: " $u; systemd-analyze security --no-pager $u.service | tail -1; done' > "$work/security" || true
    # Where the boot's time goes before firstboot's stages: the kernel and
    # userspace split, the chain that held firstboot back, the slowest units.
    ssh -q -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -i "$work/key" -p "$port" flypack@127.0.0.1 \
      'systemd-analyze --no-pager time; systemd-analyze --no-pager critical-chain flypack-firstboot.service; systemd-analyze --no-pager blame | head -12' > "$work/boot" 2>&1 || true
  fi
  kill $pid; wait $pid 2>/dev/null || true
done
python3 - "$work" "$rounds" "$firmware" <<'PY'
import json, statistics, sys
work, rounds, firmware = sys.argv[1], int(sys.argv[2]), sys.argv[3]
stages, totals, rss, ready, busy, qa = {}, [], [], [], [], []
for i in range(1, rounds + 1):
    j = json.load(open(f"{work}/journal.{i}.json"))
    total = 0
    for s in j["stages"]:
        d = s.get("duration_ms") or 0
        stages.setdefault(s["name"], []).append(d)
        total += d
    totals.append(total)
    rss += [r["peak_rss_kib"] for r in j["runs"] if r.get("peak_rss_kib")]
    ready.append(float(open(f"{work}/ready.{i}").read()))
    lines = open(f"{work}/idle.{i}").read().split("\n")
    a, b = ([int(x) for x in l.split()[1:]] for l in lines[:2])
    d = [y - x for x, y in zip(a, b)]
    busy.append(100.0 * (1 - (d[3] + d[4]) / sum(d)))
    qa.append(int(lines[2].split()[1]) / 1000)
print(f"firstboot in QEMU (TCG, {firmware}), {rounds} rounds, median per stage:")
for name, ds in stages.items():
    print(f"  {name:<9} {statistics.median(ds)/1000:6.2f} s   (runs: {', '.join(f'{d/1000:.2f}' for d in ds)})")
print(f"  {'total':<9} {statistics.median(totals)/1000:6.2f} s   from the first stage to the verdict")
print(f"QEMU start to FLYPACK-STATUS: median {statistics.median(ready):.1f} s  ({', '.join(f'{r:.1f}' for r in ready)})")
print(f"idle unit after the verdict: vCPUs busy median {statistics.median(busy):.0f} %  ({', '.join(f'{b:.0f}' for b in busy)}) over 30 s")
print(f"firstboot qa re-run on it: median {statistics.median(qa):.1f} s  ({', '.join(f'{q:.1f}' for q in qa)})")
print("boot path (first round; systemd-analyze time, critical-chain flypack-firstboot.service, blame):")
print(open(f"{work}/boot").read().rstrip() or "  (not read)")
print("systemd-analyze security (first round):")
print(open(f"{work}/security").read().rstrip() or "  (not read)")
print(f"firstboot peak RSS (VmHWM) per run: max {max(rss)/1024:.1f} MiB  ({', '.join(f'{r/1024:.1f}' for r in rss)})  goal <= 20 MiB")
PY
