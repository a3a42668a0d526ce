#!/usr/bin/env bash
# Monitoring stack benchmarks (issue 4). Prints figures; asserts nothing.
#
#   bench/stack.sh [IMAGE]       (default out/flypack.img; run as root)
#
# 1. Bring-up on this machine's dockerd, from `firstboot stack up` start to
#    all services healthy, cold (images not loaded) and warm (re-run).
# 2. Memory of the whole stack at idle (docker stats, after 60 s).
# 3. CPU and RSS of flypack-exporter tracking 20 multicast groups of
#    1 Mb/s each (a sender in another network namespace), over 30 s.
# 4. Disk image bytes the stack adds (the image archive in IMAGE).
# 5. Bring-up in QEMU: the stack stage's duration from firstboot's status
#    line when IMAGE boots (TCG).
set -euo pipefail
cd "$(dirname "$0")/.."
image="${1:-out/flypack.img}"
bin="${FLYPACK_BIN_DIR:-target/release}"
work="$(mktemp -d /var/tmp/flypack-bench-stack.XXXXXX)"
cleanup() {
  for c in $(docker ps -aq --filter label=com.docker.compose.project=fpbench); do docker rm -f "$c" >/dev/null; done
  docker volume ls -q --filter label=com.docker.compose.project=fpbench | xargs -r docker volume rm >/dev/null
  docker network rm fpbench_default >/dev/null 2>&1 || true
  ip netns del fpb-src 2>/dev/null || true; ip netns del fpb-rx 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
docker version >/dev/null || { echo "no Docker daemon (start one: dockerd --data-root DIR &)"; exit 1; }

echo "== 1. bring-up on this machine's dockerd =="
FLYPACK_FIRSTBOOT="$bin/firstboot" FLYPACK_EXPORTER="$bin/flypack-exporter" FLYPACK_WEB="$bin/flypack-web" "$bin/builder" images --out "$work/images" >/dev/null 2>&1
cp -r compose/monitoring "$work/fpbench"
python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
c = json.load(open(f"{w}/images/stack.json"))
c["project"] = "fpbench"; c["compose"] = f"{w}/fpbench/docker-compose.yml"
json.dump(c, open(f"{w}/stack.json", "w"))
refs = [i["reference"] for i in c["images"]]
open(f"{w}/refs", "w").write("\n".join(refs))
PY
for p in $(docker ps -a --format '{{.Label "com.docker.compose.project"}}' | sort -u); do
  [ "$p" = monitoring ] && for c in $(docker ps -aq --filter label=com.docker.compose.project=monitoring); do docker rm -f "$c" >/dev/null; done
done
xargs -r docker rmi -f < "$work/refs" >/dev/null 2>&1 || true
t0=$(date +%s.%N); "$bin/firstboot" stack --config "$work/stack.json" up >/dev/null; t1=$(date +%s.%N)
"$bin/firstboot" stack --config "$work/stack.json" up >/dev/null; t2=$(date +%s.%N)
echo "cold (load images, create, healthy): $(echo "$t1 - $t0" | bc) s; warm re-run (nothing to change): $(echo "$t2 - $t1" | bc) s"

echo "== 2. stack memory at idle (after 60 s) =="
sleep 60
docker stats --no-stream --format '{{.Name}} {{.MemUsage}}' $(docker ps -q --filter label=com.docker.compose.project=fpbench) | tee "$work/mem"
python3 - "$work/mem" <<'PY'
import re, sys
tot = 0
for l in open(sys.argv[1]):
    v = l.split()[1]
    n = float(re.match(r"[0-9.]+", v).group()); u = v[len(re.match(r"[0-9.]+", v).group()):]
    tot += n * {"B": 1, "KiB": 1024, "MiB": 1 << 20, "GiB": 1 << 30}[u]
print(f"total {tot / (1 << 20):.1f} MiB")
PY
cleanup_stack() { for c in $(docker ps -aq --filter label=com.docker.compose.project=fpbench); do docker rm -f "$c" >/dev/null; done; }
cleanup_stack

echo "== 3. flypack-exporter with 20 multicast groups of 1 Mb/s (30 s) =="
ip netns add fpb-src; ip netns add fpb-rx
ip -n fpb-src link add vsrc type veth peer name vrx netns fpb-rx
ip -n fpb-src addr add 10.60.0.1/24 dev vsrc; ip -n fpb-src link set vsrc up; ip -n fpb-src link set lo up
ip -n fpb-rx addr add 10.60.0.2/24 dev vrx; ip -n fpb-rx link set vrx up; ip -n fpb-rx link set lo up
ip -n fpb-src route add 224.0.0.0/4 dev vsrc
{
  printf 'version = 1\nhostname = "bench"\n[[interfaces]]\nlabel = "media"\nmatch = { name = "vrx" }\naddresses = ["10.60.0.2/24"]\n[multicast]\ngroups = [\n'
  for i in $(seq 1 20); do printf '  { group = "239.60.0.%d", interface = "media", port = %d, bitrate_mbps = 1.0 },\n' "$i" $((6000 + i)); done
  printf ']\n'
} > "$work/unit.toml"
ip netns exec fpb-rx "$bin/flypack-exporter" --config "$work/unit.toml" --listen 127.0.0.1:9150 >/dev/null 2>&1 &
exp=$!
sleep 1
# 20 groups x ~89 pps x 1400 bytes = ~1 Mb/s each.
ip netns exec fpb-src python3 -c '
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
d = b"x" * 1400
t0 = time.time(); n = 0
while time.time() - t0 < 32:
    for i in range(1, 21):
        s.sendto(d, ("239.60.0.%d" % i, 6000 + i))
    n += 1
    w = t0 + n / 89.0 - time.time()
    if w > 0: time.sleep(w)
' &
sender=$!
sleep 1
pid=$(pgrep -f "flypack-exporter --config $work/unit.toml" | head -1)
read -r _ _ _ _ _ _ _ _ _ _ _ _ _ u1 s1 _ < /proc/$pid/stat; t1=$(date +%s.%N)
sleep 30
read -r _ _ _ _ _ _ _ _ _ _ _ _ _ u2 s2 _ < /proc/$pid/stat; t2=$(date +%s.%N)
hz=$(getconf CLK_TCK)
rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status); hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
rate=$(ip netns exec fpb-rx curl -s 127.0.0.1:9150/metrics | awk '/^flypack_mcast_bitrate_mbps/ {s += $2} END {print s}')
echo "CPU $(echo "scale=2; 100 * ($u2 + $s2 - $u1 - $s1) / $hz / ($t2 - $t1)" | bc) % of one core; RSS $((rss / 1024)) MiB (peak $((hwm / 1024)) MiB); exporter sees $rate Mb/s in all"
wait $sender 2>/dev/null || true; kill $exp 2>/dev/null || true

echo "== 4. disk image bytes added by the stack =="
stat -c '%s bytes: container image archive (%n)' "$work/images/stack-images.tar"

echo "== 5. bring-up in QEMU (TCG) =="
if [ -f "$image" ]; then
  "$bin/builder" --json boot "$image" --quiet --expect-ready 1200 --log "$work/console.log" >/dev/null 2>&1 || true
  grep -a '^FLYPACK-STATUS' "$work/console.log" | tail -1 | cut -d' ' -f2- | python3 -c '
import json, sys
s = json.load(sys.stdin)
st = [x for x in s["stages"] if x["name"] == "stack"][0]
print("stack stage: %.1f s (attempts %d): %s" % (st.get("duration_ms", 0) / 1000, st["attempts"], st.get("detail", "")))'
else
  echo "no image at $image: build one first"
fi
