#!/usr/bin/env bash
# Side-by-side HTTP proxy benchmark: `meridian proxy` against nginx and HAProxy in front of one
# origin, on the same requests.
#
#   ops/bench/proxy.sh [--rounds N] [--seconds S] [--proxies "meridian nginx haproxy varnish"]
#                      [--rows "small 16k tls handshake resumed h2 cached"] [--connections C]
#                      [--profile]
#   MERIDIAN_BINARY=FILE ops/bench/proxy.sh ...   benchmark that binary instead of building one
#   ops/bench/proxy.sh --baseline OLD-BINARY --proxies "meridian baseline"
#                      this build against another Meridian binary in the same rounds
#
# Each proxy runs one worker pinned to CPU 0; the load generator (wrk, h2load) and the origin
# (an nginx serving two static files) share CPU 1. The comparable figure is requests per second
# per *proxy core*: requests divided by the CPU time the proxy's process tree used over the run
# (from /proc), since the load generator's core saturates first. Rounds are interleaved (the
# proxy order rotates each round); the table shows medians with min-max, p50/p99 latency under
# that load (medians over rounds), and each peer's per-core rate against Meridian's, taken within
# each round. Peak RSS is each proxy's whole tree at the end (VmHWM summed).
#
# Rows:
#   small      HTTP/1.1 keep-alive, a 13-byte body                 wrk
#   16k        HTTP/1.1 keep-alive, a 16 KiB body                  wrk
#   tls        HTTPS keep-alive (HTTP/1.1), the small body         wrk
#   handshake  a full TLS handshake per request (resumption off on that listener)    wrk
#   resumed    a resumed TLS handshake per request (tickets)       wrk
#   h2         HTTP/2 over TLS, 10 streams per connection          h2load
#   tcp        layer 4: a new TCP connection per request (the small body), forwarded as
#              bytes (Meridian `mode = "tcp"`, HAProxy `mode tcp`, nginx `stream`)   wrk
#   bulk       layer 4: 8 MiB bodies on 4 kept-alive connections (req/s x 8 MiB = bytes)  wrk
#   cached     HTTP/1.1 keep-alive, the small body as a cache hit (the origin says max-age):
#              Meridian `cache = true`, nginx `proxy_cache`, HAProxy's `cache`, and Varnish
#              when `--proxies` names it (it serves this row only)       wrk
# wrk and h2load resume TLS sessions by themselves: the handshake row's listener refuses
# resumption on the server side (nginx `ssl_session_cache off` and tickets off; HAProxy no
# tickets and no session cache; Meridian `resumption = false`).
#
# Configured alike: one worker, access logs off, upstream keep-alive, X-Forwarded-For and
# X-Forwarded-Proto set, ECDSA P-256 certificate, TLS 1.2 and 1.3. At layer 4 each proxy
# passes half-closes on (one side's end becomes a shutdown of the other's writing side while
# the other direction goes on): Meridian and HAProxy always, nginx with `proxy_half_close on`
# (by default it closes both sides at the first end, a shutdown and a read fewer per
# connection). Meridian runs as an operator would, with more on than the peers: a signed
# sticky cookie on every response (wrk sends none back, so each response signs a new one),
# Forwarded and X-Forwarded-Host, a request ID, and its metrics.
#
# --profile adds a phase that samples Meridian with `perf` during one run per row and prints
# its busiest functions.
# See ../../../shared/BENCHMARKING.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROUNDS=3
SECONDS_PER_RUN=8
PROXIES="meridian nginx haproxy"
ROWS="small 16k tls handshake resumed h2 tcp bulk cached"
CONNECTIONS=50
PROFILE=""
BASELINE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
    --proxies) PROXIES=$2; shift 2 ;;
    --rows) ROWS=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --profile) PROFILE=1; shift ;;
    --baseline) BASELINE=$(realpath "$2"); shift 2 ;;
    -h|--help) sed -n '2,45p' "$0"; exit 0 ;;
    *) echo "unknown option $1"; exit 2 ;;
  esac
done

# shellcheck source=ops/bench/common.sh
source "$ROOT/ops/bench/common.sh"

need=()
for pair in wrk:wrk h2load:nghttp2-client nginx:nginx-light haproxy:haproxy curl:curl; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
[ -z "$PROFILE" ] || command -v perf >/dev/null || need+=(linux-perf)
[[ " $PROXIES " != *" varnish "* ]] || command -v varnishd >/dev/null || need+=(varnish)
# nginx's layer 4 is a dynamic module.
NGINX_STREAM=/usr/lib/nginx/modules/ngx_stream_module.so
[ -e "$NGINX_STREAM" ] || need+=(libnginx-mod-stream)
install_missing "${need[@]}"
meridian_binary

# ---------------------------------------------------------------- origin and certificate
mkdir -p "$W/www"
printf 'hello, world\n' > "$W/www/small"
head -c 16384 /dev/zero | tr '\0' 'x' > "$W/www/16k"
head -c $((8 * 1024 * 1024)) /dev/zero | tr '\0' 'b' > "$W/www/bulk"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test,IP:127.0.0.1 \
  -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
cat "$W/cert.pem" "$W/key.pem" > "$W/both.pem"

nginx_common() { # nginx_common DIR: the lines every nginx here starts with
  # The worker runs as the user that starts it (as root, nginx would switch to nobody, which
  # may not read the work directory).
  printf 'user %s;\nworker_processes 1;\npid %s/nginx.pid;\nerror_log %s/error.log error;\n' "$(id -un)" "$1" "$1"
  printf 'events { worker_connections 4096; }\n'
}
nginx_temp_paths() { # nginx_temp_paths DIR
  for t in client_body proxy fastcgi uwsgi scgi; do printf '  %s_temp_path %s/%s;\n' "$t" "$1" "$t"; done
}

ORIGIN_PORT=$(free_port)
mkdir -p "$W/origin"
{
  nginx_common "$W/origin"
  echo "http {"
  echo "  access_log off;"
  nginx_temp_paths "$W/origin"
  echo "  keepalive_requests 1000000;"
  echo "  server { listen 127.0.0.1:$ORIGIN_PORT; root $W/www; default_type text/plain;"
  echo "    location /cached/ { alias $W/www/; add_header Cache-Control \"max-age=3600\"; } }"
  echo "}"
} > "$W/origin/nginx.conf"
taskset -c 1 nginx -p "$W/origin" -c "$W/origin/nginx.conf" -g 'daemon off;' 2>"$W/origin/err" &
PIDS+=($!)

# ---------------------------------------------------------------- proxies
# Each proxy listens four times: plain, TLS with resumption, TLS without, and layer 4.
declare -A PLAIN TLS FULL L4 PID
for p in $PROXIES; do
  PLAIN[$p]=$(free_port); TLS[$p]=$(free_port); FULL[$p]=$(free_port); L4[$p]=$(free_port)
done

config_meridian() { meridian_as meridian "$MERIDIAN"; }
config_baseline() {
  [ -x "$BASELINE" ] || { echo "baseline: give --baseline BINARY"; exit 2; }
  meridian_as baseline "$BASELINE"
}

meridian_as() { # meridian_as NAME BINARY
  local name=$1 binary=$2 d="$W/$1"; mkdir -p "$d"
  cat > "$d/site.toml" <<EOF
[proxy]
control = "127.0.0.1:$(free_port)"
workers = 1
access_log = "off"

[[listener]]
address = "127.0.0.1:${PLAIN[$name]}"

[[listener]]
address = "127.0.0.1:${TLS[$name]}"
tls = { certificates = [{ cert = "$W/cert.pem", key = "$W/key.pem" }] }

[[listener]]
address = "127.0.0.1:${FULL[$name]}"
tls = { certificates = [{ cert = "$W/cert.pem", key = "$W/key.pem" }], resumption = false }

[[listener]]
address = "127.0.0.1:${L4[$name]}"
mode = "tcp"
pool = "origin_tcp"

[[route]]
path_prefix = "/cached/"
pool = "origin_cached"
cache = true

[[route]]
pool = "origin"

[pool.origin_cached]
start = "up"
servers = [{ address = "127.0.0.1:$ORIGIN_PORT" }]

[pool.origin]
algorithm = "round-robin"
start = "up"
sticky = { cookie = "srv" }
servers = [{ address = "127.0.0.1:$ORIGIN_PORT" }]

[pool.origin_tcp]
start = "up"
servers = [{ address = "127.0.0.1:$ORIGIN_PORT" }]
EOF
  MERIDIAN_LOG=warn taskset -c 0 "$binary" proxy --config "$d/site.toml" >"$d/out" 2>"$d/err" &
}

config_nginx() {
  local d="$W/nginx"; mkdir -p "$d"
  local pass="location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto \$scheme; }"
  local cert="ssl_certificate $W/cert.pem; ssl_certificate_key $W/key.pem; ssl_protocols TLSv1.2 TLSv1.3;"
  {
    echo "load_module $NGINX_STREAM;"
    nginx_common "$d"
    echo "stream { upstream origin_tcp { server 127.0.0.1:$ORIGIN_PORT; } server { listen 127.0.0.1:${L4[nginx]}; proxy_pass origin_tcp; proxy_half_close on; } }"
    echo "http {"
    echo "  access_log off;"
    nginx_temp_paths "$d"
    echo "  keepalive_requests 1000000;"
    echo "  upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 64; keepalive_requests 1000000; }"
    echo "  proxy_cache_path $d/cache keys_zone=hits:10m;"
    echo "  server { listen 127.0.0.1:${PLAIN[nginx]}; $pass location /cached/ { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_cache hits; } }"
    echo "  server { listen 127.0.0.1:${TLS[nginx]} ssl http2; $cert ssl_session_cache shared:bench:10m; ssl_session_tickets on; $pass }"
    echo "  server { listen 127.0.0.1:${FULL[nginx]} ssl; $cert ssl_session_cache off; ssl_session_tickets off; $pass }"
    echo "}"
  } > "$d/nginx.conf"
  taskset -c 0 nginx -p "$d" -c "$d/nginx.conf" -g 'daemon off;' >"$d/out" 2>"$d/err" &
}

config_haproxy() {
  local d="$W/haproxy"; mkdir -p "$d"
  cat > "$d/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
  # No session cache: the handshake listener's connections make full handshakes; the other
  # TLS listener resumes by tickets.
  tune.ssl.cachesize 0
  ssl-default-bind-options ssl-min-ver TLSv1.2

defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option forwardfor

cache bench
  total-max-size 64
  max-age 3600

frontend plain
  bind 127.0.0.1:${PLAIN[haproxy]}
  http-request set-header X-Forwarded-Proto http
  use_backend cached if { path_beg /cached/ }
  default_backend origin

backend cached
  http-request cache-use bench
  http-response cache-store bench
  server origin 127.0.0.1:$ORIGIN_PORT

frontend tls
  bind 127.0.0.1:${TLS[haproxy]} ssl crt $W/both.pem alpn h2,http/1.1
  http-request set-header X-Forwarded-Proto https
  default_backend origin

frontend full
  bind 127.0.0.1:${FULL[haproxy]} ssl crt $W/both.pem no-tls-tickets alpn http/1.1
  http-request set-header X-Forwarded-Proto https
  default_backend origin

backend origin
  server origin 127.0.0.1:$ORIGIN_PORT

frontend l4
  mode tcp
  bind 127.0.0.1:${L4[haproxy]}
  default_backend origin_tcp

backend origin_tcp
  mode tcp
  server origin 127.0.0.1:$ORIGIN_PORT
EOF
  taskset -c 0 haproxy -db -f "$d/haproxy.cfg" >"$d/out" 2>"$d/err" &
}

config_varnish() {
  # Varnish serves the cached row only: plain HTTP, its default VCL in front of the origin.
  local d="$W/varnish"; mkdir -p "$d"
  taskset -c 0 varnishd -F -n "$d" -a "127.0.0.1:${PLAIN[varnish]}" -b "127.0.0.1:$ORIGIN_PORT" \
    -s malloc,64m -p thread_pools=1 >"$d/out" 2>"$d/err" &
}

for p in $PROXIES; do
  "config_$p"
  PID[$p]=$!
  PIDS+=("${PID[$p]}")
done
for p in $PROXIES; do
  ok=""
  if [ "$p" = varnish ]; then
    for _ in $(seq 1 100); do
      curl -sf "http://127.0.0.1:${PLAIN[$p]}/cached/small" 2>/dev/null | grep -q hello && { ok=1; break; }
      sleep 0.1
    done
    [ -n "$ok" ] || { echo "varnish did not start:"; tail -20 "$W/varnish/err"; exit 1; }
    continue
  fi
  for _ in $(seq 1 100); do
    if curl -sf "http://127.0.0.1:${PLAIN[$p]}/small" 2>/dev/null | grep -q hello \
      && curl -sfk "https://127.0.0.1:${FULL[$p]}/small" 2>/dev/null | grep -q hello \
      && curl -sf "http://127.0.0.1:${L4[$p]}/small" 2>/dev/null | grep -q hello; then ok=1; break; fi
    sleep 0.1
  done
  [ -n "$ok" ] || { echo "$p did not start:"; cat "$W/$p/out" "$W/$p/err" 2>/dev/null | tail -20; exit 1; }
  curl -sfk --http2 -o /dev/null -w '%{http_version}' "https://127.0.0.1:${TLS[$p]}/small" | grep -q '^2' \
    || { echo "$p: no h2 over TLS"; exit 1; }
done
echo "proxies: $(for p in $PROXIES; do printf '%s=127.0.0.1:%s pid %s  ' "$p" "${PLAIN[$p]}" "${PID[$p]}"; done)"
echo "origin: nginx on 127.0.0.1:$ORIGIN_PORT (CPU 1)"

# ---------------------------------------------------------------- runs
TCK=$(getconf CLK_TCK)

load() { # load PROXY ROW: the load generator's output, run on CPU 1
  local p=$1 row=$2
  case "$row" in
    small) taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$SECONDS_PER_RUN" --latency "http://127.0.0.1:${PLAIN[$p]}/small" ;;
    16k) taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$SECONDS_PER_RUN" --latency "http://127.0.0.1:${PLAIN[$p]}/16k" ;;
    tls) taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$SECONDS_PER_RUN" --latency "https://127.0.0.1:${TLS[$p]}/small" ;;
    handshake) taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$SECONDS_PER_RUN" --latency -H 'Connection: close' "https://127.0.0.1:${FULL[$p]}/small" ;;
    resumed) taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$SECONDS_PER_RUN" --latency -H 'Connection: close' "https://127.0.0.1:${TLS[$p]}/small" ;;
    tcp) taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$SECONDS_PER_RUN" --latency -H 'Connection: close' "http://127.0.0.1:${L4[$p]}/small" ;;
    bulk) taskset -c 1 wrk -t1 -c4 -d"$SECONDS_PER_RUN" --latency "http://127.0.0.1:${L4[$p]}/bulk" ;;
    cached) taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$SECONDS_PER_RUN" --latency "http://127.0.0.1:${PLAIN[$p]}/cached/small" ;;
    h2) taskset -c 1 h2load -c"$CONNECTIONS" -m10 -D"$SECONDS_PER_RUN" --log-file="$W/h2.log" "https://127.0.0.1:${TLS[$p]}/small" ;;
  esac
}

# Prints "requests seconds errors p50_us p99_us" from a load generator's output.
parse_load() { # parse_load ROW < OUTPUT
  if [ "$1" = h2 ]; then
    python3 -c 'import sys
out = sys.stdin.read()
done = ok = 0
for line in out.splitlines():
    if line.startswith("requests:"):
        f = line.split()
        done, ok = int(f[5]), int(f[7])
    if line.startswith("finished in"):
        took = line.split()[2].rstrip(",")
        secs = float(took[:-2]) / 1000 if took.endswith("ms") else float(took.rstrip("s"))
lat = sorted(int(l.split()[2]) for l in open(sys.argv[1]) if len(l.split()) == 3)
p = lambda q: lat[min(len(lat) - 1, int(len(lat) * q))] if lat else float("nan")
print(ok, secs, done - ok, p(0.5), p(0.99))' "$W/h2.log"
  else
    python3 -c 'import re, sys
out = sys.stdin.read()
unit = {"us": 1, "ms": 1e3, "s": 1e6}
def pct(q):
    m = re.search(r"^\s*%s%%\s+([\d.]+)(us|ms|s)\s*$" % q, out, re.M)
    return float(m.group(1)) * unit[m.group(2)] if m else float("nan")
m = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", out)
reqs, secs = int(m.group(1)), float(m.group(2)) * {"ms": 1e-3, "s": 1, "m": 60}[m.group(3)]
errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
errors += int(bad.group(1)) if bad else 0
print(reqs, secs, errors, pct(50), pct(99))'
  fi
}

run_one() { # run_one ROUND PROXY ROW
  local r=$1 p=$2 row=$3 before after out
  before=$(python3 "$ROOT/ops/bench/treecpu.py" "${PID[$p]}")
  out=$(load "$p" "$row" 2>&1)
  after=$(python3 "$ROOT/ops/bench/treecpu.py" "${PID[$p]}")
  local reqs secs errors p50 p99
  read -r reqs secs errors p50 p99 < <(parse_load "$row" <<<"$out")
  local rps
  rps=$(python3 -c "print($reqs / $secs)")
  echo "$r $p $row $rps $(python3 -c "print(($after - $before) / $TCK)") $secs" >> "$W/results.tsv"
  echo "$r $p $row $p50 $p99" >> "$W/latency.tsv"
  printf '  round %s %-9s %-9s %9.0f req/s  errors %s  p50/p99 %.0f/%.0f us\n' "$r" "$p" "$row" "$rps" "$errors" "$p50" "$p99"
}

echo "== $ROUNDS interleaved rounds of ${SECONDS_PER_RUN}s, $CONNECTIONS connections"
read -r -a order <<<"$PROXIES"
for r in $(seq 1 "$ROUNDS"); do
  for row in $ROWS; do
    for p in "${order[@]}"; do
      [ "$p" != varnish ] || [ "$row" = cached ] || continue
      run_one "$r" "$p" "$row"
    done
  done
  order=("${order[@]:1}" "${order[0]}")
done

if [ -n "$PROFILE" ]; then
  echo "== profile: perf samples of Meridian for $((SECONDS_PER_RUN / 2))s of a run per row"
  for row in $ROWS; do
    load meridian "$row" >/dev/null 2>&1 &
    client=$!
    sleep 1
    perf record -q -F 999 -g -p "$(python3 "$ROOT/ops/bench/treecpu.py" --pids "${PID[meridian]}")" \
      -o "$W/perf-$row.data" -- sleep "$((SECONDS_PER_RUN / 2))" >/dev/null 2>&1
    wait "$client"
    echo "-- $row: busiest functions (self time, share of samples)"
    { perf report -i "$W/perf-$row.data" --no-children -g none --sort dso,sym \
        -F overhead,dso,sym 2>/dev/null | grep -v "^#" | grep . | sort -rn | head -40; } || true
  done
fi

echo
echo "== results (medians over $ROUNDS rounds; per core = req/s / proxy CPU share)"
python3 "$ROOT/ops/bench/summarize.py" "$W/results.tsv" "$W/latency.tsv" req
echo
echo "== peak RSS (MiB, whole process tree)"
for p in $PROXIES; do printf '%-9s %6s\n' "$p" "$(python3 "$ROOT/ops/bench/treecpu.py" --peak "${PID[$p]}")"; done
