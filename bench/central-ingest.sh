#!/usr/bin/env bash
# Central ingest benchmark: a central VictoriaMetrics ingesting K simulated
# units' series, against Prometheus's remote-write receiver (what a user
# would otherwise run) in the same run. Prints figures; asserts nothing.
#
#   bench/central-ingest.sh                       (K in "10 40", S=2500, WINDOW=60)
#   K="10 40 100" S=2500 WINDOW=60 WARMUP=30 bench/central-ingest.sh
#
# Needs /usr/bin/victoria-metrics and /usr/bin/vmagent (Debian 12 package
# victoria-metrics, 1.79.5, as on the units and the central), prometheus
# (package prometheus, 2.42), python3 and curl. Everything listens on
# 127.0.0.1 only.
#
# A synthetic exporter (python3, in the temp dir) serves S series per unit,
# node-exporter-like names and labels, counters growing by random amounts,
# gauges wandering, a share of series constant, as a unit exports (node
# exporter, VictoriaMetrics and vmagent self-metrics, video exporter). One
# vmagent plays K units: K targets on that exporter (one path per unit, so
# each unit's values move on their own), labelled unit="uN" and
# flypack="fpM" (10 units per flypack), scraped every 10 s as on the units,
# remote-writing to the receiver under test. Same vmagent config for both.
#
# For each receiver (VictoriaMetrics with the central's flags from
# compose/central/docker-compose.yml, then Prometheus with
# --web.enable-remote-write-receiver and no scrape jobs) and each K: start
# the receiver and vmagent, wait WARMUP s (every series created), then over
# WINDOW s measure samples ingested per second (VictoriaMetrics:
# vm_rows_inserted_total{type="promremotewrite"}; Prometheus:
# prometheus_tsdb_head_samples_appended_total), the receiver's CPU seconds
# per second (utime+stime from /proc/PID/stat) and its RSS at the end
# (VmRSS) and peak (VmHWM); vmagent's and the exporter's CPU too, to show
# the load generator is not the bottleneck. Then ratios Prometheus /
# VictoriaMetrics, and an extrapolation to 100 flypacks x 10 units.
set -euo pipefail
cd "$(dirname "$0")/.."
ks="${K:-10 40}"
series="${S:-2500}"
window="${WINDOW:-60}"
warmup="${WARMUP:-30}"
interval=10

missing=""
for b in /usr/bin/victoria-metrics /usr/bin/vmagent; do [ -x "$b" ] || missing="$missing $b"; done
command -v prometheus >/dev/null || missing="$missing prometheus"
command -v python3 >/dev/null || missing="$missing python3"
command -v curl >/dev/null || missing="$missing curl"
if [ -n "$missing" ]; then
  echo "missing:$missing"
  echo "install: apt-get install -y --no-install-recommends victoria-metrics prometheus python3 curl"
  echo "then stop the services the packages start: systemctl disable --now victoria-metrics vmagent prometheus"
  exit 1
fi
prometheus="$(command -v prometheus)"

work="$(mktemp -d /var/tmp/flypack-bench-central.XXXXXX)"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
hz=$(getconf CLK_TCK)
now() { date +%s.%N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; } # utime+stime (fields 14, 15)
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
wait_http() { # URL SECONDS
  local i
  for i in $(seq 1 $(($2 * 10))); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "no answer from $1 after $2 s"; return 1
}
metric_sum() { # URL NAME [LABEL-FILTER]: sum of a metric's samples on a /metrics page
  curl -sf "$1" | awk -v n="$2" -v f="${3:-}" '
    $0 !~ /^#/ { name = $1; sub(/\{.*/, "", name); l = $0; sub(/ [^ ]+$/, "", l)
                 if (name == n && (f == "" || index(l, f))) s += $NF }
    END { printf "%.0f\n", s }'
}
stop() { # PID
  kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true
  local p keep=()
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}

# The synthetic exporter: GET /metrics/uN gives unit uN's S series; each
# request moves that unit's values on.
cat > "$work/exporter.py" <<'PY'
import http.server, random, sys

S = int(sys.argv[1]); portfile = sys.argv[2]
MODES = ["idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user"]
DEVS = ["eno1", "eno2", "enp3s0f0", "enp3s0f1", "lo", "docker0"]
DISKS = ["nvme0n1", "nvme0n1p1", "nvme0n1p2", "sda", "sdb"]
PATHS = ["/api/v1/write", "/api/v1/query", "/api/v1/query_range", "/metrics", "/api/v1/series", "/health"]
LE = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]
CHIPS = ["coretemp", "nvme", "acpitz"]
# name, kind (counter: grows; gauge: wanders; const), scale, decimals, weight, labels
# A label is (name, vocabulary list) or (name, prefix): lists cycle, the
# last label takes what is left of the index, so every series is unique.
FAMILIES = [
    ("node_cpu_seconds_total", "counter", 3.0, 2, 8, [("mode", MODES), ("cpu", "")]),
    ("node_interrupts_total", "counter", 400, 0, 10, [("type", ["IR-PCI-MSI", "IR-IO-APIC", "Local timer", "Rescheduling"]), ("cpu", ["0", "1", "2", "3", "4", "5", "6", "7"]), ("devices", "irq")]),
    ("node_softnet_processed_total", "counter", 300, 0, 2, [("cpu", "")]),
    ("node_network_receive_bytes_total", "counter", 2e6, 0, 3, [("device", DEVS), ("vlan", "")]),
    ("node_network_transmit_bytes_total", "counter", 2e6, 0, 3, [("device", DEVS), ("vlan", "")]),
    ("node_network_receive_packets_total", "counter", 1500, 0, 3, [("device", DEVS), ("vlan", "")]),
    ("node_network_receive_drop_total", "counter", 0.05, 0, 2, [("device", DEVS), ("vlan", "")]),
    ("node_network_info", "const", 1, 0, 2, [("device", DEVS), ("operstate", ["up", "down"]), ("address", "00:1b:21:00:00:")]),
    ("node_disk_read_bytes_total", "counter", 4e5, 0, 2, [("device", DISKS), ("ns", "")]),
    ("node_disk_written_bytes_total", "counter", 8e5, 0, 2, [("device", DISKS), ("ns", "")]),
    ("node_disk_io_time_seconds_total", "counter", 0.05, 3, 2, [("device", DISKS), ("ns", "")]),
    ("node_filesystem_avail_bytes", "gauge", 4096 * 300, 0, 3, [("fstype", ["ext4", "vfat", "tmpfs", "overlay"]), ("device", "/dev/part")]),
    ("node_filesystem_size_bytes", "const", 1, 0, 3, [("fstype", ["ext4", "vfat", "tmpfs", "overlay"]), ("device", "/dev/part")]),
    ("node_memory_bytes", "gauge", 4096 * 500, 0, 3, [("field", "Mem")]),
    ("node_hwmon_temp_celsius", "gauge", 0.5, 1, 2, [("chip", CHIPS), ("sensor", "temp")]),
    ("node_hwmon_temp_crit_celsius", "const", 1, 0, 1, [("chip", CHIPS), ("sensor", "temp")]),
    ("node_scrape_collector_duration_seconds", "gauge", 0.0005, 6, 2, [("collector", "c")]),
    ("node_scrape_collector_success", "const", 1, 0, 2, [("collector", "c")]),
    ("vm_requests_total", "counter", 3, 0, 3, [("path", PATHS), ("type", "")]),
    ("vm_http_request_errors_total", "counter", 0.01, 0, 2, [("path", PATHS), ("reason", "")]),
    ("vm_request_duration_seconds_bucket", "counter", 2, 0, 8, [("le", LE), ("path", PATHS), ("type", "")]),
    ("vm_cache_entries", "gauge", 30, 0, 3, [("type", "storage/")]),
    ("vm_cache_size_bytes", "gauge", 4096, 0, 3, [("type", "storage/")]),
    ("vmagent_remotewrite_bytes_sent_total", "counter", 6e4, 0, 1, [("url", "")]),
    ("vm_promscrape_scrape_duration_seconds_bucket", "counter", 1, 0, 4, [("vmrange", "")]),
    ("go_gc_duration_seconds", "gauge", 0.00002, 7, 1, [("quantile", ["0", "0.25", "0.5", "0.75", "1"]), ("job", "")]),
    ("process_resident_memory_bytes", "gauge", 4096 * 50, 0, 1, [("process", "")]),
    ("flypack_mcast_packets_total", "counter", 9000, 0, 4, [("interface", ["media-a", "media-b"]), ("group", "239.60.0.")]),
    ("flypack_mcast_bytes_total", "counter", 1.2e7, 0, 4, [("interface", ["media-a", "media-b"]), ("group", "239.60.0.")]),
    ("flypack_mcast_bitrate_mbps", "gauge", 0.3, 3, 4, [("interface", ["media-a", "media-b"]), ("group", "239.60.0.")]),
    ("flypack_mcast_loss_total", "counter", 0.02, 0, 2, [("interface", ["media-a", "media-b"]), ("group", "239.60.0.")]),
    ("flypack_mcast_up", "const", 1, 0, 2, [("interface", ["media-a", "media-b"]), ("group", "239.60.0.")]),
]

def labels(spec, i):
    out = []
    for j, (name, voc) in enumerate(spec):
        if isinstance(voc, list) and j < len(spec) - 1:
            out.append((name, voc[i % len(voc)])); i //= len(voc)
        else:
            out.append((name, f"{voc}{i}"))
    return ",".join(f'{n}="{v}"' for n, v in out)

wsum = sum(f[4] for f in FAMILIES)
counts = [S * f[4] // wsum for f in FAMILIES]
counts[0] += S - sum(counts)
LAYOUT = []  # (family index, label string)
for fi, (f, n) in enumerate(zip(FAMILIES, counts)):
    LAYOUT += [(fi, labels(f[5], i)) for i in range(n)]
assert len(LAYOUT) == S

def initial(rng):
    v = []
    for fi, _ in LAYOUT:
        name, kind, scale, dec, _, _ = FAMILIES[fi]
        v.append(round(rng.uniform(0, 1000 * scale) if kind != "const" else rng.choice([0, 1, 1, 1]) * rng.randint(1, 1 << 20), dec))
    return v

class Unit:
    def __init__(self, name):
        self.rng = random.Random(name); self.v = initial(self.rng)
    def step(self):
        rng, v = self.rng, self.v
        for k, (fi, _) in enumerate(LAYOUT):
            _, kind, scale, dec, _, _ = FAMILIES[fi]
            if kind == "counter":
                if rng.random() < 0.8:
                    v[k] = round(v[k] + rng.expovariate(1 / scale), dec) if dec else v[k] + int(rng.expovariate(1 / scale))
            elif kind == "gauge":
                v[k] = round(max(0.0, v[k] + rng.gauss(0, scale)), dec) if dec else int(max(0, v[k] + rng.gauss(0, scale)))
    def render(self):
        out, last = [], None
        for (fi, ls), x in zip(LAYOUT, self.v):
            name, kind = FAMILIES[fi][0], FAMILIES[fi][1]
            if fi != last:
                out.append(f"# HELP {name} synthetic\n# TYPE {name} {'counter' if kind == 'counter' else 'gauge'}\n"); last = fi
            out.append(f"{name}{{{ls}}} {x}\n")
        return "".join(out).encode()

UNITS = {}
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        parts = self.path.split("/")
        if len(parts) != 3 or parts[1] != "metrics":
            self.send_error(404); return
        u = UNITS.get(parts[2]) or UNITS.setdefault(parts[2], Unit(parts[2]))
        u.step(); body = u.render()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass

srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(portfile, "w").write(str(srv.server_address[1]))
srv.serve_forever()
PY
python3 "$work/exporter.py" "$series" "$work/exporter.port" 2>"$work/exporter.log" &
exporter=$!; pids+=("$exporter")
for _ in $(seq 1 50); do [ -s "$work/exporter.port" ] && break; sleep 0.1; done
eport=$(cat "$work/exporter.port")
wait_http "http://127.0.0.1:$eport/metrics/u0" 10
got=$(curl -sf "http://127.0.0.1:$eport/metrics/u0" | grep -vc '^#')
echo "synthetic exporter on 127.0.0.1:$eport: $got series per unit, $(curl -sf "http://127.0.0.1:$eport/metrics/u0" | wc -c) bytes per scrape"

vmagent_config() { # K -> file
  local k=$1 f="$work/vmagent-$1.yml" i
  {
    printf 'global:\n  scrape_interval: %ss\n  scrape_timeout: 5s\nscrape_configs:\n  - job_name: unit\n' "$interval"
    printf '    relabel_configs:\n      - source_labels: [unit]\n        target_label: __metrics_path__\n        replacement: /metrics/$1\n'
    printf '    static_configs:\n'
    for i in $(seq 1 "$k"); do
      printf '      - targets: ["127.0.0.1:%s"]\n        labels: {unit: u%d, flypack: fp%d}\n' "$eport" "$i" $(((i - 1) / 10 + 1))
    done
  } > "$f"
  echo "$f"
}
printf 'global:\n  scrape_interval: 1m\nscrape_configs: []\n' > "$work/prometheus.yml"

: > "$work/results"
run() { # RECEIVER K
  local recv=$1 k=$2 rport aport rpid apid url metrics name filter series_metric
  rport=$(free_port); aport=$(free_port)
  rm -rf "$work/data" "$work/queue"; mkdir -p "$work/data"
  case "$recv" in
    victoriametrics)
      # The central's flags (compose/central/docker-compose.yml).
      /usr/bin/victoria-metrics -storageDataPath="$work/data" -retentionPeriod=365d \
        -maxInsertRequestSize=33554432 -httpListenAddr="127.0.0.1:$rport" >"$work/$recv-$k.log" 2>&1 &
      rpid=$!; pids+=("$rpid")
      wait_http "http://127.0.0.1:$rport/health" 30
      url="http://127.0.0.1:$rport/api/v1/write"; name=vm_rows_inserted_total; filter='type="promremotewrite"'
      series_metric=vm_new_timeseries_created_total ;; # a fresh storage each run: all its series
    prometheus)
      "$prometheus" --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
        --storage.tsdb.retention.time=365d --web.enable-remote-write-receiver \
        --web.listen-address="127.0.0.1:$rport" >"$work/$recv-$k.log" 2>&1 &
      rpid=$!; pids+=("$rpid")
      wait_http "http://127.0.0.1:$rport/-/ready" 60
      url="http://127.0.0.1:$rport/api/v1/write"; name=prometheus_tsdb_head_samples_appended_total; filter=""
      series_metric=prometheus_tsdb_head_series ;;
  esac
  metrics="http://127.0.0.1:$rport/metrics"
  /usr/bin/vmagent -promscrape.config="$(vmagent_config "$k")" -remoteWrite.url="$url" \
    -remoteWrite.tmpDataPath="$work/queue" -httpListenAddr="127.0.0.1:$aport" >"$work/vmagent-$recv-$k.log" 2>&1 &
  apid=$!; pids+=("$apid")
  wait_http "http://127.0.0.1:$aport/health" 30
  sleep "$warmup"
  local s1 r1 a1 e1 p1 t1 s2 r2 a2 e2 p2 t2 up rss hwm pend errs active
  s1=$(metric_sum "$metrics" "$name" "$filter"); p1=$(metric_sum "http://127.0.0.1:$aport/metrics" vm_promscrape_scraped_samples_sum)
  r1=$(cpu_ticks "$rpid"); a1=$(cpu_ticks "$apid"); e1=$(cpu_ticks "$exporter"); t1=$(now)
  sleep "$window"
  s2=$(metric_sum "$metrics" "$name" "$filter"); p2=$(metric_sum "http://127.0.0.1:$aport/metrics" vm_promscrape_scraped_samples_sum)
  r2=$(cpu_ticks "$rpid"); a2=$(cpu_ticks "$apid"); e2=$(cpu_ticks "$exporter"); t2=$(now)
  rss=$(status_kb "$rpid" VmRSS); hwm=$(status_kb "$rpid" VmHWM)
  up=$(metric_sum "http://127.0.0.1:$aport/metrics" vm_promscrape_targets 'status="up"')
  pend=$(metric_sum "http://127.0.0.1:$aport/metrics" vmagent_remotewrite_pending_data_bytes)
  active=$(metric_sum "$metrics" "$series_metric")
  errs=$(curl -sf "http://127.0.0.1:$aport/metrics" | awk '/^vmagent_remotewrite_requests_total/ && !/status_code="2/ {s += $NF} END {print s + 0}')
  # recv K seconds samples scraped recvcpu_ticks vmagentcpu exportercpu rss_kb hwm_kb up pending errors active
  echo "$recv $k $(echo "$t2 - $t1" | bc) $((s2 - s1)) $((p2 - p1)) $((r2 - r1)) $((a2 - a1)) $((e2 - e1)) $rss $hwm $up $pend $errs $active" | tee -a "$work/results" >/dev/null
  printf '  %-15s K=%-3s up %s/%s  ingested %s samples in %.1f s, %s active series, vmagent queue %s bytes, failed writes %s\n' \
    "$recv" "$k" "$up" "$k" "$((s2 - s1))" "$(echo "$t2 - $t1" | bc)" "$active" "$pend" "$errs"
  stop "$apid"; stop "$rpid"
}

t0=$(now)
echo "== runs: K in ($ks), S=$series series per unit, scrape every ${interval}s, warm-up ${warmup}s, window ${window}s, $(nproc) cores =="
for recv in victoriametrics prometheus; do
  for k in $ks; do run "$recv" "$k"; done
done

echo
echo "== results (receiver CPU: cores busy = CPU s per s; RSS at window end, peak = VmHWM) =="
python3 - "$work/results" "$hz" "$series" "$interval" "$ks" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
hz = float(sys.argv[2]); S = int(sys.argv[3]); iv = float(sys.argv[4]); ks = [int(k) for k in sys.argv[5].split()]
R = {}
print(f"{'receiver':<16}{'K':>4}{'series':>9}{'samples/s':>11}{'expected':>10}{'CPU cores':>11}{'CPU us/sample':>15}"
      f"{'RSS MiB':>9}{'peak MiB':>10}{'RSS B/series':>14}{'vmagent cores':>15}{'exporter cores':>16}")
for recv, k, secs, smp, scraped, rc, ac, ec, rss, hwm, up, pend, errs, active in rows:
    k = int(k); secs = float(secs)
    sps = int(smp) / secs; cpu = int(rc) / hz / secs
    active = int(active)  # as the receiver counts them
    d = dict(sps=sps, cpu=cpu, us=1e6 * cpu / sps if sps else float("nan"), rss=int(rss) * 1024, hwm=int(hwm) * 1024, active=active)
    R[(recv, k)] = d
    print(f"{recv:<16}{k:>4}{active:>9}{sps:>11.0f}{int(scraped) / secs:>10.0f}{cpu:>11.3f}{d['us']:>15.2f}"
          f"{d['rss'] / 2**20:>9.1f}{d['hwm'] / 2**20:>10.1f}{d['rss'] / active:>14.0f}{int(ac) / hz / secs:>15.3f}{int(ec) / hz / secs:>16.3f}")
print("(expected = samples/s vmagent scraped in the same window, without the per-target series vmagent adds (up,")
print(" scrape_duration_seconds, ...); series = active series as the receiver counts them:")
print(" VictoriaMetrics vm_new_timeseries_created_total on a fresh storage, Prometheus prometheus_tsdb_head_series)")

print("\n== ratios Prometheus / VictoriaMetrics ==")
print(f"{'K':>4}{'CPU per sample':>16}{'RSS':>8}{'peak RSS':>10}")
for k in ks:
    v, p = R.get(("victoriametrics", k)), R.get(("prometheus", k))
    if v and p:
        print(f"{k:>4}{p['us'] / v['us']:>16.2f}{p['rss'] / v['rss']:>8.2f}{p['hwm'] / v['hwm']:>10.2f}")

units = 1000
per_unit = max(d["active"] / k for (_, k), d in R.items())  # S + the per-target series
target_sps = units * per_unit / iv; target_series = units * per_unit
print(f"\n== EXTRAPOLATION (not measured): 100 flypacks x 10 units = {units} units x {per_unit:.0f} series / {iv:.0f} s "
      f"= {target_sps:,.0f} samples/s, {target_series:,.0f} active series ==")
print("CPU = CPU per sample at the largest K x samples/s (in brackets: a straight line through both K's CPU).")
print("RAM = RSS at the smallest K + the marginal RSS per series between the smallest and largest K x the extra")
print("series (a straight line through two points; caches, merges and Prometheus's 2-hour head compaction are")
print("not in a few minutes' run).")
lo, hi = min(ks), max(ks)
for recv in ("victoriametrics", "prometheus"):
    a, b = R.get((recv, lo)), R.get((recv, hi))
    if not (a and b):
        continue
    cores = b["us"] * 1e-6 * target_sps
    if hi > lo and b["sps"] > a["sps"]:  # the same, without the idle CPU: marginal CPU per extra sample
        marg = (b["cpu"] - a["cpu"]) / (b["sps"] - a["sps"])
        mcores = f"{a['cpu'] + marg * (target_sps - a['sps']):.2f} cores from the marginal {1e6 * marg:.2f} us/sample"
    else:
        mcores = "no marginal (one K only)"
    if hi > lo:
        per = (b["rss"] - a["rss"]) / (b["active"] - a["active"])
        ram = a["rss"] + per * (target_series - a["active"])
        how = f"{per:.0f} B per extra series"
    else:
        per = b["rss"] / b["active"]; ram = per * target_series; how = f"{per:.0f} B per series (one K only)"
    print(f"{recv:<16} ~{cores:6.2f} cores ({mcores})   ~{ram / 2**30:6.2f} GiB RSS ({how})")
PY
echo
echo "total run time: $(printf '%.0f' "$(echo "$(now) - $t0" | bc)") s"
