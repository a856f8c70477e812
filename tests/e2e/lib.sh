# Shared by the end-to-end and conformance scripts (sourced, not run): a work directory that
# is removed on exit with exactly the processes the script started, free loopback ports, and
# bounded checks.
#
#   source tests/e2e/lib.sh; work_dir NAME      sets W, and the exit trap
#   PIDS+=($!)                                  after starting a process it must stop
#   free_port                                   a loopback port free for TCP and UDP
#   check "what" COMMAND...                     runs and counts one check
#   eventually SECONDS COMMAND...               polls COMMAND every 0.2 s, at most SECONDS
#   serve_example_test BINARY                   serves example.test with $W/example.test.gslb.toml
#   finish NAME                                 prints the tally; fails if any check did
#   nsd_conf STATE ZONES PORT [LINE...]          an unprivileged NSD's server section
#   install_missing PACKAGE...                  installs Debian packages (none given: nothing)

PIDS=()
passed=0
failed=0

install_missing() { # install_missing PACKAGE...: the ones a script found missing
  [ $# -gt 0 ] || return 0
  echo "installing: $*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "$@" >/dev/null
}

work_dir() { # work_dir NAME
  W=$(mktemp -d "/tmp/meridian-$1.XXXXXX")
  trap stop_all EXIT
}

stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${W:-}" ] && rm -rf "$W"
  return 0
}

free_port() {
  /usr/bin/python3 -c 'import socket
while True:
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass'
}

check() { # check NAME COMMAND...
  local name=$1; shift
  if "$@"; then passed=$((passed + 1)); echo "ok   $name"; else failed=$((failed + 1)); echo "FAIL $name"; fi
}

eventually() { # eventually SECONDS COMMAND...
  local tries=$(($1 * 5)); shift
  for _ in $(seq 1 "$tries"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  return 1
}

# Starts `meridian serve --config FILE` in the background (added to PIDS) and waits until it
# prints its addresses; sets DNS and CONTROL. Output goes to $W/serve.out and $W/serve.log.
start_serve() { # start_serve BINARY CONFIG
  "$1" serve --config "$2" >>"$W/serve.out" 2>>"$W/serve.log" &
  PIDS+=($!)
  SERVE_PID=$!
  eventually 10 grep -q listening "$W/serve.out" || { echo "meridian did not start"; cat "$W/serve.log"; return 1; }
  DNS=$(grep -o 'dns=[0-9.:]*' "$W/serve.out" | tail -n 1 | cut -d= -f2)
  CONTROL=$(grep -o 'control=[0-9.:]*' "$W/serve.out" | tail -n 1 | cut -d= -f2)
}

# Serves zone example.test (an SOA, its NS and the NS's address) with the load-balanced names
# of "$W/example.test.gslb.toml", on loopback ports: `start_serve` on a config it writes.
serve_example_test() { # serve_example_test BINARY
  cat > "$W/example.test.zone" <<'EOF'
$TTL 300
@ IN SOA ns1.example.test. hostmaster.example.test. 1 7200 900 1209600 60
@ IN NS ns1
ns1 IN A 192.0.2.53
EOF
  cat > "$W/meridian.toml" <<'EOF'
[server]
listen = ["127.0.0.1:0"]
control = "127.0.0.1:0"
state_dir = "state"

[[zone]]
origin = "example.test"
file = "example.test.zone"
gslb = "example.test.gslb.toml"
EOF
  start_serve "$1" "$W/meridian.toml"
}

# The server section of an NSD config for a daemon this script runs: on 127.0.0.1:PORT, one
# worker, no privilege drop, its files in STATE, zone files in ZONES, rate limiting off and
# remote control off; each LINE is one more server setting. Zone sections follow it.
nsd_conf() { # nsd_conf STATE ZONES PORT [LINE...]
  local state=$1 zones=$2 port=$3; shift 3
  cat <<CONF
server:
  ip-address: 127.0.0.1@$port
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: "$zones"
  database: ""
  zonelistfile: "$state/zone.list"
  pidfile: "$state/nsd.pid"
  xfrdfile: "$state/xfrd.state"
  xfrdir: "$state"
  logfile: "$state/nsd.log"
  rrl-ratelimit: 0
CONF
  for line in "$@"; do echo "  $line"; done
  printf 'remote-control:\n  control-enable: no\n'
}

finish() { # finish NAME
  echo "$1: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}
