#!/usr/bin/env bash
# The operator surface against a running node: /metrics passes `promtool check metrics`, the
# alert rules pass `promtool check rules` and their unit tests, and every metric the rules and
# the Grafana dashboard use is one the node exports.
# Usage: tests/e2e/operator.sh [path/to/meridian]   (needs promtool: apt-get install prometheus)
set -euo pipefail

BIN=$(realpath "${1:-target/debug/meridian}")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
[ -x "$BIN" ] || { echo "no meridian binary at $BIN (run cargo build first)"; exit 2; }
command -v promtool >/dev/null || { echo "promtool is missing (apt-get install prometheus)"; exit 2; }

# shellcheck source=tests/e2e/lib.sh
source "$ROOT/tests/e2e/lib.sh"
work_dir operator

cp "$ROOT/zones/example.test.zone" "$ROOT/zones/example.test.gslb.toml" "$W/"
cp -r "$ROOT/geo" "$W/geo"
sed -e 's|^state_dir = .*|state_dir = "state"|' -e 's|"../geo/|"geo/|' \
  -e 's|^listen = .*|listen = ["127.0.0.1:0"]|' -e 's|^control = .*|control = "127.0.0.1:0"|' \
  "$ROOT/zones/meridian.toml" > "$W/meridian.toml"
start_serve "$BIN" "$W/meridian.toml"

# Some traffic, so counters and histograms have samples.
/usr/bin/python3 - "$DNS" <<'PY'
import socket, struct, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
def q(name, qtype):
    wire = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    s.sendto(struct.pack("!HHHHHH", 7, 0x100, 1, 0, 0, 0) + wire + struct.pack("!HH", qtype, 1), (host, int(port)))
    s.recv(4096)
for _ in range(20):
    q("www.example.test", 1); q("geo.example.test", 28); q("nothing.example.test", 1)
PY
scrape() { /usr/bin/python3 -c 'import sys, urllib.request; print(urllib.request.urlopen("http://" + sys.argv[1] + "/metrics", timeout=5).read().decode(), end="")' "$CONTROL"; }
scrape > "$W/metrics.txt"

check "/metrics passes promtool check metrics" eval 'promtool check metrics < "$W/metrics.txt"'
check "alert rules pass promtool check rules" promtool check rules "$ROOT/ops/prometheus/meridian-alerts.yml"
check "alert rules pass their unit tests" eval '(cd "$ROOT/ops/prometheus" && promtool test rules meridian-alerts.test.yml)'
check "the dashboard is valid JSON" /usr/bin/python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$ROOT/ops/grafana/meridian-dashboard.json"

# Every meridian_* name used by the rules and the dashboard is exported (histogram series by
# their family name).
exported=$(grep -v '^#' "$W/metrics.txt" | grep -o '^meridian_[a-z_]*' | sed -E 's/_(bucket|sum|count)$//' | sort -u)
declared=$(grep '^# TYPE' "$W/metrics.txt" | awk '{print $3}' | sort -u)
used=$(cat "$ROOT/ops/prometheus/meridian-alerts.yml" "$ROOT/ops/grafana/meridian-dashboard.json" | grep -o 'meridian_[a-z_]*' | sed -E 's/_(bucket|sum|count)$//' | sort -u)
missing=$(comm -23 <(echo "$used") <(echo "$declared"))
check "every metric the rules and dashboard use is exported ($(echo "$used" | wc -l) names)" test -z "$missing"
[ -z "$missing" ] || echo "  missing: $missing"
check "every exported sample belongs to a declared family" test -z "$(comm -23 <(echo "$exported") <(echo "$declared"))"
check "queries were counted" grep -q 'meridian_queries_total{zone="example.test.",qtype="A",rcode="NXDOMAIN",transport="udp"} 20' "$W/metrics.txt"

finish "operator suite"
