# Shared by the benchmark scripts (sourced, not run): the work directory, process and port
# helpers of tests/e2e/lib.sh, the probe backend and the peers' configs.

# shellcheck source=tests/e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../tests/e2e/lib.sh"
work_dir bench

# Sets MERIDIAN: the binary MERIDIAN_BINARY names (built elsewhere, so the tree can change
# during a long run), else this tree's, built now.
meridian_binary() {
  if [ -n "${MERIDIAN_BINARY:-}" ]; then
    MERIDIAN="$(realpath "$MERIDIAN_BINARY")"
  else
    (cd "$ROOT" && cargo build --release --quiet)
    MERIDIAN="$ROOT/target/release/meridian"
  fi
}

# A local HTTP server for Meridian's health probes; sets BACKEND_PORT. It stands for the remote
# sites' servers, so it runs beside the load generator on CPU 1, never on the server's core.
start_backend() {
  mkdir -p "$W/www"
  echo ok > "$W/www/index.html"
  BACKEND_PORT=$(free_port)
  taskset -c 1 python3 -m http.server "$BACKEND_PORT" --bind 127.0.0.1 --directory "$W/www" >/dev/null 2>&1 &
  PIDS+=($!)
}

# An NSD config for one zone `bench.test` in DIR, answering on 127.0.0.1:PORT, one worker,
# rate limiting off and minimal responses (the shape of the other servers' answers).
write_nsd_conf() { # write_nsd_conf DIR PORT
  {
    nsd_conf "$1" "$1" "$2" "reuseport: no" "minimal-responses: yes"
    printf 'zone:\n  name: bench.test\n  zonefile: bench.test.zone\n'
  } > "$1/nsd.conf"
}
