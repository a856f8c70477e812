#!/usr/bin/env bash
# The HTTP caching test suite (`http-cache-tests` from npm, the suite behind cache-tests.fyi)
# through Meridian's site proxy and through nginx as a cache (`proxy_cache`,
# `proxy_cache_revalidate on`) in the same run, both in front of the suite's own origin.
# Prints each one's required tests passed and the required tests Meridian fails; fails when
# Meridian passes fewer than nginx did, or fewer than ops/conformance/cache-tests.baseline.
#
#   ops/conformance/cache-tests.sh [BINARY]     (default target/debug/meridian)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${1:-$ROOT/target/debug/meridian}
source "$ROOT/tests/e2e/lib.sh"
SUITE_VERSION=0.4.5

need=()
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v nginx >/dev/null || need+=(nginx-light)
install_missing "${need[@]}"

# The suite is kept under target/ between runs (npm fetches it once).
SUITE_HOME="$ROOT/target/http-cache-tests-$SUITE_VERSION"
PKG="$SUITE_HOME/node_modules/http-cache-tests"
if [ ! -f "$PKG/cli.mjs" ]; then
  mkdir -p "$SUITE_HOME"
  (cd "$SUITE_HOME" && npm install --silent --no-audit --no-fund "http-cache-tests@$SUITE_VERSION" >/dev/null)
fi

work_dir cache-tests
ORIGIN_PORT=$(free_port)
(cd "$PKG" && exec env npm_config_port="$ORIGIN_PORT" npm_config_protocol=http npm_config_pidfile="$W/origin.pid" node server/server.mjs) >"$W/origin.log" 2>&1 &
PIDS+=($!)
eventually 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$ORIGIN_PORT" || { cat "$W/origin.log"; exit 1; }

# Meridian: one caching route to the origin.
MERIDIAN_PORT=$(free_port)
cat > "$W/site.toml" <<EOF
[proxy]
access_log = "off"

[[listener]]
address = "127.0.0.1:$MERIDIAN_PORT"

# The suite expects responses that set cookies to be stored (RFC 9111 allows it); the
# route's default, like nginx's and Varnish's, is not to.
[[route]]
pool = "origin"
cache = { store_set_cookie = true }

[pool.origin]
servers = [{ address = "127.0.0.1:$ORIGIN_PORT" }]
EOF
"$BIN" proxy --config "$W/site.toml" >"$W/meridian.out" 2>"$W/meridian.log" &
PIDS+=($!)

# nginx as the suite's authors run it: a shared cache that revalidates.
NGINX_PORT=$(free_port)
mkdir -p "$W/nginx/cache"
cat > "$W/nginx/nginx.conf" <<EOF
user $(id -un);
worker_processes 1;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log error;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $W/nginx/client_body;
  proxy_temp_path $W/nginx/proxy;
  fastcgi_temp_path $W/nginx/fastcgi;
  uwsgi_temp_path $W/nginx/uwsgi;
  scgi_temp_path $W/nginx/scgi;
  proxy_cache_path $W/nginx/cache keys_zone=suite:10m;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://127.0.0.1:$ORIGIN_PORT;
      proxy_cache suite;
      proxy_cache_revalidate on;
      proxy_set_header Host \$http_host;
    }
  }
}
EOF
nginx -p "$W/nginx" -c "$W/nginx/nginx.conf" -g 'daemon off;' 2>"$W/nginx/stderr" &
PIDS+=($!)
for port in "$MERIDIAN_PORT" "$NGINX_PORT"; do
  eventually 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" || { cat "$W/meridian.log" "$W/nginx/stderr"; exit 1; }
done

run_suite() { # run_suite NAME PORT: the suite's results as JSON in $W/NAME.json
  (cd "$PKG" && npm run --silent cli --base="http://127.0.0.1:$2") > "$W/$1.json"
}
run_suite meridian "$MERIDIAN_PORT"
run_suite nginx "$NGINX_PORT"

# Required tests passed, as the suite's own display counts them (a test whose dependency
# failed does not pass; one the suite did not run against a proxy is not counted), and the
# ones Meridian fails.
cat > "$W/count.mjs" <<EOF
import fs from 'fs'
import tests from '$PKG/tests/index.mjs'
import surrogate from '$PKG/tests/surrogate-control.mjs'
import { determineTestResult } from '$PKG/lib/display.mjs'
tests.push(surrogate)
const [file, listFailures] = process.argv.slice(2)
const results = JSON.parse(fs.readFileSync(file, 'utf8'))
let passed = 0
let required = 0
for (const suite of tests) {
  for (const test of suite.tests) {
    if (test.kind !== undefined && test.kind !== 'required') continue
    // Tests the suite does not run against a proxy (browser-only ones) are not counted.
    if (results[test.id] === undefined) continue
    required++
    const verdict = determineTestResult(tests, test.id, results)
    if (verdict[2] === '\u2705') passed++
    else if (listFailures) console.error('  fails: ' + test.id + ' (' + suite.id + '): ' + test.name)
  }
}
console.log(passed + ' ' + required)
EOF
read -r meridian required < <(node "$W/count.mjs" "$W/meridian.json" list 2>"$W/failures.txt")
read -r nginx _ < <(node "$W/count.mjs" "$W/nginx.json")
baseline=$(grep -Eo '^[0-9]+' "$ROOT/ops/conformance/cache-tests.baseline")
echo "http-cache-tests $SUITE_VERSION, required tests passed (of $required):"
echo "  meridian $meridian"
echo "  nginx    $nginx"
echo "  baseline $baseline (ops/conformance/cache-tests.baseline)"
echo "required tests Meridian fails:"
cat "$W/failures.txt"
status=0
if [ "$meridian" -lt "$nginx" ]; then echo "FAIL: fewer than nginx"; status=1; fi
if [ "$meridian" -lt "$baseline" ]; then echo "FAIL: fewer than the baseline"; status=1; fi
exit $status
