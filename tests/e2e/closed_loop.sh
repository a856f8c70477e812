#!/usr/bin/env bash
# The closed loop end to end: two `meridian proxy` sites on loopback (127.0.0.21 and
# 127.0.0.22), each in front of its own server, behind one `meridian serve` whose
# `proxy-load` check reads their load reports each second. Site a is preferred (failover)
# and sheds between 4 and 12 open client connections. Holding connections open at site a
# moves answers to site b within two report rounds and back once they close, one weight
# factor change per watermark crossing; half way between the marks, dig over 1,000 client
# networks (ECS) finds site a's share within 5 points of its factor, each answer scoped to
# its /24. Then site a's server starts answering 503 while the proxy's load report (its
# probe) stays fine: what site a's clients got takes it out of the answers before any probe
# fails, and it comes back once they get 200 again.
# Usage: tests/e2e/closed_loop.sh [path/to/meridian]   (needs dig and curl)
set -euo pipefail

BIN=$(realpath "${1:-target/debug/meridian}")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
[ -x "$BIN" ] || { echo "no meridian binary at $BIN (run cargo build first)"; exit 2; }
for tool in dig curl; do
  command -v "$tool" >/dev/null || { echo "$tool is missing"; exit 2; }
done

# shellcheck source=tests/e2e/lib.sh
source "$ROOT/tests/e2e/lib.sh"
work_dir closed-loop

PORT=$(free_port)
REPORT_PORT=$(free_port)
# Each site's server answers 200, or the status written in $W/status-SITE.
for s in a b; do
  port=$(free_port)
  /usr/bin/python3 - "$port" "$W/status-$s" >/dev/null 2>&1 <<'PY' &
import http.server, sys
port, status_file = int(sys.argv[1]), sys.argv[2]
class Answer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        try:
            code = int(open(status_file).read())
        except (OSError, ValueError):
            code = 200
        body = b"ok\n"
        self.send_response(code)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), Answer).serve_forever()
PY
  PIDS+=($!)
  eval "SERVER_$s=$port"
  eventually 10 curl -sf "http://127.0.0.1:$port/" || { echo "server $s did not start"; exit 1; }
done

start_proxy() { # start_proxy SITE ADDRESS SERVER_PORT
  cat > "$W/site-$1.toml" <<EOF
[proxy]
access_log = "off"
header_timeout = "2m"
report = { address = "$2:$REPORT_PORT" }

[[listener]]
address = "$2:$PORT"

[[route]]
pool = "web"

[pool.web]
eject_after = 0
servers = [{ address = "127.0.0.1:$3" }]
EOF
  "$BIN" proxy --config "$W/site-$1.toml" >"$W/proxy-$1.out" 2>"$W/proxy-$1.log" &
  PIDS+=($!)
  eventually 10 grep -q listening "$W/proxy-$1.out" || { echo "proxy $1 did not start"; cat "$W/proxy-$1.log"; exit 1; }
}
start_proxy a 127.0.0.21 "$SERVER_a"
start_proxy b 127.0.0.22 "$SERVER_b"

cat > "$W/example.test.gslb.toml" <<EOF
[[name]]
name = "www"
policy = "failover"
pool = "sites"
ttl = "5s"

[pool.sites]
check = "load"
members = [
  { site = "a", address = "127.0.0.21", probe = "127.0.0.21:$REPORT_PORT", priority = 1 },
  { site = "b", address = "127.0.0.22", probe = "127.0.0.22:$REPORT_PORT", priority = 2 },
]

[check.load]
kind = "proxy-load"
interval = "1s"
timeout = "500ms"
jitter = "0%"
rise = 1
fall = 2

[site.a]
shed = { signal = "connections", low = 4, high = 12 }
passive = { errors_above = "20%", reports = 2, min_requests = 10 }
EOF
serve_example_test "$BIN"
DNS_HOST=${DNS%:*}
DNS_PORT=${DNS##*:}

# One query per client network 10.X.Y.0/24, numbered 0 to N-1, in one dig process.
for i in $(seq 0 999); do
  echo "www.example.test A +subnet=10.$((i / 256)).$((i % 256)).0/24"
done > "$W/networks"
share_of_a() { # share_of_a N: how many of the first N networks are answered with site a
  head -n "$1" "$W/networks" > "$W/batch"
  dig +short +norec @"$DNS_HOST" -p "$DNS_PORT" -f "$W/batch" | grep -c '^127\.0\.0\.21$' || true
}
metric() { # metric NAME: its value for site a's member (or its probe) in one scrape
  curl -sf "http://$CONTROL/metrics" > "$W/scrape"
  grep -E "^$1\{.*(a/127\.0\.0\.21|127\.0\.0\.21:$REPORT_PORT)" "$W/scrape" | awk '{print $2}'
}
rounds() { # passing and failed probe rounds of site a's report so far, from "$W/scrape"
  awk -v p="probe=\"127.0.0.21:$REPORT_PORT\"" 'index($0, p) && /^meridian_probe_(duration_seconds_count|failures_total)/ {n += $2} END {print n + 0}' "$W/scrape"
}
factor_is() { # factor_is VALUE: site a's weight factor, and the probe rounds in the same scrape
  local f
  f=$(metric meridian_member_weight_factor)
  ROUNDS_NOW=$(rounds)
  [ "$f" = "$1" ]
}
HELD=()
hold() { # hold N: opens N client connections to site a and keeps them open
  for _ in $(seq 1 "$1"); do
    exec {fd}<>"/dev/tcp/127.0.0.21/$PORT"
    HELD+=("$fd")
  done
}
release() {
  for fd in "${HELD[@]}"; do exec {fd}>&-; done
  HELD=()
}

check "both sites report and answer: every network on site a" \
  eventually 15 eval 'factor_is 1 && test "$(share_of_a 200)" = 200'
check "the member's load report is in status" \
  eval '"$BIN" ctl --control "$CONTROL" status --json | grep -q "active_connections"'

# Past the high watermark.
factor_is 1 || true
before=$ROUNDS_NOW
hold 16
check "16 connections: site a's factor drops to 0" eventually 10 factor_is 0
moved=$((ROUNDS_NOW - before))
check "within two report rounds ($moved)" test "$moved" -le 2
check "every network moves to site b" eventually 5 eval 'test "$(share_of_a 200)" = 0'
check "one factor change for one crossing" eval 'test "$(metric meridian_member_weight_factor_changes_total)" = 1'
check "site a is still up for its probes" eval 'test "$(metric meridian_member_up)" = 1'

# Back under the low watermark.
factor_is 0 || true
before=$ROUNDS_NOW
release
check "connections closed: site a's factor is back to 1" eventually 10 factor_is 1
back=$((ROUNDS_NOW - before))
check "within two report rounds ($back)" test "$back" -le 2
check "every network is back on site a" eventually 5 eval 'test "$(share_of_a 200)" = 200'
check "one more change for the way back" eval 'test "$(metric meridian_member_weight_factor_changes_total)" = 2'

# Half way: 8 connections between 4 and 12.
hold 8
check "8 connections: factor 0.5" eventually 10 factor_is 0.5
on_a=$(share_of_a 1000)
check "site a keeps $on_a of 1000 networks (500 +/- 50)" test "$on_a" -ge 450 -a "$on_a" -le 550
scope=$(dig +norec @"$DNS_HOST" -p "$DNS_PORT" www.example.test A +subnet=10.3.7.0/24 | grep -o 'CLIENT-SUBNET: [0-9./]*')
check "a split answer is scoped to the client's /24 ($scope)" test "$scope" = "CLIENT-SUBNET: 10.3.7.0/24/24"
why=$("$BIN" explain --control "$CONTROL" www.example.test --client 192.0.2.9 --ecs 10.3.7.0/24)
check "explain shows the factor and the split" eval 'grep -q "shed to 50%" <<<"$why" && grep -q "falls at" <<<"$why"'
release
check "factor back to 1" eventually 10 factor_is 1

# Site a's server fails its clients; the proxy's report, which its probe reads, stays fine.
echo 503 > "$W/status-a"
through_a() { curl -s -o /dev/null -w '%{http_code}\n' --resolve "www.example.test:$PORT:127.0.0.21" "http://www.example.test:$PORT/"; }
codes=$(for _ in $(seq 1 40); do through_a; done | sort | uniq -c | tr -s ' ' | tr '\n' ' ')
check "site a's clients get 503 ($codes)" test "$codes" = " 40 503 "
check "what its clients got takes site a out of the answers" eventually 10 eval 'test "$(share_of_a 50)" = 0'
check "tripped by errors, not by a failed probe" eval 'test "$(metric meridian_member_tripped)" = 1 && test "$(metric meridian_probe_failures_total)" = 0'
echo 200 > "$W/status-a"
for _ in $(seq 1 300); do through_a; done >/dev/null
check "site a's clients get 200 again: back in the answers" eventually 15 eval 'test "$(share_of_a 50)" = 50'

finish "closed loop suite"
