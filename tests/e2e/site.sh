#!/usr/bin/env bash
# The product end to end: `meridian serve` answers www.example.test with the addresses of two
# `meridian proxy` sites on loopback (127.0.0.21 and 127.0.0.22, one port), each in front of
# its own two servers; `curl --resolve` through each site reaches that site's servers; and a
# site whose proxy stops leaves the DNS answers once its checks fail.
# Usage: tests/e2e/site.sh [path/to/meridian]   (needs dig and curl)
set -euo pipefail

BIN=$(realpath "${1:-target/debug/meridian}")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
[ -x "$BIN" ] || { echo "no meridian binary at $BIN (run cargo build first)"; exit 2; }
for tool in dig curl; do
  command -v "$tool" >/dev/null || { echo "$tool is missing"; exit 2; }
done

# shellcheck source=tests/e2e/lib.sh
source "$ROOT/tests/e2e/lib.sh"
work_dir site

# Each site's servers: small HTTP servers that name themselves.
for s in a1 a2 b1 b2; do
  mkdir -p "$W/www-$s"
  echo "server $s" > "$W/www-$s/index.html"
done
declare -A SERVER_PORT
for s in a1 a2 b1 b2; do
  port=$(free_port)
  SERVER_PORT[$s]=$port
  /usr/bin/python3 -m http.server "$port" --bind 127.0.0.1 --directory "$W/www-$s" >/dev/null 2>&1 &
  PIDS+=($!)
done
for s in a1 a2 b1 b2; do
  eventually 10 curl -sf "http://127.0.0.1:${SERVER_PORT[$s]}/" || { echo "server $s did not start"; exit 1; }
done

# The two site proxies, on one port at two loopback addresses.
PORT=$(free_port)
start_proxy() { # start_proxy SITE ADDRESS SERVER SERVER
  cat > "$W/site-$1.toml" <<EOF
[proxy]
control = "127.0.0.1:0"
access_log = "off"
drain_timeout = "2s"

[[listener]]
address = "$2:$PORT"

[[route]]
pool = "web"

[check.up]
kind = "http"
path = "/"
interval = "500ms"
timeout = "400ms"
rise = 1
fall = 1

[pool.web]
check = "up"
servers = [{ address = "127.0.0.1:${SERVER_PORT[$3]}" }, { address = "127.0.0.1:${SERVER_PORT[$4]}" }]
EOF
  "$BIN" proxy --config "$W/site-$1.toml" >"$W/proxy-$1.out" 2>"$W/proxy-$1.log" &
  PIDS+=($!)
  eval "PROXY_PID_$1=$!"
  eventually 10 grep -q listening "$W/proxy-$1.out" || { echo "proxy $1 did not start"; cat "$W/proxy-$1.log"; exit 1; }
}
start_proxy a 127.0.0.21 a1 a2
start_proxy b 127.0.0.22 b1 b2

# The DNS side: www answers the sites whose proxies pass their checks.
cat > "$W/example.test.gslb.toml" <<EOF
[[name]]
name = "www"
policy = "all"
pool = "sites"
ttl = "5s"

[pool.sites]
check = "through-the-proxy"
members = [
  { site = "a", address = "127.0.0.21:$PORT" },
  { site = "b", address = "127.0.0.22:$PORT" },
]

[check.through-the-proxy]
kind = "http"
path = "/"
interval = "500ms"
timeout = "400ms"
rise = 1
fall = 2
EOF
serve_example_test "$BIN"
DNS_HOST=${DNS%:*}
DNS_PORT=${DNS##*:}
answers() { dig +short +norec @"$DNS_HOST" -p "$DNS_PORT" www.example.test A | sort | tr '\n' ' '; }

check "DNS answers both sites once their proxies pass" eventually 10 eval 'test "$(answers)" = "127.0.0.21 127.0.0.22 "'
through() { # through ADDRESS: the body of a request to www through that site
  curl -sf --max-time 5 --resolve "www.example.test:$PORT:$1" "http://www.example.test:$PORT/"
}
site_a=$(for _ in 1 2 3 4; do through 127.0.0.21; done | sort -u | tr '\n' ' ')
site_b=$(for _ in 1 2 3 4; do through 127.0.0.22; done | sort -u | tr '\n' ' ')
check "site a's proxy balances over its own servers ($site_a)" test "$site_a" = "server a1 server a2 "
check "site b's proxy balances over its own servers ($site_b)" test "$site_b" = "server b1 server b2 "
check "the proxy hides the servers (no Server header)" eval '! curl -sI --resolve "www.example.test:$PORT:127.0.0.21" "http://www.example.test:$PORT/" | grep -qi "^server:"'

# A server of site a stops: its proxy takes it out, clients of site a see no error.
kill "$(pgrep -f "http.server ${SERVER_PORT[a2]}")"
check "site a's proxy takes its dead server out" eventually 10 eval 'for _ in 1 2 3 4; do through 127.0.0.21 | grep -q "server a1" || exit 1; done'

# Site b's proxy stops: DNS leaves it out once its checks fail.
kill "$PROXY_PID_b"
check "a stopped site leaves the DNS answers" eventually 10 eval 'test "$(answers)" = "127.0.0.21 "'
check "the remaining site still serves" eval 'through 127.0.0.21 | grep -q "server a1"'

finish "site suite"
