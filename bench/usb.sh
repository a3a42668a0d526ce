#!/usr/bin/env bash
# USB installer and restore benchmark (issue 5). Prints figures; asserts nothing.
#
#   bench/usb.sh [OUT_DIR]        (default out/, holding flypack.img and flypack-installer.img)
#
# 1. Install from USB in QEMU (UEFI, TCG): power-on to the line where the
#    installer reboots into the internal disk, and on to the verdict.
# 2. Restore: a small backup restored onto a blank disk file with
#    `builder restore`, then booted: blank disk to the verdict.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-out}"
bin="${FLYPACK_BIN_DIR:-target/release}"
work="$(mktemp -d /var/tmp/flypack-bench-usb.XXXXXX)"
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
# Seconds of builder boot's "ready" event (its --json output).
ready_seconds() {
  python3 -c 'import json,sys
for l in open(sys.argv[1]):
    try: e = json.loads(l)
    except ValueError: continue
    if e.get("event") == "ready": print(round(e["seconds"], 1)); break
else: print("?")' "$1"
}
# The installer's own seconds, from its FLYPACK-INSTALL "done" line.
install_done() {
  python3 -c 'import json,sys
for l in open(sys.argv[1], errors="replace"):
    if "FLYPACK-INSTALL " in l:
        e = json.loads(l.split("FLYPACK-INSTALL ", 1)[1])
        if e.get("event") == "written": w = e
        if e.get("event") == "done":
            print("%.1f s (write %.1f s, verify %.1f s of %.2f GiB)" % (e["seconds"], w["write_seconds"], w["verify_seconds"], w["bytes"] / 2**30)); break
else: print("?")' "$1"
}

echo "== install from USB (UEFI, TCG)"
a=$(now)
"$bin/builder" --json boot "$out/flypack-installer.img" --installer --firmware uefi --quiet \
  --disk "$work/disk.raw:BENCH-1" --expect-ready 1200 --log "$work/install.log" > "$work/install.json" || true
b=$(now)
reboot_s=$(install_done "$work/install.log")
ready_s=$(ready_seconds "$work/install.json")
echo "installer's own time (start to done: countdown, write, verify, fresh ids): $reboot_s"
echo "power-on to the verdict of the installed disk: ${ready_s:-?} s (wall $(echo "$b - $a" | bc) s)"

echo "== restore: blank disk to verdict"
# A unit's identity (a root tree with a hostname), backed up by firstboot itself.
mkdir -p "$work/root/etc" && echo bench-unit > "$work/root/etc/hostname"
"$bin/firstboot" --root "$work/root" backup --out /b > /dev/null
archive=$(ls "$work"/root/b/*.flypack-backup.tar.zst | head -1)
a=$(now)
"$bin/builder" restore --backup "$archive" --image "$out/flypack.img" --output "$work/restored.img" 2>/dev/null
b=$(now)
echo "builder restore (verify, write, put the backup in): $(echo "$b - $a" | bc) s"
"$bin/builder" --json boot "$work/restored.img" --quiet --expect-ready 900 --log "$work/restore.log" > "$work/restore.json" || true
c=$(now)
ready_s=$(ready_seconds "$work/restore.json")
echo "boot of the restored disk to its verdict: ${ready_s:-?} s; blank disk to verdict: $(echo "$c - $a" | bc) s"
