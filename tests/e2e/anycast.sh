#!/usr/bin/env bash
# Anycast end to end, in network namespaces this script creates (run as root):
#
#   client (10.0.3.2) --- router (BIRD, AS 65000) ---+--- site A: meridian serve + ExaBGP + meridian anycast --driver exabgp
#                                                   +--- site B: meridian serve + BIRD   + meridian anycast --driver bird
#
# Both sites serve 192.0.2.53/32 (on their loopback) with AS 65001; A announces MED 50, B MED 100,
# so the router prefers A. Each site's zone answers `where.anycast.test TXT` with its own name,
# which is how the client tells the sites apart. Checks every 500 ms, rise 2, fall 2: a change
# must reach the client within interval x fall + 1 s = 2 s.
#
# Usage: tests/e2e/anycast.sh [path/to/meridian]   (installs bird2, exabgp, dig when missing)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MERIDIAN=${1:-$ROOT/target/release/meridian}
[ -x "$MERIDIAN" ] || MERIDIAN=$ROOT/target/debug/meridian
[ -x "$MERIDIAN" ] || { echo "build meridian first (cargo build --release)"; exit 2; }
MERIDIAN=$(realpath "$MERIDIAN")
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)"; exit 2; }

need=()
command -v bird >/dev/null || need+=(bird2)
command -v exabgp >/dev/null || need+=(exabgp)
command -v dig >/dev/null || need+=(bind9-dnsutils)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The Debian package starts a BIRD of its own on the host; it is not ours to touch, and it
# plays no part here (every daemon below runs inside this test's namespaces).

W=$(mktemp -d /tmp/meridian-anycast.XXXXXX)
P=mrd$$
NS_R=$P-r NS_A=$P-a NS_B=$P-b NS_C=$P-c
PIDS=()
PASS=0 FAIL=0

cleanup() {
  local code=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  pkill -f "$W/" 2>/dev/null || true
  sleep 0.2
  pkill -9 -f "$W/" 2>/dev/null || true
  for ns in $NS_R $NS_A $NS_B $NS_C; do ip netns del "$ns" 2>/dev/null || true; done
  if [ $code -ne 0 ] || [ $FAIL -ne 0 ]; then
    echo "--- logs"; for f in "$W"/*.log; do echo "== $f"; tail -n 25 "$f"; done
  fi
  rm -rf "$W"
  exit $code
}
trap cleanup EXIT

ok() { PASS=$((PASS + 1)); echo "ok   $1"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL $1"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
now() { date +%s.%N; }
since() { python3 -c "print('%.2f' % ($(now) - $1))"; }

# until CMD succeeds, at most SECONDS (polled every 100 ms)
wait_for() {
  local limit=$1; shift
  local end; end=$(python3 -c "print($(now) + $limit)")
  while python3 -c "import sys; sys.exit(0 if $(now) < $end else 1)"; do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

# ---------------------------------------------------------------- the network
for ns in $NS_R $NS_A $NS_B $NS_C; do
  ip netns add "$ns"
  in_ns "$ns" ip link set lo up
done
link() { # NS_X IF_X ADDR_X NS_Y IF_Y ADDR_Y
  ip link add "$2" netns "$1" type veth peer name "$5" netns "$4"
  in_ns "$1" ip addr add "$3" dev "$2"; in_ns "$1" ip link set "$2" up
  in_ns "$4" ip addr add "$6" dev "$5"; in_ns "$4" ip link set "$5" up
}
link $NS_R r2a 10.0.1.1/30 $NS_A a2r 10.0.1.2/30
link $NS_R r2b 10.0.2.1/30 $NS_B b2r 10.0.2.2/30
link $NS_R r2c 10.0.3.1/24 $NS_C c2r 10.0.3.2/24
in_ns $NS_R sysctl -qw net.ipv4.ip_forward=1
in_ns $NS_A ip route add default via 10.0.1.1
in_ns $NS_B ip route add default via 10.0.2.1
in_ns $NS_C ip route add default via 10.0.3.1
for ns in $NS_A $NS_B; do in_ns "$ns" ip addr add 192.0.2.53/32 dev lo; done

# ---------------------------------------------------------------- the sites' DNS
site_dns() { # NAME
  local d=$W/$1
  mkdir -p "$d"
  cat > "$d/anycast.test.zone" <<EOF
\$TTL 30
@      SOA ns1 hostmaster 1 7200 900 1209600 30
@      NS  ns1
ns1    A   192.0.2.53
canary A   192.0.2.10
where  TXT "site-$1"
EOF
  cat > "$d/meridian.toml" <<EOF
[server]
listen = ["192.0.2.53:53"]
control = "127.0.0.1:0"
state_dir = "state"
udp_workers = 1

[[zone]]
origin = "anycast.test"
file = "anycast.test.zone"
EOF
}
start_serve() { # NAME NS
  ip netns exec "$2" "$MERIDIAN" serve --config "$W/$1/meridian.toml" >>"$W/serve-$1.log" 2>&1 &
  echo $! > "$W/$1/serve.pid"
  PIDS+=("$!")
  wait_for 10 in_ns "$2" dig @192.0.2.53 +time=1 +tries=1 +short canary.anycast.test A
}
stop_serve() { # NAME
  local pid; pid=$(cat "$W/$1/serve.pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
site_dns a; site_dns b
start_serve a $NS_A || { bad "site a serve starts"; exit 1; }
start_serve b $NS_B || { bad "site b serve starts"; exit 1; }

helper_conf() { # NAME MED
  cat > "$W/$1/anycast.toml" <<EOF
[anycast]
interval = "500ms"
timeout = "300ms"
rise = 2
fall = 2
hold_down = "1s"
local_as = 65001
drain_file = "anycast.drain"
status_file = "anycast.status.json"

[bird]
include = "meridian-anycast.conf"
socket = "bird.ctl"

[[prefix]]
prefix = "192.0.2.53/32"
med = $2
[[prefix.check]]
kind = "dns"
server = "192.0.2.53:53"
name = "canary.anycast.test"
addresses = ["192.0.2.10"]
EOF
}
helper_conf a 50
helper_conf b 100

# ---------------------------------------------------------------- the router
cat > "$W/router.conf" <<EOF
router id 10.0.3.1;
protocol device {}
protocol kernel { ipv4 { import none; export all; }; }
template bgp site {
  local as 65000;
  hold time 3; keepalive time 1;
  connect delay time 1; connect retry time 1; error wait time 1, 2;
  ipv4 { import all; export none; };
}
protocol bgp site_a from site { neighbor 10.0.1.2 as 65001; }
protocol bgp site_b from site { neighbor 10.0.2.2 as 65001; }
EOF
ip netns exec $NS_R bird -f -c "$W/router.conf" -s "$W/router.ctl" -P "$W/router.pid" >>"$W/bird-router.log" 2>&1 &
PIDS+=("$!")

# ---------------------------------------------------------------- site A: ExaBGP
cat > "$W/a/exabgp.conf" <<EOF
process meridian {
  run $MERIDIAN anycast --driver exabgp --config $W/a/anycast.toml;
  encoder text;
}
neighbor 10.0.1.1 {
  router-id 10.0.1.2;
  local-address 10.0.1.2;
  local-as 65001;
  peer-as 65000;
  hold-time 3;
  api { processes [ meridian ]; }
}
EOF
(
  cd "$W/a"
  export exabgp_daemon_user=root exabgp_daemon_daemonize=false exabgp_log_destination=stdout \
    exabgp_api_ack=true exabgp_api_respawn=true exabgp_api_cli=false MERIDIAN_LOG=info
  exec ip netns exec $NS_A exabgp "$W/a/exabgp.conf"
) >>"$W/exabgp-a.log" 2>&1 &
PIDS+=("$!")

# ---------------------------------------------------------------- site B: BIRD
(cd "$W/b" && "$MERIDIAN" anycast --driver bird --withdraw-all --config "$W/b/anycast.toml" >/dev/null 2>&1) || true
[ -s "$W/b/meridian-anycast.conf" ] || { bad "the BIRD include starts withdrawn"; exit 1; }
cat > "$W/b/bird.conf" <<EOF
router id 10.0.2.2;
include "$W/b/meridian-anycast.conf";
protocol device {}
protocol static anycast { ipv4; route 192.0.2.53/32 blackhole; }
filter to_router {
  if net ~ MERIDIAN_DEGRADED_V4 then { bgp_path.prepend(65001); bgp_path.prepend(65001); }
  if net ~ MERIDIAN_ANNOUNCE_V4 then { bgp_origin = ORIGIN_IGP; bgp_med = 100; accept; }
  reject;
}
protocol bgp upstream {
  local as 65001; neighbor 10.0.2.1 as 65000;
  hold time 3; keepalive time 1;
  connect delay time 1; connect retry time 1; error wait time 1, 2;
  ipv4 { import none; export filter to_router; };
}
EOF
ip netns exec $NS_B bird -f -c "$W/b/bird.conf" -s "$W/b/bird.ctl" -P "$W/b/bird.pid" >>"$W/bird-b.log" 2>&1 &
PIDS+=("$!")
wait_for 10 test -S "$W/b/bird.ctl" || { bad "site b BIRD starts"; exit 1; }
start_helper_b() {
  (cd "$W/b" && MERIDIAN_LOG=info exec ip netns exec $NS_B "$MERIDIAN" anycast --driver bird --config "$W/b/anycast.toml") >>"$W/helper-b.log" 2>&1 &
  echo $! > "$W/b/helper.pid"
  PIDS+=("$!")
}
start_helper_b

# ---------------------------------------------------------------- assertions
routes() { in_ns $NS_R birdc -s "$W/router.ctl" show route 192.0.2.53/32 2>/dev/null; }
has_route() { routes | grep -q "via $1"; }
no_route() { ! routes | grep -q "via $1"; }
answered_by() { # SITE: the client's answer names SITE
  in_ns $NS_C dig @192.0.2.53 +time=1 +tries=1 +short where.anycast.test TXT 2>/dev/null | grep -qx "\"site-$1\""
}
helper_a_pid() { pgrep -f "anycast --driver exabgp --config $W/a/anycast.toml" | head -n 1; }
BOUND=2.0 # interval x fall + 1 s

if wait_for 30 has_route 10.0.1.2 && wait_for 10 has_route 10.0.2.2; then
  ok "both sites announce 192.0.2.53/32 (ExaBGP and BIRD drivers)"
else
  bad "both sites announce"; routes || true
fi
if wait_for 5 answered_by a && routes | grep -A1 '\*' | grep -q "via 10.0.1.2"; then
  ok "the router prefers site a (MED 50 over 100) and the client reaches it"
else
  bad "router prefers site a"; routes || true
fi

# stop site a's serve; the client must reach site b within the bound. DESCRIPTION
fail_over_within_bound() {
  local t0 took
  t0=$(now); stop_serve a
  if wait_for 5 answered_by b; then
    took=$(since "$t0")
    if python3 -c "import sys; sys.exit(0 if $took <= $BOUND else 1)"; then
      ok "$1: the client is answered by site b after ${took}s (bound ${BOUND}s)"
    else
      bad "$1: took ${took}s, over the ${BOUND}s bound"
    fi
  else
    bad "$1: the client never reached site b"
  fi
}

fail_over_within_bound "site a's serve stopped"
wait_for 5 no_route 10.0.1.2 && ok "site a's route is withdrawn" || bad "site a's route withdrawn"

start_serve a $NS_A
if wait_for 10 has_route 10.0.1.2 && wait_for 5 answered_by a; then
  ok "site a's serve restarted: its route comes back and the client reaches it again"
else
  bad "site a's route comes back"
fi

old=$(helper_a_pid)
kill -9 "$old"
if wait_for 10 sh -c "p=\$(pgrep -f 'anycast --driver exabgp --config $W/a/anycast.toml' | head -n 1); [ -n \"\$p\" ] && [ \"\$p\" != $old ]" \
  && wait_for 10 has_route 10.0.1.2 && wait_for 5 answered_by a; then
  ok "kill -9 of the ExaBGP helper: ExaBGP respawns it; the new helper withdraws, re-checks and announces again"
else
  bad "helper respawned by ExaBGP"
fi
fail_over_within_bound "after the respawn, site a's serve stopped"
start_serve a $NS_A
wait_for 10 answered_by a || bad "site a back before the wrong-answer case"

sed -i 's/^canary A   192.0.2.10/canary A   192.0.2.99/; s/ 1 7200 / 2 7200 /' "$W/a/anycast.test.zone"
kill -HUP "$(cat "$W/a/serve.pid")"
t0=$(now)
if wait_for 10 answered_by b; then
  ok "site a answering the canary with a wrong address counts as down (client on site b after $(since "$t0")s)"
else
  bad "a wrong canary address withdraws"
fi
sed -i 's/^canary A   192.0.2.99/canary A   192.0.2.10/; s/ 2 7200 / 3 7200 /' "$W/a/anycast.test.zone"
kill -HUP "$(cat "$W/a/serve.pid")"
wait_for 10 answered_by a || bad "site a back after the wrong-answer case"

"$MERIDIAN" anycast --drain --config "$W/a/anycast.toml" >/dev/null
if wait_for 3 no_route 10.0.1.2 && wait_for 3 answered_by b; then
  ok "drain withdraws site a"
else
  bad "drain withdraws"
fi
kill -9 "$(helper_a_pid)"
sleep 3 # longer than rise x interval: a respawned helper that ignored the drain would announce
if no_route 10.0.1.2 && [ -n "$(helper_a_pid)" ]; then
  ok "the drain survives a helper restart"
else
  bad "drain survives a helper restart"
fi
"$MERIDIAN" anycast --undrain --config "$W/a/anycast.toml" >/dev/null
wait_for 10 has_route 10.0.1.2 && ok "undrain announces again" || bad "undrain announces again"

kill -9 "$(cat "$W/b/helper.pid")"
has_route 10.0.2.2 || bad "site b still announced after its helper died (BIRD keeps the last include)"
if (cd "$W/b" && in_ns $NS_B "$MERIDIAN" anycast --driver bird --withdraw-all --config "$W/b/anycast.toml") >/dev/null 2>&1 \
  && wait_for 5 no_route 10.0.2.2; then
  ok "the BIRD driver's --withdraw-all removes site b's route"
else
  bad "--withdraw-all removes the route"
fi

echo "anycast suite: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
