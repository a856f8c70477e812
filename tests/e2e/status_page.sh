#!/usr/bin/env bash
# The status page in a real headless browser (Debian's chromium through chromidriver): one page
# load, a backend stops, the same page shows its member down without a reload, an explain query
# through the form shows its reason, and the page fits a phone screen. Screenshots are written
# to target/status-page*.png for inspection.
# Usage: tests/e2e/status_page.sh [path/to/meridian]   (needs chromium, chromium-driver)
set -euo pipefail

BIN=$(realpath "${1:-target/debug/meridian}")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
[ -x "$BIN" ] || { echo "no meridian binary at $BIN (run cargo build first)"; exit 2; }
for tool in chromium chromedriver; do
  command -v $tool >/dev/null || { echo "$tool is missing (apt-get install chromium chromium-driver)"; exit 2; }
done

# shellcheck source=tests/e2e/lib.sh
source "$ROOT/tests/e2e/lib.sh"
work_dir browser

BACKEND=$(free_port)
mkdir -p "$W/www" && echo ok > "$W/www/index.html"
/usr/bin/python3 -m http.server "$BACKEND" --bind 127.0.0.1 --directory "$W/www" >/dev/null 2>&1 &
BACKEND_PID=$!
PIDS+=($BACKEND_PID)

printf '$TTL 300\n@ IN SOA ns1.example.test. h.example.test. 1 7200 900 1209600 60\n  IN NS ns1\nns1 IN A 192.0.2.53\n' > "$W/example.test.zone"
cat > "$W/example.test.gslb.toml" <<TOML
[[name]]
name = "www"
policy = "weighted"
pool = "web"

[pool.web]
check = "http"
members = [
  { site = "fra", address = "192.0.2.10", probe = "127.0.0.1:$BACKEND" },
  { site = "iad", address = "192.0.2.11", probe = "127.0.0.1:$BACKEND", weight = 2 },
]

[check.http]
kind = "http"
interval = "300ms"
timeout = "300ms"
fall = 1
rise = 1
TOML
cat > "$W/meridian.toml" <<TOML
[server]
listen = ["127.0.0.1:0"]
control = "127.0.0.1:0"
state_dir = "state"
identity = "browser-test"

[[zone]]
origin = "example.test"
file = "example.test.zone"
gslb = "example.test.gslb.toml"
TOML
start_serve "$BIN" "$W/meridian.toml"
# 60 answers for www (weights 1:2), for the page's answer shares.
/usr/bin/python3 - "$DNS" <<'PY'
import socket, struct, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
wire = b"\x03www\x07example\x04test\x00"
for i in range(60):
    s.sendto(struct.pack("!HHHHHH", i, 0x100, 1, 0, 0, 0) + wire + struct.pack("!HH", 1, 1), (host, int(port)))
    s.recv(512)
PY

DRIVER_PORT=$(free_port)
chromedriver --port="$DRIVER_PORT" --allowed-ips=127.0.0.1 > "$W/chromedriver.log" 2>&1 &
PIDS+=($!)
eventually 10 /usr/bin/python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
  "http://127.0.0.1:$DRIVER_PORT/status"

mkdir -p "$ROOT/target" "$W/shots"
coproc DRIVE { /usr/bin/python3 "$ROOT/tests/e2e/status_page.py" "http://127.0.0.1:$DRIVER_PORT" \
  "http://$CONTROL/" "fra/192.0.2.10" "www.example.test." "$W/shots" 2>&1; }
driver_pid=$DRIVE_PID  # bash unsets DRIVE_PID when the coprocess ends
status=1
while IFS= read -r line <&"${DRIVE[0]}"; do
  if [ "$line" = "stop-backend" ]; then
    kill "$BACKEND_PID"; wait "$BACKEND_PID" 2>/dev/null || true
    echo stopped >&"${DRIVE[1]}"
  else
    echo "$line"
  fi
done
wait "$driver_pid" && status=0
cp "$W"/shots/*.png "$ROOT/target/" 2>/dev/null || true
if [ $status -ne 0 ]; then
  echo "--- meridian log"; tail -n 20 "$W/serve.log"
  echo "--- chromedriver log"; tail -n 20 "$W/chromedriver.log"
fi
echo "browser suite: $([ $status -eq 0 ] && echo passed || echo FAILED)"
exit $status
