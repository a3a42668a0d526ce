#!/usr/bin/env bash
# Benchmarks of `builder build` and `builder boot` (issue 2). Prints figures;
# asserts nothing. Run as root from the repository root after
# `cargo build --release`:
#
#   bench/build.sh [ROUNDS]        (default 1 round of the cold comparison)
#   BENCH_SECTIONS="1 2" bench/build.sh   (only sections 1 and 2; default all)
#
# 1. Cold build of the default profile vs a bare mmdebstrap of the same
#    package set, in the same run, alternating, both with empty package
#    caches (both download everything). Ratio = builder / mmdebstrap.
# 2. Warm rebuild after changing one overlay file (root filesystem cached),
#    three times (a new value each), and their median.
# 3. Boot to the FLYPACK-STATUS line under BIOS and UEFI, median of 3 each,
#    one VM at a time.
# 4. Image size: bytes of data in the sparse image, and zstd -3 size.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-1}"
bin="${FLYPACK_BIN_DIR:-target/release}"
builder="$bin/builder"
export FLYPACK_FIRSTBOOT="$bin/firstboot"
work="$(mktemp -d /var/tmp/flypack-bench.XXXXXX)"
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# The package set the profile lists. Packages under [debian] provided (a stub
# stands in for them in the builder's image) are installed by the bare
# mmdebstrap as dependencies: that is what a user of mmdebstrap alone gets.
packages="$("$builder" build --dry-run --out "$work/dry" | python3 -c 'import json,sys; p=json.load(sys.stdin); print(",".join(p["rootfs"]["packages"]))')"
mapfile -t sources < <("$builder" build --dry-run --out "$work/dry" | python3 -c 'import json,sys; [print(s) for s in json.load(sys.stdin)["rootfs"]["sources"]]')

sections=" ${BENCH_SECTIONS:-1 2 3 4} "
want() { [[ "$sections" == *" $1 "* ]]; }
# Section 2 rebuilds on section 1's cache; alone, it makes that cache first.
if want 2 && ! want 1; then
  echo "== (section 2 alone: a first build to fill its cache, not timed) =="
  FLYPACK_CACHE="$work/c" "$builder" build --out "$work/o" >/dev/null 2>"$work/build.log"
fi

if want 1; then
echo "== 1. cold build vs bare mmdebstrap ($rounds round(s)) =="
: > "$work/cold"
for i in $(seq 1 "$rounds"); do
  rm -rf "$work/c" "$work/o" "$work/m.tar"
  t0=$(now)
  mmdebstrap --quiet --variant=minbase --format=tar --include="$packages" bookworm "$work/m.tar" "${sources[@]}"
  t1=$(now)
  FLYPACK_CACHE="$work/c" "$builder" build --out "$work/o" >/dev/null 2>"$work/build.log"
  t2=$(now)
  m=$(echo "$t1 - $t0" | bc); b=$(echo "$t2 - $t1" | bc)
  echo "round $i: mmdebstrap ${m}s  builder ${b}s  ratio $(echo "scale=3; $b / $m" | bc)"
  echo "$m $b" >> "$work/cold"
done
cold_m=$(awk '{print $1}' "$work/cold" | median); cold_b=$(awk '{print $2}' "$work/cold" | median)
echo "median: mmdebstrap ${cold_m}s  builder ${cold_b}s  ratio $(echo "scale=3; $cold_b / $cold_m" | bc)  (goal <= 1.5)"
fi

if want 2; then
echo "== 2. warm rebuild after one overlay file changed (3 rebuilds, a new value each) =="
cp -a overlays/base "$work/overlay"
sed -e "s|preseed = \"flypack.preseed\"|preseed = \"$PWD/images/flypack.preseed\"|" \
    -e "s|unit_defaults = \"flypack.unit.toml\"|unit_defaults = \"$PWD/images/flypack.unit.toml\"|" \
    -e "s|compose = \"../compose/monitoring/docker-compose.yml\"|compose = \"$PWD/compose/monitoring/docker-compose.yml\"|" \
    -e "s|ansible = \"../ansible\"|ansible = \"$PWD/ansible\"|" \
    -e "s|overlays = \[\"../overlays/base\"\]|overlays = [\"$work/overlay\"]|" images/flypack.toml > "$work/warm.toml"
: > "$work/warm"
for i in 1 2 3; do
  sed -i "s/^net.core.netdev_max_backlog = .*/net.core.netdev_max_backlog = $((12000 + i))/" "$work/overlay/etc/sysctl.d/60-flypack-video.conf"
  t0=$(now)
  FLYPACK_CACHE="$work/c" "$builder" --json build "$work/warm.toml" --out "$work/o" > "$work/warm.json" 2>/dev/null
  t1=$(now)
  warm=$(echo "$t1 - $t0" | bc)
  echo "$warm" >> "$work/warm"
  echo "rebuild $i: ${warm}s"
  grep '"result"' "$work/warm.json" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("  stages:", r["stage_seconds"], " rootfs cached:", r["rootfs_cached"])'
done
echo "median warm rebuild $(median < "$work/warm")s (goal <= 15 s)"
fi

if want 3; then
echo "== 3. boot to FLYPACK-STATUS (TCG, one VM at a time) =="
for fw in bios uefi; do
  : > "$work/boot-$fw"
  for i in 1 2 3; do
    "$builder" --json boot "$work/o/flypack.img" --firmware "$fw" --quiet --expect-ready 600 --log "$work/console.log" \
      | python3 -c 'import json,sys
for l in sys.stdin:
    e=json.loads(l)
    if e.get("event")=="ready": print(e["seconds"])' >> "$work/boot-$fw"
  done
  echo "$fw: $(tr '\n' ' ' < "$work/boot-$fw")-> median $(median < "$work/boot-$fw") s"
done

fi

if want 4; then
echo "== 4. image size =="
img="$work/o/flypack.img"
data=$(du --block-size=1 "$img" | cut -f1)
zstd -q -3 -T0 -f -o "$work/img.zst" "$img"
echo "apparent $(stat -c %s "$img") B, data $data B ($(echo "scale=2; $data / 1048576" | bc) MiB), zstd -3 $(stat -c %s "$work/img.zst") B ($(echo "scale=2; $(stat -c %s "$work/img.zst") / 1048576" | bc) MiB)"
fi
