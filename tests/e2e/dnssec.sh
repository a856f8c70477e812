#!/usr/bin/env bash
# DNSSEC keys against BIND's and Knot's own tools: keys made by `meridian dnssec keygen`
# (ECDSA P-256 CSK; Ed25519 KSK and ZSK) are read by `dnssec-settime`, give the DS that
# `dnssec-dsfromkey` computes, sign a zone with `dnssec-signzone` that `dnssec-verify`
# accepts, and import into Knot with `keymgr import-bind`.
# Usage: tests/e2e/dnssec.sh [path/to/meridian]   (needs bind9-utils; knot for keymgr)
set -euo pipefail

BIN=$(realpath "${1:-target/debug/meridian}")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
[ -x "$BIN" ] || { echo "no meridian binary at $BIN (run cargo build first)"; exit 2; }
for tool in dnssec-dsfromkey dnssec-settime dnssec-signzone dnssec-verify; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (bind9-utils)"; exit 2; }
done

# shellcheck source=tests/e2e/lib.sh
source "$ROOT/tests/e2e/lib.sh"
work_dir dnssec
cd "$W"

csk=$("$BIN" dnssec keygen example.test --dir "$W" --inactive +90d)
check "keygen names its files K<zone>.+013+<tag> ($csk)" eval '[[ "$csk" =~ ^Kexample\.test\.\+013\+[0-9]{5}$ ]] && test -f "$csk.key" -a -f "$csk.private"'
check "the private key is readable by its owner only" test "$(stat -c %a "$csk.private")" = 600
check "dnssec-settime reads the timing (Activate, Inactive)" eval 'dnssec-settime -p all "$csk" | grep -q "^Activate: " && dnssec-settime -p all "$csk" | grep -q "^Inactive: "'
ours=$("$BIN" dnssec ds example.test --dir "$W")
theirs=$(dnssec-dsfromkey -2 "$csk")
check "meridian dnssec ds matches dnssec-dsfromkey -2" test "$ours" = "$theirs"

ksk=$("$BIN" dnssec keygen example.test --dir "$W" --algorithm ed25519 --role ksk)
zsk=$("$BIN" dnssec keygen example.test --dir "$W" --algorithm ed25519 --role zsk)
check "an Ed25519 KSK's DS matches too" test "$("$BIN" dnssec ds example.test --dir "$W" | grep " 15 2 ")" = "$(dnssec-dsfromkey -2 "$ksk")"
check "a ZSK has no DS" eval '! "$BIN" dnssec ds example.test --dir "$W" | grep -q " $(echo "$zsk" | sed "s/.*+0*//") 15 2 "'

# BIND signs with our keys, and its verifier accepts the result.
cat > example.test.zone <<'EOF'
$TTL 300
@ IN SOA ns1.example.test. hostmaster.example.test. 1 7200 900 1209600 60
@ IN NS ns1
ns1 IN A 192.0.2.53
www IN A 192.0.2.80
EOF
for k in "$csk" "$ksk" "$zsk"; do cat "$k.key" >> example.test.zone; done
# -z: a CSK signs everything, whatever its KSK flag says.
check "dnssec-signzone signs with the ECDSA CSK" eval 'dnssec-signzone -q -z -o example.test -f csk.signed example.test.zone "$csk" >/dev/null 2>&1'
check "dnssec-verify accepts that zone" eval 'dnssec-verify -q -z -o example.test csk.signed >/dev/null 2>&1'
check "dnssec-signzone signs with the Ed25519 KSK and ZSK" eval 'dnssec-signzone -q -o example.test -f split.signed -k "$ksk" example.test.zone "$zsk" >/dev/null 2>&1'
check "dnssec-verify accepts that zone too" eval 'dnssec-verify -q -o example.test split.signed >/dev/null 2>&1'

if command -v keymgr >/dev/null; then
  mkdir -p kasp
  check "Knot's keymgr imports the key" eval 'keymgr -D kasp example.test. import-bind "$csk.private" >/dev/null 2>&1'
  check "and lists it with the same tag" eval 'keymgr -D kasp example.test. list 2>/dev/null | grep -q " $(echo "$csk" | sed "s/.*+0*//") KSK "'
fi

# A tampered file is refused, naming it.
# The key's first character changed (to B when it is an A: a tampered file must differ).
first=$(sed -n 's/^PrivateKey: \(.\).*/\1/p' "$zsk.private")
other=A; [ "$first" = A ] && other=B
sed -i "s/^PrivateKey: ./PrivateKey: $other/" "$zsk.private"
"$BIN" dnssec ds example.test --dir "$W" >/dev/null 2>"$W/err" || true
check "a private key that is not the public key's is refused ($(head -c 120 "$W/err"))" grep -q "$zsk.private" "$W/err"

# Serving: a signed zone that delv validates with the zone's key as its trust anchor.
command -v delv >/dev/null || { echo "delv is missing (bind9-dnsutils)"; exit 2; }
mkdir -p "$W/serve" && cd "$W/serve"
signer=$("$BIN" dnssec keygen example.test --dir "$W/serve")
liar=$("$BIN" dnssec keygen lies.test --dir "$W/serve")
cat > example.test.zone <<'EOF'
$TTL 300
@ IN SOA ns1.example.test. hostmaster.example.test. 1 7200 900 1209600 60
@ IN NS ns1
@ IN MX 10 mail
ns1 IN A 192.0.2.53
mail IN A 192.0.2.25
static IN A 192.0.2.80
*.wild IN A 192.0.2.90
a.ent IN TXT "under an empty non-terminal"
secure IN NS ns.secure
secure IN DS 12345 13 2 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF
ns.secure IN A 192.0.2.153
insecure IN NS ns.insecure
ns.insecure IN A 192.0.2.154
EOF
cp example.test.zone lies.test.zone
cat > example.test.gslb.toml <<'EOF'
[[name]]
name = "www"
policy = "weighted"
pool = "web"
answers = 2

[[name]]
name = "geo"
policy = "geo-nearest"
pool = "global"
default_order = ["iad", "sin"]
subnets = { "127.0.0.2/32" = ["sin"] }

[pool.web]
members = [
  { site = "iad", address = "192.0.2.1" },
  { site = "iad", address = "192.0.2.2" },
  { site = "sin", address = "192.0.2.3" },
]

[pool.global]
members = [
  { site = "iad", address = "198.51.100.20" },
  { site = "sin", address = "203.0.113.20" },
]

[site.iad]
location = [38.95, -77.45]
[site.sin]
location = [1.35, 103.82]
EOF
cat > meridian.toml <<EOF
[server]
listen = ["127.0.0.1:0"]
control = "127.0.0.1:0"
state_dir = "state"
geo_database = "$ROOT/geo/demo-city.mmdb"

[[zone]]
origin = "example.test"
file = "example.test.zone"
gslb = "example.test.gslb.toml"
dnssec_keys = ["$signer"]
[zone.transfer]
allow = ["127.0.0.0/8"]

[[zone]]
origin = "lies.test"
file = "lies.test.zone"
dnssec_keys = ["$liar"]
dnssec_denial = "white-lies"
EOF
start_serve "$BIN" "$W/serve/meridian.toml"
read -r _ _ _ flags proto alg key < <(grep DNSKEY "$signer.key")
printf 'trust-anchors {\n  example.test. static-key %s %s %s "%s";\n};\n' "$flags" "$proto" "$alg" "$key" > anchors
delv_at() { # delv_at SERVER ARG...: delv's output, validating from the zone's key
  local at=$1; shift
  delv @"${at%:*}" -p "${at##*:}" -a anchors +root=example.test "$@" 2>&1
}
validated() { delv_at "$DNS" "$@" | grep -q '^; fully validated'; }
proven() { delv_at "$DNS" "$@" | grep -q '^; negative response, fully validated'; }
check "delv validates a static answer" validated static.example.test A
check "delv validates the DNSKEY set" validated example.test DNSKEY
check "delv validates an MX answer" validated example.test MX
check "delv validates a weighted answer" validated www.example.test A
check "delv validates a wildcard's answer" validated x.wild.example.test A
check "delv validates a geo answer for a client the subnets place" eval 'delv_at "$DNS" -b 127.0.0.2 geo.example.test A | grep -A1 "fully validated" | grep -q 203.0.113.20'
check "delv validates the geo answer for another client" eval 'delv_at "$DNS" -b 127.0.0.1 geo.example.test A | grep -A1 "fully validated" | grep -q 198.51.100.20'
check "delv validates the secure delegation's DS" validated secure.example.test DS
check "delv validates a name that does not exist (compact denial)" proven nope.example.test A
check "delv validates a type the name lacks" proven static.example.test TXT
check "delv validates a wildcard's missing type" proven x.wild.example.test AAAA
check "delv validates an empty non-terminal" proven ent.example.test A
check "delv validates the insecure delegation's missing DS" proven insecure.example.test DS
check "dig +dnssec shows the RRSIG" eval 'dig @"${DNS%:*}" -p "${DNS##*:}" +dnssec +norec static.example.test A | grep -q "RRSIG.*A 13 3 300"'
check "a referral carries the DS set signed" eval 'dig @"${DNS%:*}" -p "${DNS##*:}" +dnssec +norec host.secure.example.test A | grep -A3 "AUTHORITY SECTION" | grep -q "RRSIG.*DS 13"'

# A relay that changes one byte of the static address: validation fails.
relay_port=$(free_port)
/usr/bin/python3 - "$relay_port" "${DNS##*:}" <<'RELAY' &
import socket, sys
relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
relay.bind(("127.0.0.1", int(sys.argv[1])))
upstream = ("127.0.0.1", int(sys.argv[2]))
relay.settimeout(60)
for _ in range(200):
    try:
        query, client = relay.recvfrom(65535)
    except OSError:
        break
    ask = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ask.settimeout(5)
    ask.sendto(query, upstream)
    reply = ask.recv(65535).replace(bytes([192, 0, 2, 80]), bytes([192, 0, 2, 81]))
    relay.sendto(reply, client)
RELAY
PIDS+=($!)
check "dig through the relay gets the changed address" eventually 10 eval 'dig @127.0.0.1 -p "$relay_port" +dnssec +norec static.example.test A | grep -q "A[[:space:]]*192.0.2.81"'
check "delv fails to validate it" eval 'delv_at "127.0.0.1:$relay_port" static.example.test A | grep -q "resolution failed"'

# A zone that denies names with NSEC white lies (RFC 4470): NXDOMAIN with an NSEC covering
# the name and one covering the wildcard, each spanning nothing else; validated by delv (BIND)
# and by unbound-host (libunbound), which find the closest encloser in different ways.
read -r _ _ _ flags proto alg key < <(grep DNSKEY "$liar.key")
printf 'trust-anchors {\n  lies.test. static-key %s %s %s "%s";\n};\n' "$flags" "$proto" "$alg" "$key" > lies.anchors
lies_proven() { delv @"${DNS%:*}" -p "${DNS##*:}" -a lies.anchors +root=lies.test "$@" 2>&1 | grep -q '^; negative response, fully validated'; }
check "a missing name gets NXDOMAIN with two NSEC records" eval '[ "$(dig @"${DNS%:*}" -p "${DNS##*:}" +dnssec +norec nope.lies.test A | grep -Ec "status: NXDOMAIN|IN[[:space:]]+NSEC[[:space:]]")" = 3 ]'
for name in nope.lies.test a.b.nope.lies.test b.ent.lies.test z.a.ent.lies.test 0.lies.test zzz.lies.test; do
  check "delv validates the white lies for $name" lies_proven "$name" A
done
check "delv validates an empty non-terminal in that zone" lies_proven ent.lies.test A
check "delv validates a type a name lacks in that zone" lies_proven static.lies.test TXT
if command -v unbound-host >/dev/null; then
  cat > unbound.conf <<CONF
server:
  do-not-query-localhost: no
  local-zone: "test." nodefault
  module-config: "validator iterator"
  trust-anchor: "lies.test. DNSKEY $flags $proto $alg $key"
stub-zone:
  name: "lies.test"
  stub-addr: 127.0.0.1@${DNS##*:}
CONF
  ub() { unbound-host -C unbound.conf -v -t A "$1" 2>&1; }
  for asked in nope.lies.test a.b.nope.lies.test b.ent.lies.test '(.lies.test' ns1a.lies.test; do
    check "unbound-host finds NXDOMAIN for $asked secure" eval '[[ "$(ub "$asked")" == *"(NXDOMAIN). (secure)" ]]'
  done
  check "unbound-host finds the empty non-terminal secure" eval '[[ "$(ub ent.lies.test)" == *"has no address (secure)" ]]'
  check "unbound-host finds a static name secure" eval '[[ "$(ub static.lies.test)" == *"has address 192.0.2.80 (secure)" ]]'
fi

# The signed zone transferred: BIND's verifier accepts it (signatures, the NSEC chain over
# every name, the load-balanced ones included), and an NSD secondary serving it answers what
# delv validates, the load-balanced name too.
dig @"${DNS%:*}" -p "${DNS##*:}" +nocmd +nostats +nocomments example.test AXFR > transferred.zone
check "the transfer holds an NSEC at the load-balanced name" grep -Eq '^www\.example\.test\.[[:space:]].*NSEC' transferred.zone
check "dnssec-verify accepts the transferred zone (-z: a CSK signs everything)" eval 'dnssec-verify -q -z -o example.test transferred.zone >verify.out 2>&1 || { cat verify.out; false; }'
check "status shows when the signatures secondaries hold expire" eval 'curl -sf "http://$CONTROL/status" | grep -Eq "\"transferred_expiry\": ?[0-9]{10}"'
check "and so does the metric the alert rule watches" eval 'curl -sf "http://$CONTROL/metrics" | grep -Eq "^meridian_dnssec_transferred_signature_expiry_timestamp_seconds\{zone=\"example.test.\"\} [0-9]{10}$"'
if command -v nsd >/dev/null; then
  mkdir -p nsd
  nport=$(free_port)
  nsd_conf "$W/serve/nsd" "$W/serve/nsd" "$nport" > nsd/nsd.conf
  cat >> nsd/nsd.conf <<CONF
zone:
  name: example.test
  zonefile: example.test.zone
  request-xfr: AXFR 127.0.0.1@${DNS##*:} NOKEY
CONF
  nsd -d -c "$W/serve/nsd/nsd.conf" 2>nsd/stderr &
  PIDS+=($!)
  check "NSD transfers the signed zone" eventually 20 dig +short +time=1 +tries=1 @127.0.0.1 -p "$nport" example.test DNSKEY
  at_nsd() { delv @127.0.0.1 -p "$nport" -a anchors +root=example.test "$@" 2>&1; }
  check "delv validates a load-balanced name at the NSD secondary" eval 'at_nsd www.example.test A | grep -q "^; fully validated"'
  check "and a static name" eval 'at_nsd static.example.test A | grep -q "^; fully validated"'
  check "and a name that does not exist (NSEC chain)" eval 'at_nsd nope.example.test A | grep -q "^; negative response, fully validated"'
fi

finish "dnssec suite"
