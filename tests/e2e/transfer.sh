#!/usr/bin/env bash
# Zone transfer to a real secondary: NSD pulls example.test from Meridian, gets NOTIFY after a
# reload that changed the zone and transfers the new serial; load-balanced names arrive as a
# snapshot; a stranger is refused; a serial going backwards is refused on reload and at start.
# A second zone is transferred and notified with TSIG (hmac-sha256), checked by NSD and dig.
# Usage: tests/e2e/transfer.sh [path/to/meridian]   (needs nsd and dig; root not required)
set -euo pipefail

BIN=$(realpath "${1:-target/debug/meridian}")
[ -x "$BIN" ] || { echo "no meridian binary at $BIN (run cargo build first)"; exit 2; }
for tool in nsd dig; do
  command -v $tool >/dev/null || { echo "$tool is missing (apt-get install nsd bind9-dnsutils)"; exit 2; }
done

# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
work_dir transfer

MPORT=$(free_port)
NPORT=$(free_port)
write_zone() { # write_zone SERIAL [EXTRA-LINE]
  {
    echo '$TTL 300'
    echo "@ IN SOA ns1.example.test. hostmaster.example.test. $1 7200 900 1209600 60"
    echo '  IN NS ns1'
    echo 'ns1 IN A 192.0.2.53'
    echo 'static IN A 192.0.2.80'
    echo 'sub IN NS ns.sub'
    echo 'ns.sub IN A 192.0.2.153'
    [ $# -gt 1 ] && echo "$2"
    true
  } > "$W/example.test.zone.new"
  mv "$W/example.test.zone.new" "$W/example.test.zone"
}
write_zone 1
SECRET=$(head -c 32 /dev/urandom | base64)
# signed.test's `big` TXT set fits a 512-byte datagram unsigned, not with a TSIG record.
write_signed() { # write_signed SERIAL
  {
    printf '$TTL 300\n@ IN SOA ns1.signed.test. hostmaster.signed.test. %s 7200 900 1209600 60\n  IN NS ns1\nns1 IN A 192.0.2.54\n' "$1"
    for i in 1 2 3 4; do printf 'big IN TXT "%s%s"\n' "$i" "$(printf 'x%.0s' $(seq 1 99))"; done
  } > "$W/signed.test.zone.new"
  mv "$W/signed.test.zone.new" "$W/signed.test.zone"
}
write_signed 1
cat > "$W/example.test.gslb.toml" <<'TOML'
[[name]]
name = "www"
types = ["A", "AAAA"]
ttl = "300s"
policy = "all"
pool = "web"

[[name]]
name = "app"
policy = "failover"
pool = "aliases"

[pool.web]
members = [
  { site = "fra", address = "192.0.2.10" },
  { site = "iad", address = "192.0.2.11" },
  { site = "iad", address = "2001:db8::11" },
]

[pool.aliases]
members = [{ site = "cdn", cname = "edge.cdn.example." }]
TOML
cat > "$W/meridian.toml" <<TOML
[server]
listen = ["127.0.0.1:$MPORT"]
control = "127.0.0.1:0"
state_dir = "$W/state"

[[zone]]
origin = "example.test"
file = "example.test.zone"
gslb = "example.test.gslb.toml"

[zone.transfer]
allow = ["127.0.0.1"]
notify = ["127.0.0.1:$NPORT"]

[[zone]]
origin = "signed.test"
file = "signed.test.zone"

[zone.transfer]
allow = ["127.0.0.0/8"]
notify = ["127.0.0.1:$NPORT"]
key = "xfr-key"

[[key]]
name = "xfr-key"
algorithm = "hmac-sha256"
secret = "$SECRET"
TOML

start_meridian() {
  "$BIN" serve --config "$W/meridian.toml" >>"$W/meridian.out" 2>>"$W/meridian.log" &
  MPID=$!
  PIDS+=($MPID)
  eventually 10 dig +short +time=1 +tries=1 @127.0.0.1 -p "$MPORT" example.test SOA
}
start_meridian

mkdir -p "$W/nsd"
nsd_conf "$W/nsd" "$W/nsd" "$NPORT" > "$W/nsd/nsd.conf"
cat >> "$W/nsd/nsd.conf" <<CONF
zone:
  name: example.test
  zonefile: example.test.zone
  request-xfr: AXFR 127.0.0.1@$MPORT NOKEY
  allow-notify: 127.0.0.1 NOKEY
key:
  name: xfr-key
  algorithm: hmac-sha256
  secret: "$SECRET"
zone:
  name: signed.test
  zonefile: signed.test.zone
  request-xfr: AXFR 127.0.0.1@$MPORT xfr-key
  allow-notify: 127.0.0.1 xfr-key
CONF
nsd -d -c "$W/nsd/nsd.conf" 2>"$W/nsd/stderr" &
PIDS+=($!)

secondary() { dig +short +time=1 +tries=1 @127.0.0.1 -p "$NPORT" "$@"; }
primary() { dig +short +time=1 +tries=1 @127.0.0.1 -p "$MPORT" "$@"; }
serial_is() { [ "$(secondary example.test SOA | awk '{print $3}')" = "$1" ]; }
answers() { [ "$(secondary "$1" "$2" | sort | tr '\n' ' ')" = "$3" ]; }

check "NSD transfers the zone (serial 1)" eventually 20 serial_is 1
check "static data on the secondary" answers static.example.test A "192.0.2.80 "
check "delegation and glue on the secondary" \
  eval '[ "$(dig +norec +time=1 +tries=1 @127.0.0.1 -p $NPORT host.sub.example.test A | grep -c "ns.sub.example.test.*192.0.2.153")" = 1 ]'
check "load-balanced A snapshot on the secondary" answers www.example.test A "192.0.2.10 192.0.2.11 "
check "load-balanced AAAA snapshot on the secondary" answers www.example.test AAAA "2001:db8::11 "
check "load-balanced alias snapshot on the secondary" answers app.example.test CNAME "edge.cdn.example. "
check "snapshot TTL capped at 30 s" \
  eval '[ "$(dig +noall +answer +time=1 +tries=1 @127.0.0.1 -p $NPORT www.example.test A | awk "{print \$2}" | sort -u)" = 30 ]'

axfr=$(dig +noall +answer +time=2 +tries=1 @127.0.0.1 -p "$MPORT" example.test AXFR)
check "AXFR opens and closes with the SOA" \
  eval '[ "$(echo "$axfr" | head -1 | awk "{print \$4}")" = SOA ] && [ "$(echo "$axfr" | tail -1 | awk "{print \$4}")" = SOA ]'
check "AXFR holds every record (2 SOA + 2 NS/ns1 + static + 2 delegation + 4 lb)" \
  eval '[ "$(echo "$axfr" | wc -l)" = 11 ]'
check "a stranger (127.0.0.2) is refused" \
  eval 'dig +time=2 +tries=1 -b 127.0.0.2 @127.0.0.1 -p $MPORT example.test AXFR | grep -q "Transfer failed"'
check "IXFR from a current secondary: the SOA alone" \
  eval '[ "$(dig +noall +answer +time=2 +tries=1 @127.0.0.1 -p $MPORT example.test IXFR=1 | wc -l)" = 1 ]'

signed_serial_is() { [ "$(secondary signed.test SOA | awk '{print $3}')" = "$1" ]; }
check "NSD transfers the TSIG zone (serial 1)" eventually 20 signed_serial_is 1
check "dig verifies the signed AXFR" \
  eval 'dig +time=2 +tries=1 -y "hmac-sha256:xfr-key:$SECRET" @127.0.0.1 -p $MPORT signed.test AXFR | grep -q "^ns1.signed.test.*192.0.2.54"'
check "an unsigned AXFR of the TSIG zone is refused" \
  eval 'dig +time=2 +tries=1 @127.0.0.1 -p $MPORT signed.test AXFR | grep -q "Transfer failed"'
check "a signed UDP answer that no longer fits 512 bytes comes truncated, and dig verifies it" \
  eval 'out=$(dig +noedns +ignore +time=2 +tries=1 -y "hmac-sha256:xfr-key:$SECRET" @127.0.0.1 -p $MPORT big.signed.test TXT 2>&1);
        echo "$out" | grep -q "flags: qr aa tc" && echo "$out" | grep -q "TSIG PSEUDOSECTION" && ! echo "$out" | grep -qi "verify"'
check "dig retries it over TCP and verifies the whole signed answer" \
  eval '[ "$(dig +noedns +noall +answer +time=2 +tries=1 -y "hmac-sha256:xfr-key:$SECRET" @127.0.0.1 -p $MPORT big.signed.test TXT 2>&1 | grep -c "IN	TXT")" = 4 ]'
check "a wrong secret gets NOTAUTH (BADSIG)" \
  eval 'dig +time=2 +tries=1 -y "hmac-sha256:xfr-key:c2VjcmV0IG5vdCBzaGFyZWQ=" @127.0.0.1 -p $MPORT signed.test AXFR 2>&1 | grep -qi "NOTAUTH\|BADSIG\|tsig"'

write_signed 2
write_zone 2 "new IN A 192.0.2.99"
kill -HUP "$MPID"
check "after a reload, NOTIFY brings serial 2 to the secondary" eventually 15 serial_is 2
check "the new record on the secondary" answers new.example.test A "192.0.2.99 "
check "a signed NOTIFY brings serial 2 of the TSIG zone" eventually 15 signed_serial_is 2
check "Meridian logged the acknowledged NOTIFY" grep -q "notify acknowledged" "$W/meridian.log"

write_zone 1 "new IN A 192.0.2.100"
kill -HUP "$MPID"
check "a serial going backwards is refused on reload" \
  eventually 10 grep -q "SOA serial 1 is below 2" "$W/meridian.log"
check "the primary keeps serving serial 2" eval '[ "$(primary example.test SOA | awk "{print \$3}")" = 2 ]'

write_zone 2 "new IN A 192.0.2.101"
kill -HUP "$MPID"
check "changed data without a new serial is refused on reload" \
  eventually 10 grep -q "data changed but its SOA serial 2 did not" "$W/meridian.log"

kill "$MPID"; wait "$MPID" 2>/dev/null || true
write_zone 1 "new IN A 192.0.2.99"
if "$BIN" serve --config "$W/meridian.toml" >/dev/null 2>"$W/refused.log"; then started=yes; else started=no; fi
check "a serial below the one served before the restart stops the start" \
  eval '[ $started = no ] && grep -q "example.test.zone:2: zone example.test. SOA: SOA serial 1 is below 2" "$W/refused.log"'

write_zone 3 "new IN A 192.0.2.103"
start_meridian
check "after a restart, NOTIFY brings serial 3 to the secondary" eventually 15 serial_is 3
check "the changed record on the secondary" answers new.example.test A "192.0.2.103 "

if [ "$failed" -gt 0 ]; then
  echo "--- meridian log"; tail -n 20 "$W/meridian.log"
  echo "--- nsd log"; tail -n 20 "$W/nsd/nsd.log" "$W/nsd/stderr" 2>/dev/null
fi
finish "transfer suite"
