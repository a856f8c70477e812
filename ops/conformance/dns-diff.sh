#!/usr/bin/env bash
# Differential conformance: Meridian, NSD and Knot serve the same zone (conf.test.zone beside
# this script); every query of a corpus generated from the zone plus edge cases goes to all
# three, and their replies are compared (rcode, flags, each section as a set, EDNS). Then a
# signed pass: Meridian and Knot sign the zone with one key and answer DO queries, compared
# and each of Meridian's replies validated (see dns_diff.py's signed_pass).
#
#   ops/conformance/dns-diff.sh [path/to/meridian [CASE-GLOB...]]
#     (default: target/debug/meridian, built if missing; each CASE-GLOB prints those cases' replies)
#
# Exits non-zero on any difference from NSD that is not documented in deliberate.toml, or that
# touches what no documented difference may (see dns_diff.py). The report lists the documented
# differences met. Installs nsd, knot and python3-dnspython (Debian) when missing; starts each
# daemon on its own free loopback port and stops exactly the processes it started.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
MERIDIAN=${1:-$ROOT/target/debug/meridian}
# Further arguments are glob patterns of case names whose three replies are printed.
SHOW=()
for pattern in "${@:2}"; do SHOW+=(--show "$pattern"); done
[ -x "$MERIDIAN" ] || (cd "$ROOT" && cargo build --quiet)

# shellcheck source=tests/e2e/lib.sh
source "$ROOT/tests/e2e/lib.sh"

need=()
command -v nsd >/dev/null || need+=(nsd)
command -v knotd >/dev/null || need+=(knot)
/usr/bin/python3 -c 'import dns.message' 2>/dev/null || need+=(python3-dnspython)
if [ ${#need[@]} -gt 0 ]; then
  install_missing "${need[@]}"
  # The packages start their own daemons on the host; this script runs its own.
  systemctl disable --now nsd knot >/dev/null 2>&1 || true
fi
work_dir conformance

IDENTITY=conformance-node
ZONE=conf.test
cp "$HERE/conf.test.zone" "$W/$ZONE.zone"

# ---- NSD: rate limiting off, answers capped at 1232 bytes, identity as NSID and id.server.
NSD_PORT=$(free_port)
mkdir -p "$W/nsd"
NSID_HEX=$(printf '%s' "$IDENTITY" | od -An -tx1 | tr -d ' \n')
{
  nsd_conf "$W/nsd" "$W" "$NSD_PORT" "identity: \"$IDENTITY\"" "nsid: \"$NSID_HEX\"" \
    "hide-version: yes" "ipv4-edns-size: 1232" "minimal-responses: no"
  printf 'zone:\n  name: %s\n  zonefile: %s.zone\n' "$ZONE" "$ZONE"
} > "$W/nsd/nsd.conf"
nsd -d -c "$W/nsd/nsd.conf" 2>"$W/nsd/stderr" &
PIDS+=($!)

# ---- Knot: no RRL module, answers capped at 1232 bytes, the same identity.
KNOT_PORT=$(free_port)
mkdir -p "$W/knot"
cat > "$W/knot/knot.conf" <<CONF
server:
  listen: 127.0.0.1@$KNOT_PORT
  rundir: "$W/knot"
  identity: "$IDENTITY"
  nsid: "$IDENTITY"
  version: ""
  udp-workers: 1
  tcp-workers: 1
  background-workers: 1
  udp-max-payload: 1232
log:
  - target: "$W/knot/knot.log"
    any: info
database:
  storage: "$W/knot"
template:
  - id: default
    storage: "$W"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: $ZONE
    file: "$W/$ZONE.zone"
CONF
knotd -c "$W/knot/knot.conf" 2>"$W/knot/stderr" &
PIDS+=($!)

# ---- Meridian: the zone file alone, no load-balanced names.
MERIDIAN_PORT=$(free_port)
mkdir -p "$W/meridian"
cat > "$W/meridian/meridian.toml" <<CONF
[server]
listen = ["127.0.0.1:$MERIDIAN_PORT"]
control = "127.0.0.1:0"
state_dir = "$W/meridian/state"
edns_udp_size = 1232
identity = "$IDENTITY"

[[zone]]
origin = "$ZONE"
file = "$W/$ZONE.zone"
CONF
"$MERIDIAN" serve --config "$W/meridian/meridian.toml" >"$W/meridian/stdout" 2>"$W/meridian/stderr" &
PIDS+=($!)

# ---- The signed pass: Meridian and Knot sign the zone with the same keys (a KSK and a ZSK
# Meridian makes, imported into Knot's key store), and answer DO queries.
KSK=$("$MERIDIAN" dnssec keygen "$ZONE" --dir "$W" --role ksk)
ZSK=$("$MERIDIAN" dnssec keygen "$ZONE" --dir "$W" --role zsk)
cat "$W/$KSK.key" "$W/$ZSK.key" > "$W/keys.key"
SIGNED_MERIDIAN_PORT=$(free_port)
mkdir -p "$W/signed-meridian"
sed -e "s|127.0.0.1:$MERIDIAN_PORT|127.0.0.1:$SIGNED_MERIDIAN_PORT|" \
    -e "s|$W/meridian/state|$W/signed-meridian/state|" "$W/meridian/meridian.toml" > "$W/signed-meridian/meridian.toml"
echo "dnssec_keys = [\"$W/$KSK\", \"$W/$ZSK\"]" >> "$W/signed-meridian/meridian.toml"
"$MERIDIAN" serve --config "$W/signed-meridian/meridian.toml" >"$W/signed-meridian/stdout" 2>"$W/signed-meridian/stderr" &
PIDS+=($!)
SIGNED_KNOT_PORT=$(free_port)
mkdir -p "$W/signed-knot"
for key in "$KSK" "$ZSK"; do
  keymgr -D "$W/signed-knot/keys" "$ZONE." import-bind "$W/$key.private" >/dev/null
done
cat > "$W/signed-knot/knot.conf" <<CONF
server:
  listen: 127.0.0.1@$SIGNED_KNOT_PORT
  rundir: "$W/signed-knot"
  udp-workers: 1
  tcp-workers: 1
  background-workers: 1
  udp-max-payload: 1232
log:
  - target: "$W/signed-knot/knot.log"
    any: info
database:
  storage: "$W/signed-knot"
policy:
  - id: imported
    manual: on
template:
  - id: default
    storage: "$W/signed-knot"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: $ZONE
    file: "$W/$ZONE.zone"
    dnssec-signing: on
    dnssec-policy: imported
CONF
knotd -c "$W/signed-knot/knot.conf" 2>"$W/signed-knot/stderr" &
PIDS+=($!)

/usr/bin/python3 "$HERE/dns_diff.py" --zone "$W/$ZONE.zone" --origin "$ZONE" \
  --deliberate "$HERE/deliberate.toml" \
  --meridian "127.0.0.1:$MERIDIAN_PORT" --nsd "127.0.0.1:$NSD_PORT" --knot "127.0.0.1:$KNOT_PORT" \
  --signed-meridian "127.0.0.1:$SIGNED_MERIDIAN_PORT" --signed-knot "127.0.0.1:$SIGNED_KNOT_PORT" \
  --dnskey "$W/keys.key" \
  "${SHOW[@]}" \
  || { status=$?; for d in nsd knot meridian signed-meridian signed-knot; do echo "--- $d stderr"; tail -n 5 "$W/$d/stderr"; done; exit $status; }
