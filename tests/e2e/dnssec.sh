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
sed -i 's/^PrivateKey: ./PrivateKey: A/' "$zsk.private"
"$BIN" dnssec ds example.test --dir "$W" >/dev/null 2>"$W/err" || true
check "a private key that is not the public key's is refused ($(head -c 120 "$W/err"))" grep -q "$zsk.private" "$W/err"

finish "dnssec keys suite"
