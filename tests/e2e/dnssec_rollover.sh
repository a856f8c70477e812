#!/usr/bin/env bash
# DNSSEC key rollovers carried out by the server as the key files' timing says, validated by
# delv at every step from the parent zone's key as trust anchor. The parent (`test.`) and the
# child (`example.test.`) are both served by one Meridian, so the child's DS comes from the
# parent zone file, which this script edits as a parent's operator would.
#   ZSK pre-publication: the new ZSK is published first, signs from its Activate time while
#   the old one stays published, then the old one is deleted.
#   KSK double-KSK: the new KSK signs the key set beside the old one; the old one's Inactive
#   time comes while the parent's DS still points at it only, so the server holds it (status
#   says `held`) and its CDS asks for the new key; once the script copies the CDS into the
#   parent's DS, the old key retires.
# Timing changes are made with BIND's dnssec-settime; the server notices the edited key files
# and reloads by itself.
# Usage: tests/e2e/dnssec_rollover.sh [path/to/meridian]   (needs bind9-utils, bind9-dnsutils)
set -euo pipefail

BIN=$(realpath "${1:-target/debug/meridian}")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
[ -x "$BIN" ] || { echo "no meridian binary at $BIN (run cargo build first)"; exit 2; }
for tool in dnssec-settime delv dig; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (bind9-utils, bind9-dnsutils)"; exit 2; }
done

# shellcheck source=tests/e2e/lib.sh
source "$ROOT/tests/e2e/lib.sh"
work_dir dnssec-rollover
cd "$W"

parent_key=$("$BIN" dnssec keygen test --dir "$W")
ksk1=$("$BIN" dnssec keygen example.test --dir "$W" --role ksk)
zsk1=$("$BIN" dnssec keygen example.test --dir "$W" --role zsk)
tag() { echo "${1##*+}" | sed 's/^0*//'; }

parent_zone() { # parent_zone SERIAL DS-LINE...: writes the parent zone
  local serial=$1; shift
  {
    echo '$TTL 300'
    echo "@ IN SOA ns1.test. hostmaster.test. $serial 7200 900 1209600 60"
    echo '@ IN NS ns1'
    echo 'ns1 IN A 192.0.2.53'
    echo 'example IN NS ns1.example'
    echo 'ns1.example IN A 192.0.2.54'
    for ds in "$@"; do echo "$ds"; done
  } > test.zone.new
  mv test.zone.new test.zone
}
parent_zone 1 "$("$BIN" dnssec ds example.test --dir "$W" | grep " $(tag "$ksk1") ")"
cat > example.test.zone <<'EOF'
$TTL 300
@ IN SOA ns1.example.test. hostmaster.example.test. 1 7200 900 1209600 60
@ IN NS ns1
ns1 IN A 192.0.2.54
www IN A 192.0.2.80
EOF
cat > example.test.gslb.toml <<'EOF'
[[name]]
name = "lb"
policy = "weighted"
pool = "web"

[pool.web]
members = [
  { site = "a", address = "192.0.2.1" },
  { site = "b", address = "192.0.2.2" },
]
EOF
server_section() { # the [server] table of each node's file, on loopback ports
  printf '[server]\nlisten = ["127.0.0.1:0"]\ncontrol = "127.0.0.1:0"\nstate_dir = "state"\n\n'
}
PARENT_AT=""
child_keys() { # child_keys STEM...: the node's file with the child zone's dnssec_keys; the
  # parent zone served beside it, or, with PARENT_AT set, asked of that server
  local list="" k
  for k in "$@"; do list+="\"$k\", "; done
  {
    server_section
    [ -n "$PARENT_AT" ] || printf '[[zone]]\norigin = "test"\nfile = "test.zone"\ndnssec_keys = ["%s"]\n\n' "$parent_key"
    printf '[[zone]]\norigin = "example.test"\nfile = "example.test.zone"\ngslb = "example.test.gslb.toml"\n'
    printf 'dnssec_keys = [%s]\n' "${list%, }"
    [ -z "$PARENT_AT" ] || printf 'dnssec_parent = ["%s"]\n' "$PARENT_AT"
  } > meridian.toml.new
  mv meridian.toml.new meridian.toml
}
child_keys "$ksk1" "$zsk1"
start_serve "$BIN" "$W/meridian.toml"

read -r _ _ _ flags proto alg key < <(grep DNSKEY "$parent_key.key")
printf 'trust-anchors {\n  test. static-key %s %s %s "%s";\n};\n' "$flags" "$proto" "$alg" "$key" > anchors
q() { dig @"${DNS%:*}" -p "${DNS##*:}" +dnssec +norec +short "$@"; }
# Tags of the RRSIGs over NAME's TYPE set.
signers() { q "$1" "$2" | awk -v t="$2" '$1 == t && NF > 7 {print $7}' | sort -n | tr '\n' ' '; }
keyset() { q example.test DNSKEY | awk '$1 ~ /^25[67]$/' | wc -l; }
cds() { q example.test CDS | awk '$1 ~ /^[0-9]+$/'; }
validates() {
  local asked
  for asked in www.example.test lb.example.test; do
    delv @"${DNS%:*}" -p "${DNS##*:}" -a anchors +root=test "$asked" A 2>&1 | grep -q '^; fully validated' || return 1
  done
}
state_of() { # state_of TAG: the key's state in ctl status
  "$BIN" ctl --control "$CONTROL" status --json | /usr/bin/python3 -c 'import json, sys
doc = json.load(sys.stdin)
for z in doc["zones"]:
    for k in z["dnssec_keys"]:
        if str(k["tag"]) == sys.argv[1]:
            print(k["state"])' "$1"
}
T1=$(tag "$ksk1") Z1=$(tag "$zsk1")

check "start: answers validate from the parent's key" validates
check "start: the ZSK signs the data ($(signers www.example.test A))" test "$(signers www.example.test A)" = "$Z1 "

# ZSK pre-publication.
zsk2=$("$BIN" dnssec keygen example.test --dir "$W" --role zsk)
Z2=$(tag "$zsk2")
dnssec-settime -A +30d "$zsk2" >/dev/null
child_keys "$ksk1" "$zsk1" "$zsk2"
check "pre-publish: the new ZSK is in the key set" eventually 10 eval 'test "$(keyset)" = 3'
check "pre-publish: the old ZSK still signs" test "$(signers www.example.test A)" = "$Z1 "
check "pre-publish: the new ZSK is published, not active" test "$(state_of "$Z2")" = published
check "pre-publish: answers validate" validates
dnssec-settime -A now "$zsk2" >/dev/null
dnssec-settime -I now "$zsk1" >/dev/null
check "roll: the new ZSK signs, at its Activate time" eventually 10 eval 'test "$(signers www.example.test A)" = "$Z2 "'
check "roll: the load-balanced name too" test "$(signers lb.example.test A)" = "$Z2 "
check "roll: the old ZSK stays published (retired)" test "$(keyset) $(state_of "$Z1")" = "3 retired"
check "roll: answers validate" validates
dnssec-settime -D now "$zsk1" >/dev/null
check "remove: the old ZSK leaves the key set" eventually 10 eval 'test "$(keyset)" = 2'
check "remove: answers validate" validates

# KSK double-KSK, the retire step waiting for the parent.
ksk2=$("$BIN" dnssec keygen example.test --dir "$W" --role ksk)
T2=$(tag "$ksk2")
child_keys "$ksk1" "$zsk1" "$zsk2" "$ksk2"
check "double-KSK: both KSKs sign the key set" eventually 10 eval 'test "$(signers example.test DNSKEY)" = "$(printf '\''%s\n'\'' "$T1" "$T2" | sort -n | tr '\''\n'\'' '\'' '\'')"'
check "double-KSK: CDS asks for both" test "$(cds | wc -l)" = 2
check "double-KSK: answers validate" validates
dnssec-settime -I now "$ksk1" >/dev/null
check "retire: the old KSK is held, its parent's DS unchanged" eventually 10 eval 'test "$(state_of "$T1")" = held'
check "retire: it still signs the key set" test "$(signers example.test DNSKEY)" = "$(printf '%s\n' "$T1" "$T2" | sort -n | tr '\n' ' ')"
check "retire: CDS asks for the new KSK only" test "$(cds | awk '{print $1}')" = "$T2"
check "retire: answers validate while held" validates
# The parent's operator copies the CDS into the DS set.
parent_zone 2 "example IN DS $(cds)"
check "parent DS updated: the old KSK retires" eventually 10 eval 'test "$(state_of "$T1")" = retired'
check "parent DS updated: the new KSK alone signs the key set" test "$(signers example.test DNSKEY)" = "$T2 "
check "parent DS updated: answers validate" validates
dnssec-settime -D now "$ksk1" >/dev/null
check "remove: the old KSK leaves the key set" eventually 10 eval 'test "$(keyset)" = 2'
check "remove: answers validate" validates

# The parent on another server: the child's node reads the DS set from it (dnssec_parent).
# Another KSK rollover, the retire step held until that server's DS changes.
mkdir -p "$W/parent" && cp "$W/test.zone" "$W/parent/test.zone"
{ server_section; printf '[[zone]]\norigin = "test"\nfile = "test.zone"\n'; } > "$W/parent/meridian.toml"
CHILD_DNS=$DNS CHILD_CONTROL=$CONTROL CHILD_W=$W
W=$W/parent  # start_serve reads the addresses from $W/serve.out
start_serve "$BIN" "$W/meridian.toml"
W=$CHILD_W
PARENT_DNS=$DNS DNS=$CHILD_DNS CONTROL=$CHILD_CONTROL
remote_parent_zone() { # remote_parent_zone SERIAL DS-LINE: the parent server's zone
  { grep -v ' DS ' "$W/test.zone" | sed "s/ 1 7200 / $1 7200 /; s/ 2 7200 / $1 7200 /"; echo "$2"; } > "$W/parent/test.zone.new"
  mv "$W/parent/test.zone.new" "$W/parent/test.zone"
}
ksk3=$("$BIN" dnssec keygen example.test --dir "$W" --role ksk)
T3=$(tag "$ksk3")
# The child zone alone now, its parent asked over DNS.
PARENT_AT=$PARENT_DNS
child_keys "$ksk2" "$zsk2" "$ksk3"
check "remote parent: both new and old KSK sign the key set" eventually 10 eval 'test "$(signers example.test DNSKEY)" = "$(printf '\''%s\n'\'' "$T2" "$T3" | sort -n | tr '\''\n'\'' '\'' '\'')"'
dnssec-settime -I now "$ksk2" >/dev/null
check "remote parent: the old KSK is held while the parent's DS points at it" eventually 10 eval 'test "$(state_of "$T2")" = held'
remote_parent_zone 3 "example IN DS $(cds)"
check "remote parent: its DS follows the CDS" eventually 10 eval 'dig @"${PARENT_DNS%:*}" -p "${PARENT_DNS##*:}" +short example.test DS | grep -q "^$T3 "'
# The node reads the parent again every few minutes while it holds a key; a reload now.
"$BIN" ctl --control "$CONTROL" reload >/dev/null
check "remote parent: once read, the old KSK retires" eventually 10 eval 'test "$(state_of "$T2")" = retired'
check "remote parent: the new KSK alone signs the key set" test "$(signers example.test DNSKEY)" = "$T3 "

finish "dnssec rollover suite"
