#!/usr/bin/env bash
# Side-by-side DNS benchmark: Meridian against gdnsd, NSD, Knot and PowerDNS on the same zone.
#
#   ops/bench/dns.sh [--rounds N] [--seconds S] [--servers "meridian gdnsd ..."] [--workloads "static ..."]
#                    [--profile]
#   ops/bench/dns.sh --scale    memory and load time at 1,000,000 records (see dns-scale.sh)
#   MERIDIAN_BINARY=FILE ops/bench/dns.sh ...   benchmark that binary instead of building one
#   ops/bench/dns.sh --dnssec   signed workloads (DO set) beside their unsigned ones: Meridian
#                               signing online with ECDSA P-256 and (`meridian-ed25519`) with
#                               Ed25519, Knot signing the zone (`knot`) and with
#                               mod-onlinesign (`knot-online`), PowerDNS signing online; the
#                               summary adds each server's signed rate over its unsigned one
#   ops/bench/dns.sh --baseline OLD-BINARY --servers "meridian baseline"
#                               this build against another Meridian binary (a redesign's before
#                               and after) in the same interleaved rounds: the table's
#                               meridian/baseline column is new over old, per core
#
# Every server runs one worker pinned to CPU 0; dnsperf runs pinned to CPU 1. The comparable
# figure is queries per second per *server core* (q/s divided by the server's CPU share over the
# run, read from /proc for its whole process tree), because one dnsperf core saturates before the
# fastest servers do. Rounds are interleaved (the server order rotates each round) and the table
# shows medians. Each throughput run is followed by a fixed-rate phase for p50/p99 latency, so
# latency too is measured once per round and reported as a median: single fixed-rate phases on
# a shared machine swing by several times at p99 (stalls of a few milliseconds that hit every
# server alike). Ratios to Meridian are taken within each round (the runs minutes apart share
# the machine's state) and the table shows their median and range.
#
# --profile adds a phase that samples each server with `perf` during one run per workload and
# prints how its CPU time per query splits between the kernel and user space, its system calls
# per query and context switches per 1,000 queries (how it batches and how often it sleeps),
# with each server's busiest user-space functions: where the time goes that the ratios cannot
# show.
# See ../../../shared/BENCHMARKING.md.
#
# Workloads (servers that cannot serve one are skipped for it):
#   static    A queries for 1,000 static names                      all
#   nxdomain  random names that do not exist                         all
#   weighted  a weighted name over 4 addresses                       meridian gdnsd knot pdns
#   geo       a geo-nearest name over 3 sites (source 127.0.0.1)     meridian gdnsd knot pdns
#   geo-ecs   the same with an ECS option on every query             meridian gdnsd knot pdns
# (Knot through its geoip module: weighted mode, and geodb mode mapping each country of the
# bench database to its nearest site.)
#   mix       resolver-like: DO bit, a COOKIE option, 0x20 mixed case, static names   all
# With --dnssec (every server's zone signed, ECDSA P-256):
#   static-do, weighted-do, geo-ecs-do   the workloads above with DO set
#   nxset, nxset-do   1,000 names that do not exist, asked over and over, without and with
#                 DO (each denial's signature fits Meridian's cache)
#   nxdomain-do   the random names with DO set: every denial needs a fresh signature, so this
#                 is each server's signing rate
# dnsperf advertises its own EDNS buffer size; every server caps answers at its own.
#
# Meridian runs with its health probes active against a local HTTP backend throughout.
# The script installs what it needs (Debian packages), starts each daemon on its own free
# loopback port, and stops exactly the processes it started.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROUNDS=3
SECONDS_PER_RUN=8
SERVERS="meridian gdnsd nsd knot pdns"
WORKLOADS="static nxdomain weighted geo geo-ecs mix"
LAT_QPS=20000
LAT_SECONDS=4
PROFILE=""
BASELINE=""
DNSSEC=""
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) exec bash "$(dirname "$0")/dns-scale.sh" ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
    --servers) SERVERS=$2; shift 2 ;;
    --workloads) WORKLOADS=$2; shift 2 ;;
    --profile) PROFILE=1; shift ;;
    --baseline) BASELINE=$(realpath "$2"); shift 2 ;;
    --dnssec)
      DNSSEC=1
      [ "$SERVERS" = "meridian gdnsd nsd knot pdns" ] && SERVERS="meridian meridian-ed25519 knot knot-online pdns"
      [ "$WORKLOADS" = "static nxdomain weighted geo geo-ecs mix" ] \
        && WORKLOADS="static static-do weighted weighted-do geo-ecs geo-ecs-do nxset nxset-do nxdomain nxdomain-do"
      shift ;;
    -h|--help) sed -n '2,48p' "$0"; exit 0 ;;
    *) echo "unknown option $1"; exit 2 ;;
  esac
done

# shellcheck source=ops/bench/common.sh
source "$ROOT/ops/bench/common.sh"

need=()
for pair in dig:bind9-dnsutils dnsperf:dnsperf gdnsd:gdnsd nsd:nsd knotd:knot pdns_server:pdns-server; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
compgen -G "/usr/lib/*/knot/modules-*/geoip.so" >/dev/null || need+=(knot-module-geoip)
[ -e /usr/lib/x86_64-linux-gnu/pdns/libbindbackend.so ] || need+=(pdns-backend-bind)
[ -e /usr/lib/x86_64-linux-gnu/pdns/libgeoipbackend.so ] || need+=(pdns-backend-geoip)
[ -z "$PROFILE" ] || command -v perf >/dev/null || need+=(linux-perf)
install_missing "${need[@]}"
meridian_binary

# ---------------------------------------------------------------- data
{
  echo '$TTL 300'
  echo '@ IN SOA ns1.bench.test. hostmaster.bench.test. 1 7200 900 1209600 300'
  echo '@ IN NS ns1'
  echo 'ns1 IN A 192.0.2.53'
  for i in $(seq 0 999); do echo "h$i IN A 10.$((i / 250)).$((i % 250)).1"; done
} > "$W/static.zone"
cat > "$W/bench.csv" <<'EOF'
network,latitude,longitude,continent,country,subdivision,city
10.1.0.0/16,50.11,8.68,EU,DE,HE,Frankfurt
10.2.0.0/16,38.95,-77.45,NA,US,VA,Ashburn
10.3.0.0/16,1.35,103.82,AS,SG,01,Singapore
127.0.0.0/8,48.85,2.35,EU,FR,IDF,Paris
192.0.2.0/24,50.11,8.68,EU,DE,HE,Frankfurt
198.51.100.0/24,38.95,-77.45,NA,US,VA,Ashburn
203.0.113.0/24,1.35,103.82,AS,SG,01,Singapore
EOF
"$MERIDIAN" geo build "$W/bench.csv" -o "$W/bench.mmdb" >/dev/null

for i in $(seq 0 999); do echo "h$i.bench.test A"; done > "$W/q-static"
python3 -c 'import random, string
r = random.Random(7)
for _ in range(100000):
    print("".join(r.choice(string.ascii_lowercase) for _ in range(12)) + ".bench.test A")' > "$W/q-nxdomain"
echo "wrr.bench.test A" > "$W/q-weighted"
echo "geo.bench.test A" > "$W/q-geo"
cp "$W/q-geo" "$W/q-geo-ecs"
python3 -c 'import random, string
r = random.Random(11)
for _ in range(1000):
    print("".join(r.choice(string.ascii_lowercase) for _ in range(12)) + ".bench.test A")' > "$W/q-nxset-do"
cp "$W/q-nxset-do" "$W/q-nxset"
for w in static weighted geo-ecs nxdomain; do cp "$W/q-$w" "$W/q-$w-do"; done
python3 -c 'import random
r = random.Random(9)
for i in range(1000):
    name = "h%d.bench.test" % i
    print("".join(c.upper() if r.random() < 0.5 else c for c in name) + " A")' > "$W/q-mix"

# ECS 10.3.0.0/24 (family 1, source 24, scope 0); a client cookie.
ECS_OPT="8:000118000a0300"
COOKIE_OPT="10:0102030405060708"

# ---------------------------------------------------------------- servers
declare -A PORT PID
for s in $SERVERS; do PORT[$s]=$(free_port); done

config_meridian() { meridian_as meridian "$MERIDIAN"; }
config_meridian-ed25519() { meridian_as meridian-ed25519 "$MERIDIAN" ed25519; }
config_baseline() {
  [ -x "$BASELINE" ] || { echo "baseline: give --baseline BINARY"; exit 2; }
  meridian_as baseline "$BASELINE"
}

meridian_as() { # meridian_as NAME BINARY [ALGORITHM]: a Meridian server under NAME (its port
  # and folder), its zone signed with ALGORITHM (default ECDSA P-256) under --dnssec
  local name=$1 binary=$2 algorithm=${3:-ecdsap256sha256} d="$W/$1"; mkdir -p "$d"
  cp "$W/static.zone" "$d/bench.test.zone"
  cp "$W/bench.mmdb" "$d/"
  cat > "$d/meridian.toml" <<EOF
[server]
listen = ["127.0.0.1:${PORT[$name]}"]
control = "127.0.0.1:$(free_port)"
state_dir = "state"
udp_workers = 1
geo_database = "bench.mmdb"

[[zone]]
origin = "bench.test"
file = "bench.test.zone"
gslb = "bench.test.gslb.toml"
EOF
  if [ -n "$DNSSEC" ]; then
    local key
    key=$("$MERIDIAN" dnssec keygen bench.test --dir "$d" --algorithm "$algorithm")
    echo "dnssec_keys = [\"$key\"]" >> "$d/meridian.toml"
  fi
  cat > "$d/bench.test.gslb.toml" <<EOF
[[name]]
name = "wrr"
policy = "weighted"
pool = "wrr"

[[name]]
name = "geo"
policy = "geo-nearest"
pool = "geo"

[pool.wrr]
check = "http"
members = [
  { site = "b1", address = "192.0.2.1", weight = 1, probe = "127.0.0.1:$BACKEND_PORT" },
  { site = "b2", address = "192.0.2.2", weight = 2, probe = "127.0.0.1:$BACKEND_PORT" },
  { site = "b3", address = "192.0.2.3", weight = 3, probe = "127.0.0.1:$BACKEND_PORT" },
  { site = "b4", address = "192.0.2.4", weight = 4, probe = "127.0.0.1:$BACKEND_PORT" },
]

[pool.geo]
check = "http"
members = [
  { site = "fra", address = "192.0.2.20", probe = "127.0.0.1:$BACKEND_PORT" },
  { site = "iad", address = "198.51.100.20", probe = "127.0.0.1:$BACKEND_PORT" },
  { site = "sin", address = "203.0.113.20", probe = "127.0.0.1:$BACKEND_PORT" },
]

[check.http]
kind = "http"
interval = "1s"

[site.fra]
location = [50.11, 8.68]
[site.iad]
location = [38.95, -77.45]
[site.sin]
location = [1.35, 103.82]
EOF
  MERIDIAN_LOG=warn taskset -c 0 "$binary" serve --config "$d/meridian.toml" >"$d/out" 2>"$d/err" &
}

config_gdnsd() {
  local d="$W/gdnsd"; mkdir -p "$d/zones" "$d/geoip" "$d/run" "$d/state"
  cp "$W/bench.mmdb" "$d/geoip/"
  { cat "$W/static.zone"; echo "wrr 30 DYNA weighted!wrr"; echo "geo 30 DYNA geoip!geo"; } > "$d/zones/bench.test"
  cat > "$d/config" <<EOF
options => {
  listen => [ 127.0.0.1:${PORT[gdnsd]} ]
  udp_threads => 1
  tcp_threads => 1
  run_dir => $d/run
  state_dir => $d/state
}
plugins => {
  weighted => {
    service_types => up
    wrr => {
      b1 = [ 192.0.2.1, 1 ]
      b2 = [ 192.0.2.2, 2 ]
      b3 = [ 192.0.2.3, 3 ]
      b4 = [ 192.0.2.4, 4 ]
    }
  }
  geoip => {
    maps => {
      bench => {
        geoip2_db => bench.mmdb
        datacenters => [ fra, iad, sin ]
        auto_dc_coords => { fra => [ 50.11, 8.68 ], iad => [ 38.95, -77.45 ], sin => [ 1.35, 103.82 ] }
      }
    }
    resources => {
      geo => {
        map => bench
        service_types => up
        dcmap => { fra => 192.0.2.20, iad => 198.51.100.20, sin => 203.0.113.20 }
      }
    }
  }
}
EOF
  taskset -c 0 gdnsd -c "$d" start >"$d/out" 2>&1 &
}

config_nsd() {
  local d="$W/nsd"; mkdir -p "$d"
  cp "$W/static.zone" "$d/bench.test.zone"
  write_nsd_conf "$d" "${PORT[nsd]}"
  taskset -c 0 nsd -d -c "$d/nsd.conf" >"$d/out" 2>&1 &
}

config_knot() { # Knot with its geoip module: weighted and geodb (by country, ECS honoured)
  local d="$W/knot"; mkdir -p "$d/db"
  # The module answers for names the zone holds: placeholders it replaces.
  { cat "$W/static.zone"; echo "wrr 30 IN A 192.0.2.1"; echo "geo 30 IN A 192.0.2.20"; } > "$d/bench.test.zone"
  cat > "$d/wrr.yaml" <<EOF
wrr.bench.test:
  - weight: 1
    A: 192.0.2.1
  - weight: 2
    A: 192.0.2.2
  - weight: 3
    A: 192.0.2.3
  - weight: 4
    A: 192.0.2.4
EOF
  # Each country of the bench database to its nearest site (Paris, for 127/8: Frankfurt).
  cat > "$d/geo.yaml" <<EOF
geo.bench.test:
  - geo: "DE"
    A: 192.0.2.20
  - geo: "FR"
    A: 192.0.2.20
  - geo: "US"
    A: 198.51.100.20
  - geo: "SG"
    A: 203.0.113.20
EOF
  local signing=off
  [ -z "$DNSSEC" ] || signing=on
  cat > "$d/knot.conf" <<EOF
server:
    listen: 127.0.0.1@${PORT[knot]}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
    rundir: $d
    pidfile: $d/knot.pid
    edns-client-subnet: on
database:
    storage: $d/db
log:
  - target: stderr
    any: error
mod-geoip:
  - id: wrr
    config-file: $d/wrr.yaml
    ttl: 30
    mode: weighted
    dnssec: $signing
  - id: geo
    config-file: $d/geo.yaml
    ttl: 30
    mode: geodb
    geodb-file: $W/bench.mmdb
    geodb-key: [ country/iso_code ]
    dnssec: $signing
zone:
  - domain: bench.test
    storage: $d
    file: bench.test.zone
    dnssec-signing: $signing
    module: [ mod-geoip/wrr, mod-geoip/geo ]
EOF
  # Signing variants are made when the module loads: the keys must exist by then.
  [ -z "$DNSSEC" ] || keymgr -c "$d/knot.conf" bench.test. generate algorithm=ecdsap256sha256 ksk=yes zsk=yes >/dev/null
  taskset -c 0 knotd -c "$d/knot.conf" >"$d/out" 2>&1 &
}

config_knot-online() { # Knot signing each answer as it goes out (mod-onlinesign)
  local d="$W/knot-online"; mkdir -p "$d/db"
  cp "$W/static.zone" "$d/bench.test.zone"
  cat > "$d/knot.conf" <<EOF
server:
    listen: 127.0.0.1@${PORT[knot-online]}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
    rundir: $d
    pidfile: $d/knot.pid
database:
    storage: $d/db
log:
  - target: stderr
    any: error
zone:
  - domain: bench.test
    storage: $d
    file: bench.test.zone
    module: mod-onlinesign
EOF
  taskset -c 0 knotd -c "$d/knot.conf" >"$d/out" 2>&1 &
}

config_pdns() {
  local d="$W/pdns"; mkdir -p "$d"
  {
    cat "$W/static.zone"
    echo "wrr 30 IN LUA A \"pickwrandom({{1,'192.0.2.1'},{2,'192.0.2.2'},{3,'192.0.2.3'},{4,'192.0.2.4'}})\""
    echo "geo 30 IN LUA A \"pickclosest({'192.0.2.20','198.51.100.20','203.0.113.20'})\""
  } > "$d/bench.test.zone"
  echo "zone \"bench.test\" { type master; file \"$d/bench.test.zone\"; };" > "$d/named.conf"
  echo "domains: []" > "$d/geo.yaml"
  local signing=""
  [ -z "$DNSSEC" ] || signing="bind-dnssec-db=$d/dnssec.sqlite3"
  cat > "$d/pdns.conf" <<EOF
launch=bind,geoip
bind-config=$d/named.conf
$signing
geoip-database-files=mmdb:$W/bench.mmdb
geoip-zones-file=$d/geo.yaml
enable-lua-records=yes
edns-subnet-processing=yes
local-address=127.0.0.1:${PORT[pdns]}
receiver-threads=1
distributor-threads=1
security-poll-suffix=
socket-dir=$d
guardian=no
daemon=no
disable-syslog=yes
loglevel=3
EOF
  if [ -n "$DNSSEC" ]; then
    pdnsutil --config-dir="$d" create-bind-db "$d/dnssec.sqlite3" >/dev/null 2>&1
    pdnsutil --config-dir="$d" secure-zone bench.test >/dev/null 2>&1
  fi
  taskset -c 0 pdns_server --config-dir="$d" >"$d/out" 2>&1 &
}

serves() { # serves SERVER WORKLOAD
  case "$2" in
    weighted*|geo*) [[ "$1" == meridian* || "$1" == baseline || "$1" == gdnsd || "$1" == pdns || "$1" == knot ]] ;;
    *) true ;;
  esac
}

start_backend
for s in $SERVERS; do
  "config_$s"
  PID[$s]=$!
  PIDS+=("${PID[$s]}")
done
for s in $SERVERS; do
  ok=""
  for _ in $(seq 1 100); do
    if dig @127.0.0.1 -p "${PORT[$s]}" +time=1 +tries=1 +short h1.bench.test A 2>/dev/null | grep -q '^10\.'; then ok=1; break; fi
    sleep 0.1
  done
  [ -n "$ok" ] || { echo "$s did not start:"; cat "$W/$s/out" "$W/$s/err" 2>/dev/null | tail -20; exit 1; }
  # Weighted and geo names answer where they exist.
  if serves "$s" weighted; then
    dig @127.0.0.1 -p "${PORT[$s]}" +short wrr.bench.test A | grep -q '^192\.0\.2\.' || { echo "$s: wrr does not answer"; exit 1; }
  fi
done
echo "servers: $(for s in $SERVERS; do printf '%s=127.0.0.1:%s pid %s  ' "$s" "${PORT[$s]}" "${PID[$s]}"; done)"
echo "backend for Meridian's probes: 127.0.0.1:$BACKEND_PORT"

TCK=$(getconf CLK_TCK)
extra_for() { # extra_for WORKLOAD: dnsperf's EDNS options for it, in EXTRA
  EXTRA=()
  case "$1" in
    geo-ecs) EXTRA=(-E "$ECS_OPT") ;;
    geo-ecs-do) EXTRA=(-D -E "$ECS_OPT") ;;
    *-do) EXTRA=(-D) ;;
    mix) EXTRA=(-D -E "$COOKIE_OPT") ;;
  esac
}

full_load() { # full_load SERVER WORKLOAD: dnsperf on CPU 1 for SECONDS_PER_RUN, unthrottled
  extra_for "$2"
  taskset -c 1 dnsperf -s 127.0.0.1 -p "${PORT[$1]}" -d "$W/q-$2" -l "$SECONDS_PER_RUN" -c 4 -q 200 -t 2 "${EXTRA[@]}"
}

run_one() { # run_one ROUND SERVER WORKLOAD: throughput, then latency at a fixed rate
  local r=$1 s=$2 w=$3
  local before after out
  before=$(python3 "$ROOT/ops/bench/treecpu.py" "${PID[$s]}")
  out=$(full_load "$s" "$w" 2>&1)
  after=$(python3 "$ROOT/ops/bench/treecpu.py" "${PID[$s]}")
  local qps run lost
  qps=$(awk '/Queries per second:/ {print $4}' <<<"$out")
  run=$(awk '/Run time \(s\):/ {print $4}' <<<"$out")
  lost=$(awk '/Queries lost:/ {print $3}' <<<"$out")
  echo "$r $s $w ${qps:-0} $(python3 -c "print(($after - $before) / $TCK)") ${run:-$SECONDS_PER_RUN}" >> "$W/results.tsv"

  local rate=$LAT_QPS lat
  extra_for "$w"
  [ "$s" = pdns ] && [[ "$w" == weighted || "$w" == geo* ]] && rate=1000
  lat=$(taskset -c 1 dnsperf -s 127.0.0.1 -p "${PORT[$s]}" -d "$W/q-$w" -l "$LAT_SECONDS" -Q "$rate" -c 4 -t 2 -v "${EXTRA[@]}" 2>/dev/null \
    | python3 -c 'import sys
lat = sorted(float(l.split()[-1]) for l in sys.stdin if l.startswith(">") and len(l.split()) >= 5)
print("%.1f %.1f" % (lat[len(lat) // 2] * 1e6, lat[int(len(lat) * 0.99)] * 1e6) if lat else "nan nan")')
  echo "$r $s $w $lat" >> "$W/latency.tsv"
  printf '  round %s %-9s %-9s %10.0f q/s  (lost %s)  p50/p99 %s us\n' "$r" "$s" "$w" "${qps:-0}" "${lost:-?}" "${lat/ //}"
}

echo "== $ROUNDS interleaved rounds: ${SECONDS_PER_RUN}s at full load, then ${LAT_SECONDS}s at $LAT_QPS q/s"
read -r -a order <<<"$SERVERS"
for r in $(seq 1 "$ROUNDS"); do
  for w in $WORKLOADS; do
    for s in "${order[@]}"; do
      serves "$s" "$w" && run_one "$r" "$s" "$w"
    done
  done
  order=("${order[@]:1}" "${order[0]}")
done

profile_one() { # profile_one SERVER WORKLOAD: perf samples over part of a full-load run
  local s=$1 w=$2 d="$W/profile/$1-$2" window=$((SECONDS_PER_RUN / 2))
  mkdir -p "$d"
  full_load "$s" "$w" >"$d/dnsperf" 2>&1 &
  local client=$! pids before after t0 t1
  pids=$(python3 "$ROOT/ops/bench/treecpu.py" --pids "${PID[$s]}")
  t0=$(date +%s.%N)
  before=$(python3 "$ROOT/ops/bench/treecpu.py" "${PID[$s]}")
  # Counted over the same window: system calls and context switches, to compare how each
  # server talks to the kernel (batch sizes, wake-ups).
  perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$pids" -o "$d/stat" -- sleep "$window" >/dev/null 2>&1 &
  local counting=$!
  perf record -q -F 1000 -p "$pids" -o "$d/perf.data" -- sleep "$window" >/dev/null 2>&1
  wait "$counting" || true
  after=$(python3 "$ROOT/ops/bench/treecpu.py" "${PID[$s]}")
  t1=$(date +%s.%N)
  wait "$client"
  perf report -i "$d/perf.data" --no-children --sort dso -F overhead,dso -t '|' 2>/dev/null | grep -v '^#' | grep . > "$d/dso" || true
  perf report -i "$d/perf.data" --no-children --sort sym -F overhead,sym -t '|' 2>/dev/null | grep -v '^#' | grep -F '[.]' > "$d/sym" || true
  python3 "$ROOT/ops/bench/profile.py" "$s" "$w" "$d" "$(python3 -c "print(($after - $before) / $TCK)")" "$(python3 -c "print($t1 - $t0)")" "$window" >> "$W/profile.tsv"
}

if [ -n "$PROFILE" ]; then
  echo "== profile: perf samples for $((SECONDS_PER_RUN / 2))s of a full-load run per server and workload"
  for w in $WORKLOADS; do
    for s in $SERVERS; do
      serves "$s" "$w" && profile_one "$s" "$w"
    done
  done
fi

echo
echo "== results (medians over $ROUNDS rounds; per core = q/s / server CPU share)"
python3 "$ROOT/ops/bench/summarize.py" "$W/results.tsv" "$W/latency.tsv"
if [ -n "$DNSSEC" ]; then
  echo
  echo "== signed over unsigned, per core (medians of the per-round ratios)"
  python3 - "$W/results.tsv" <<'PY'
import statistics, sys
rate = {}
for line in open(sys.argv[1]):
    r, s, w, qps, cpu, run = line.split()
    cpu, qps = float(cpu), float(qps)
    rate[(r, s, w)] = qps * float(run) / cpu if cpu > 0 else 0.0
servers = sorted({s for _, s, _ in rate})
for signed in sorted({w for _, _, w in rate if w.endswith("-do")}):
    plain = signed[:-3]
    cells = []
    for s in servers:
        ratios = [rate[k] / rate[(k[0], s, plain)] for k in rate
                  if k[1] == s and k[2] == signed and rate.get((k[0], s, plain))]
        cells.append("%s %.2f" % (s, statistics.median(ratios)) if ratios else "%s -" % s)
    print("%-12s %s" % (signed, "   ".join(cells)))
PY
fi
if [ -n "$PROFILE" ]; then
  echo
  echo "== where the CPU time goes (perf samples; kernel: socket calls, loopback path, scheduling)"
  printf '%-10s %-9s %9s %9s %9s %9s %7s %7s  %s\n' workload server "us CPU/q" "kernel" "user" "kernel" "calls/q" "csw/kq" "busiest user-space functions (share of all samples)"
  cat "$W/profile.tsv"
fi
