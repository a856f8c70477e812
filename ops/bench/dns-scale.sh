#!/usr/bin/env bash
# Memory and load time at scale (run by `ops/bench/dns.sh --scale`): a zone of 1,000,000 static
# records and a load-balancing file of 100,000 names over 1,000 pools sharing 100 checks.
# Reports, for Meridian (zone + names, probes running), Meridian (zone only) and NSD (zone):
# the time from start until the last record answers, the resident memory of the process tree
# after load, and the time a reload of a changed zone takes until the new serial is served.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=ops/bench/common.sh
source "$ROOT/ops/bench/common.sh"

meridian_binary
need=()
command -v nsd >/dev/null || need+=(nsd)
command -v dig >/dev/null || need+=(bind9-dnsutils)
install_missing "${need[@]}"

now() { date +%s.%N; }
elapsed() { python3 -c "print('%.2f' % ($2 - $1))"; }

rss_mb() { # resident memory of a process tree, MiB
  python3 "$ROOT/ops/bench/treecpu.py" --rss "$1"
}

wait_answer() { # PORT NAME: until NAME answers (at most 10 minutes)
  for _ in $(seq 1 6000); do
    dig @127.0.0.1 -p "$1" +time=1 +tries=1 +short "$2" A 2>/dev/null | grep -q . && return 0
    sleep 0.1
  done
  return 1
}

wait_serial() { # PORT SERIAL: until the served SOA serial is SERIAL (at most 10 minutes)
  for _ in $(seq 1 6000); do
    dig @127.0.0.1 -p "$1" +time=1 +tries=1 +short bench.test SOA 2>/dev/null | awk '{print $3}' | grep -qx "$2" && return 0
    sleep 0.1
  done
  return 1
}

start_backend

echo "== generating 1,000,000 static records and 100,000 load-balanced names"
python3 "$ROOT/ops/bench/scale_data.py" "$W" "$BACKEND_PORT"

bump_serial() { sed -i '2s/ 1 7200 / 2 7200 /' "$1"; }

printf '%-18s %10s %10s %10s\n' server "load s" "RSS MiB" "reload s"
for variant in meridian-gslb meridian-zone nsd; do
  d="$W/$variant"
  mkdir -p "$d"
  cp "$W/scale.zone" "$d/bench.test.zone"
  port=$(free_port)
  if [ "$variant" = nsd ]; then
    write_nsd_conf "$d" "$port"
    t0=$(now)
    taskset -c 0 nsd -d -c "$d/nsd.conf" >"$d/out" 2>&1 &
  else
    control=$(free_port)
    gslb=""
    if [ "$variant" = meridian-gslb ]; then
      cp "$W/scale.gslb.toml" "$d/bench.test.gslb.toml"
      gslb='gslb = "bench.test.gslb.toml"'
    fi
    cat > "$d/meridian.toml" <<EOF
[server]
listen = ["127.0.0.1:$port"]
control = "127.0.0.1:$control"
state_dir = "state"
udp_workers = 1

[[zone]]
origin = "bench.test"
file = "bench.test.zone"
$gslb
EOF
    t0=$(now)
    MERIDIAN_LOG=warn taskset -c 0 "$MERIDIAN" serve --config "$d/meridian.toml" >"$d/out" 2>"$d/err" &
  fi
  pid=$!
  PIDS+=("$pid")
  wait_answer "$port" h999999.bench.test || { echo "$variant did not load"; tail "$d"/*.log "$d/err" 2>/dev/null; exit 1; }
  t1=$(now)
  rss=$(rss_mb "$pid")
  bump_serial "$d/bench.test.zone"
  t2=$(now)
  if [ "$variant" = nsd ]; then
    kill -HUP "$pid"
  else
    "$MERIDIAN" ctl --control "127.0.0.1:$control" reload >/dev/null
  fi
  wait_serial "$port" 2 || { echo "$variant did not reload"; exit 1; }
  t3=$(now)
  printf '%-18s %10s %10s %10s\n' "$variant" "$(elapsed "$t0" "$t1")" "$rss" "$(elapsed "$t2" "$t3")"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
done
