#!/usr/bin/env bash
# End-to-end checks with dig against the real binary on an ephemeral port.
# Usage: tests/e2e/dig.sh [path/to/meridian]   (default: target/debug/meridian)
set -euo pipefail

BIN=${1:-target/debug/meridian}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
[ -x "$BIN" ] || { echo "no meridian binary at $BIN (run cargo build first)"; exit 2; }
command -v dig >/dev/null || { echo "dig is missing (apt-get install bind9-dnsutils)"; exit 2; }

# shellcheck source=tests/e2e/lib.sh
source "$ROOT/tests/e2e/lib.sh"
work_dir dig
work=$W

{
  echo '$TTL 300'
  echo '@ IN SOA ns1.example.test. hostmaster.example.test. 1 7200 900 1209600 60'
  echo '  IN NS ns1'
  echo 'ns1 IN A 192.0.2.53'
  echo 'static IN A 192.0.2.80'
  echo '@ IN MX 10 mail'
  echo 'mail IN A 192.0.2.25'
  echo 'mail IN AAAA 2001:db8::25'
  echo 'sub IN NS ns.sub'
  echo 'ns.sub IN A 192.0.2.153'
  echo 'to-sub IN CNAME host.sub'
  for i in $(seq 1 60); do echo "big IN A 192.0.2.$i"; done
} > "$work/example.test.zone"
cat > "$work/example.test.gslb.toml" <<'TOML'
[[name]]
name = "www"
policy = "all"
pool = "web"

[pool.web]
check = "tcp"
members = [
  { site = "up", address = "192.0.2.10", probe = "127.0.0.1:1" },
  { site = "down", address = "192.0.2.11", probe = "127.0.0.1:1" },
]

[check.tcp]
kind = "tcp"
interval = "200ms"
timeout = "200ms"

[[name]]
name = "geo"
policy = "geo-nearest"
pool = "global"

[pool.global]
members = [
  { site = "fra", address = "192.0.2.20" },
  { site = "iad", address = "198.51.100.20" },
  { site = "sin", address = "203.0.113.20" },
]

[site.fra]
location = [50.11, 8.68]
[site.iad]
location = [38.95, -77.45]
[site.sin]
location = [1.35, 103.82]
TOML
# Every probe targets loopback. Port 1 is closed; the "up" member is pointed at the server's
# own control port once that is known.
cat > "$work/meridian.toml" <<'TOML'
[server]
listen = ["127.0.0.1:0"]
control = "127.0.0.1:0"
state_dir = "state"
geo_database = "demo-city.mmdb"
identity = "meridian-demo"

[[zone]]
origin = "example.test"
file = "example.test.zone"
gslb = "example.test.gslb.toml"
TOML

cp "$ROOT/geo/demo-city.mmdb" "$work/"

start_serve "$BIN" "$work/meridian.toml"
control=$CONTROL
port=${DNS##*:}
echo "server: dns=$DNS control=$CONTROL"

# Point the "up" member's probe at the control endpoint and reload through ctl.
sed -i "s/address = \"192.0.2.10\", probe = \"127.0.0.1:1\"/address = \"192.0.2.10\", probe = \"$control\"/" "$work/example.test.gslb.toml"
"$BIN" ctl --control "$control" reload > /dev/null

D=(dig @127.0.0.1 -p "$port" +norec +time=2 +tries=2)

# Wait (bounded: 100 tries) until only the healthy member is answered.
for _ in $(seq 1 100); do
  out=$("${D[@]}" www.example.test A +short)
  [ "$out" = "192.0.2.10" ] && break
  sleep 0.1
done

out=$("${D[@]}" www.example.test A)
check "load-balanced name: AA set" grep -q 'flags: qr aa' <<<"$out"
check "load-balanced name: healthy address only" test "$("${D[@]}" www.example.test A +short)" = "192.0.2.10"
check "static name from the zone file" test "$("${D[@]}" static.example.test A +short)" = "192.0.2.80"

out=$("${D[@]}" missing.example.test A)
check "missing name: NXDOMAIN" grep -q 'status: NXDOMAIN' <<<"$out"
check "missing name: SOA at min(TTL, MINIMUM)=60" grep -qE '^example\.test\.\s+60\s+IN\s+SOA' <<<"$out"

check "out-of-zone name: REFUSED" grep -q 'status: REFUSED' <<<"$("${D[@]}" www.example.org A)"

out=$("${D[@]}" +noedns +ignore big.example.test A)
check "large RRset over UDP without EDNS: TC set" grep -qE 'flags: qr( [a-z]+)* tc' <<<"$out"
count=$("${D[@]}" +tcp big.example.test A +short | wc -l)
check "large RRset over TCP: complete (60)" test "$count" -eq 60

out=$("${D[@]}" example.test MX)
check "MX: the target's A in ADDITIONAL" grep -qE '^mail\.example\.test\.\s+300\s+IN\s+A\s+192\.0\.2\.25' <<<"$out"
check "MX: the target's AAAA in ADDITIONAL" grep -qE '^mail\.example\.test\.\s+300\s+IN\s+AAAA\s+2001:db8::25' <<<"$out"
out=$("${D[@]}" +noedns ExAmPlE.TeSt MX)
check "MX without EDNS, mixed case: ADDITIONAL: 2" grep -q 'ADDITIONAL: 2' <<<"$out"
out=$("${D[@]}" to-sub.example.test A)
check "CNAME into a delegation: NOERROR" grep -q 'status: NOERROR' <<<"$out"
check "CNAME into a delegation: AA set" grep -q 'flags: qr aa;' <<<"$out"
check "CNAME into a delegation: the referral's NS" grep -qE '^sub\.example\.test\.\s+300\s+IN\s+NS\s+ns\.sub\.example\.test\.' <<<"$out"
check "CNAME into a delegation: in-domain glue" grep -qE '^ns\.sub\.example\.test\.\s+300\s+IN\s+A\s+192\.0\.2\.153' <<<"$out"

out=$("${D[@]}" +edns=1 +noednsnegotiation static.example.test A)
check "EDNS version 1: BADVERS" grep -q 'status: BADVERS' <<<"$out"
out=$("${D[@]}" +dnssec static.example.test A)
check "DO bit echoed, our size advertised" grep -qE 'EDNS: version: 0, flags: do; udp: 1232' <<<"$out"

out=$("${D[@]}" +subnet=10.3.0.0/24 geo.example.test A)
check "geo: ECS from Singapore gets sin" grep -qE '^geo\.example\.test\.\s+30\s+IN\s+A\s+203\.0\.113\.20' <<<"$out"
check "geo: reply scope is the database network (/16)" grep -q 'CLIENT-SUBNET: 10.3.0.0/24/16' <<<"$out"
out=$("${D[@]}" +subnet=10.1.0.0/24 geo.example.test A)
check "geo: ECS from Frankfurt gets fra, scope /17" grep -q 'CLIENT-SUBNET: 10.1.0.0/24/17' <<<"$out"
check "static data: ECS scope 0" grep -q 'CLIENT-SUBNET: 10.3.0.0/24/0' <<<"$("${D[@]}" +subnet=10.3.0.0/24 static.example.test A)"
check "NSID names the node" grep -q 'NSID: .*("meridian-demo")' <<<"$("${D[@]}" +nsid static.example.test A)"
check "dig +cookie: a server cookie that dig accepts" grep -qE '^; COOKIE: [0-9a-f]{16}[0-9a-f]{32} \(good\)' <<<"$("${D[@]}" +cookie static.example.test A)"
check "CHAOS TXT id.server names the node" test "$("${D[@]}" -c CH -t TXT id.server +short)" = '"meridian-demo"'
out=$("${D[@]}" -c CH -t TXT geo.example.test)
check "in-band explanation (CHAOS TXT) from loopback" grep -q 'policy:    geo-nearest' <<<"$out"

if command -v mmdblookup >/dev/null; then
  out=$(mmdblookup --file "$ROOT/geo/demo-city.mmdb" --ip 10.3.0.1 country iso_code)
  check "mmdblookup reads the demo database" grep -q '"SG"' <<<"$out"
fi

finish "dig suite"
