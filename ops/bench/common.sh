# Shared by the benchmark scripts (sourced, not run): a work directory, the processes started
# (stopped, and only they, on exit), free loopback ports, and the probe backend.

W=$(mktemp -d /tmp/meridian-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT

# A loopback port free for both TCP and UDP.
free_port() {
  python3 -c 'import socket
while True:
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass'
}

# A local HTTP server for Meridian's health probes; sets BACKEND_PORT.
start_backend() {
  mkdir -p "$W/www"
  echo ok > "$W/www/index.html"
  BACKEND_PORT=$(free_port)
  python3 -m http.server "$BACKEND_PORT" --bind 127.0.0.1 --directory "$W/www" >/dev/null 2>&1 &
  PIDS+=($!)
}
