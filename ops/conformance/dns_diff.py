#!/usr/bin/python3
"""Differential conformance: the same queries to Meridian, NSD and Knot, replies compared.

Run by dns-diff.sh, which starts the three servers. Each reply is reduced to aspects (rcode,
each header flag, the question, each section as a set of records with TTLs, and the EDNS
parts); Meridian's aspects are compared with NSD's. A difference passes only when
deliberate.toml documents it for that case, the aspect is not a protected one (rcode, AA, TC,
answer, authority, and the TTLs of zone data), and NSD and Knot themselves differ there.
Malformed packets must get FORMERR or silence, and the server must keep answering.

The references run in their default response mode: Knot as it comes, NSD with
`minimal-responses: no`. NSD then adds the apex NS RRset to the authority section of every
positive answer, with its servers' addresses in the additional section; RFC 1034 section 4.3.2
makes that optional and Knot does not do it. One rule, applied to NSD's replies only: in an
answer with records in the answer section, the apex NS RRset is dropped from the authority
section, and so are the additional addresses of its servers, unless a record of the answer
section names that server (an MX, SRV or NS target) and so asks for them.
"""

import argparse
import fnmatch
import random
import socket
import struct
import textwrap
import sys
import tomllib

import dns.dnssec
import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

PROTECTED = {"rcode", "flag.AA", "flag.TC", "answer", "authority", "additional.ttl"}
TIMEOUT = 0.6
# Prefix of the TCP copies of the UDP cases; deliberate.toml's patterns match either copy.
TCP_COPY = "over TCP: "


class Case:
    def __init__(self, name, wire, tcp=False, malformed=False):
        self.name, self.wire, self.tcp, self.malformed = name, wire, tcp, malformed


def query(qname, qtype, qclass="IN", *, edns=0, payload=1232, do=False, options=None,
          flags=dns.flags.RD, opcode=dns.opcode.QUERY, ednsflags=0):
    q = dns.message.make_query(qname, qtype, qclass, use_edns=edns, payload=payload,
                               want_dnssec=do, options=options or [])
    q.flags = flags | dns.opcode.to_flags(opcode)
    if edns is not False:
        q.ednsflags |= ednsflags
    q.id = random.randrange(65536)
    return q.to_wire()


def mixed_case(text, rng):
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in text)


def corpus(zone_file, origin):
    rng = random.Random(20261123)
    zone = dns.zone.from_file(zone_file, origin=origin, relativize=False)
    cases = []
    add = lambda name, wire, **kw: cases.append(Case(name, wire, **kw))

    common = ["A", "AAAA", "NS", "SOA", "MX", "TXT", "CNAME", "SRV", "PTR", "DS", "CAA", "ANY",
              "TYPE65400"]
    for node_name, node in sorted(zone.nodes.items()):
        present = {dns.rdatatype.to_text(r.rdtype) for r in node.rdatasets}
        name = node_name.to_text()
        for t in sorted(set(common) | present):
            add(f"{name} {t}", query(name, t))
        add(f"{name} A no-edns", query(name, "A", edns=False))
        add(f"{name} A do", query(name, "A", do=True))
        if not name.startswith("*"):
            add(f"below {name}", query("zz." + name, "A"))
        add(f"{name} A 0x20", query(mixed_case(name, rng), "A"))

    # Empty non-terminals, wildcards and what blocks them.
    for name in ["c.ent", "b.c.ent", "y.wild", "any.wild", "a.b.wild", "z.y.wild", "\\*.wild",
                 "host.wild", "q.cwild", "q.ewild", "deep.a.b.c.ent", "zz.c.ent"]:
        for t in ["A", "TXT", "AAAA", "ANY"]:
            add(f"{name} {t}", query(f"{name}.{origin}.", t))
    # Delegations: at, below, and the parent-side DS.
    for name in ["sub", "ns.sub", "deep.x.sub", "sub2", "ns.sub2", "far", "x.far", "wide"]:
        for t in ["A", "NS", "DS", "SOA", "ANY"]:
            add(f"{name} {t}", query(f"{name}.{origin}.", t))
    # Additional data (wildcard MX, mixed case) and aliases into delegations.
    for name, t in [("x.wmx", "MX"), ("A.b.WMX", "MX"), ("Mx2", "MX"), ("_LDAP._tcp", "SRV"),
                    ("TO-sub", "A"), ("to-CHAIN", "AAAA"), ("to-cut", "NS"), ("to-wide", "A")]:
        add(f"{name} {t}", query(f"{name}.{origin}.", t))
        add(f"no-edns {name} {t}", query(f"{name}.{origin}.", t, edns=False))
    # Out of zone and above it.
    for name in ["example.com.", "test.", ".", "outside.example.", "conf.test.example."]:
        add(f"out-of-zone {name}", query(name, "A"))
    # EDNS: sizes, DO, version, unknown options and flags, NSID, a client cookie.
    for size in [0, 511, 512, 1231, 1232, 4096, 65535]:
        add(f"edns size {size} big TXT", query(f"big.{origin}.", "TXT", payload=size))
        add(f"edns size {size} many A", query(f"many.{origin}.", "A", payload=size))
    add("edns version 1", query(f"www.{origin}.", "A", edns=1))
    add("edns version 1 nxdomain", query(f"nothing.{origin}.", "A", edns=1))
    add("edns unknown option", query(f"www.{origin}.", "A",
                                     options=[dns.edns.GenericOption(65001, b"\x01\x02")]))
    add("edns unknown flag", query(f"www.{origin}.", "A", ednsflags=0x4000))
    add("edns nsid", query(f"www.{origin}.", "A", options=[dns.edns.GenericOption(3, b"")]))
    add("edns nsid nxdomain", query(f"nothing.{origin}.", "A",
                                    options=[dns.edns.GenericOption(3, b"")]))
    # Truncation without EDNS, and glue that does not fit.
    for name, t in [("big", "TXT"), ("many", "A"), ("wide", "A"), ("x.wide", "AAAA"),
                    ("@", "ANY"), ("@", "NS"), ("@", "MX"), ("bigmx", "MX"), ("to-wide", "A")]:
        qn = origin + "." if name == "@" else f"{name}.{origin}."
        add(f"no-edns {name} {t}", query(qn, t, edns=False))
        add(f"tcp {name} {t}", query(qn, t), tcp=True)
    # Header bits and opcodes.
    www = f"www.{origin}."
    add("flags none", query(www, "A", flags=0))
    add("flags CD", query(www, "A", flags=dns.flags.RD | dns.flags.CD))
    add("flags AD", query(www, "A", flags=dns.flags.RD | dns.flags.AD))
    add("flags AA in query", query(www, "A", flags=dns.flags.AA))
    add("flags TC in query", query(www, "A", flags=dns.flags.TC))
    add("flags RA in query", query(www, "A", flags=dns.flags.RA))
    for op in [1, 2, 3, 5, 6, 15]:
        add(f"opcode {op}", query(www, "A", opcode=op))
    add("opcode NOTIFY from a stranger", query(origin + ".", "SOA", opcode=dns.opcode.NOTIFY,
                                              flags=dns.flags.AA))
    # Classes and meta types.
    for name in ["id.server.", "hostname.bind.", "version.bind.", "version.server.",
                 "authors.bind.", "ID.SERVER."]:
        add(f"CH TXT {name}", query(name, "TXT", "CH"))
    add("CH A id.server", query("id.server.", "A", "CH"))
    add("CH TXT in zone", query(www, "TXT", "CH"))
    add("HS A in zone", query(www, "A", "HS"))
    add("class ANY", query(www, "A", "ANY"))
    add("class NONE", query(www, "A", "NONE"))
    add("class 42", query(www, "A", 42))
    for t in ["AXFR", "IXFR", "MAILA", "MAILB", "OPT", "TSIG", "TKEY", "TYPE0", "NULL"]:
        add(f"type {t}", query(origin + ".", t))

    # Everything so far again over TCP, where nothing is truncated.
    cases += [Case(TCP_COPY + c.name, c.wire, tcp=True) for c in cases if not c.tcp]

    # Malformed packets: FORMERR or silence, never a crash.
    good = bytearray(query(www, "A"))
    add("malformed empty", b"", malformed=True)
    add("malformed short header", bytes(good[:7]), malformed=True)
    add("malformed header only", bytes(good[:12]), malformed=True)
    add("malformed cut question", bytes(good[:20]), malformed=True)
    two = bytearray(good)
    two[5] = 2
    add("malformed qdcount 2", bytes(two), malformed=True)
    zero = bytearray(good[:12])
    zero[4:6] = b"\x00\x00"
    add("malformed qdcount 0 no edns", bytes(zero), malformed=True)
    loop = bytearray(good[:12]) + b"\xc0\x0c\x00\x01\x00\x01"
    add("malformed pointer loop", bytes(loop), malformed=True)
    forward = bytearray(good[:12]) + b"\xc0\x40\x00\x01\x00\x01"
    add("malformed forward pointer", bytes(forward), malformed=True)
    long_label = bytearray(good[:12]) + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01"
    add("malformed label 64", bytes(long_label), malformed=True)
    an = bytearray(good)
    an[7] = 1
    add("malformed ancount without data", bytes(an), malformed=True)
    opt = bytearray(query(www, "A"))
    opt[-2] = 0xff  # OPT RDLENGTH says more than follows
    add("malformed OPT rdlength", bytes(opt), malformed=True)
    twice = bytearray(query(www, "A", edns=False))
    rr = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    twice[11] = 2
    add("malformed two OPT", bytes(twice) + rr + rr, malformed=True)
    qr = bytearray(good)
    qr[2] |= 0x80
    add("malformed QR set", bytes(qr), malformed=True)
    add("malformed garbage", bytes(rng.randrange(256) for _ in range(64)), malformed=True)
    add("malformed trailing bytes", bytes(good) + b"\x00\x00\x00", malformed=True)
    return cases


def exchange(server, case):
    host, port = server.rsplit(":", 1)
    addr = (host, int(port))
    try:
        if case.tcp:
            with socket.create_connection(addr, timeout=TIMEOUT * 3) as s:
                s.sendall(struct.pack("!H", len(case.wire)) + case.wire)
                head = recv_exact(s, 2)
                return recv_exact(s, struct.unpack("!H", head)[0])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(TIMEOUT)
            s.sendto(case.wire, addr)
            return s.recv(65535)
    except (socket.timeout, ConnectionError, OSError):
        return None


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out


def rrset_key(rrset):
    # Names compare without case; rdata in canonical text.
    items = set()
    for rd in rrset:
        items.add((rrset.name.to_text().lower(), dns.rdataclass.to_text(rrset.rdclass),
                   dns.rdatatype.to_text(rrset.rdtype), rrset.ttl, rd.to_text().lower()))
    return items


def without_apex_ns(m, origin):
    """`m` less the apex NS RRset NSD adds to the authority of a positive answer, and its
    servers' additional addresses that no answer record asks for (see the module's text)."""
    apex = dns.name.from_text(origin)
    ns = [r for r in m.authority if r.name == apex and r.rdtype == dns.rdatatype.NS]
    if not m.answer or not ns:
        return m
    asked = {rd.target for rrset in m.answer for rd in rrset
             if rrset.rdtype in (dns.rdatatype.NS, dns.rdatatype.SRV)}
    asked |= {rd.exchange for rrset in m.answer for rd in rrset if rrset.rdtype == dns.rdatatype.MX}
    servers = {rd.target for rd in ns[0]} - asked
    m.authority = [r for r in m.authority if r is not ns[0]]
    m.additional = [r for r in m.additional if not (
        r.name in servers and r.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA))]
    return m


def aspects(wire, origin=None):
    """The comparable parts of one reply; with `origin`, NSD's apex NS rule applied."""
    if wire is None:
        return {"reply": "silence"}
    opcode = dns.opcode.to_text((wire[2] >> 3) & 0xF) if len(wire) > 2 else None
    try:
        # Parsed as a plain message whatever the opcode (dnspython reads UPDATE replies as
        # updates, whose zone section must hold an SOA question).
        plain = bytearray(wire)
        plain[2] &= 0x87
        m = dns.message.from_wire(bytes(plain), ignore_trailing=True)
    except Exception as e:  # an unparsable reply is itself a finding
        return {"reply": f"unparsable ({type(e).__name__})"}
    if origin is not None:
        m = without_apex_ns(m, origin)
    out = {"reply": "message", "rcode": dns.rcode.to_text(m.rcode()), "opcode": opcode}
    for f in ["AA", "TC", "RD", "RA", "AD", "CD"]:
        out["flag." + f] = bool(m.flags & dns.flags.from_text(f))
    out["flag.Z"] = bool(m.flags & 0x40)
    out["question"] = tuple(f"{r.name.to_text()} {dns.rdataclass.to_text(r.rdclass)} "
                            f"{dns.rdatatype.to_text(r.rdtype)}" for r in m.question)
    for section, rrsets in [("answer", m.answer), ("authority", m.authority),
                            ("additional", m.additional)]:
        s = set()
        for rrset in rrsets:
            s |= rrset_key(rrset)
        out[section] = frozenset(s)
    out["edns.present"] = m.edns >= 0
    if m.edns >= 0:
        out["edns.version"] = m.edns
        out["edns.payload"] = m.payload
        out["edns.do"] = bool(m.ednsflags & dns.flags.DO)
        out["edns.flags"] = m.ednsflags & ~dns.flags.DO & 0xFFFF
        out["edns.options"] = frozenset(option_text(o) for o in m.options)
    return out


def option_text(o):
    code = int(o.otype)
    data = o.to_wire() if hasattr(o, "to_wire") else b""
    if code == 3:
        return f"NSID {data!r}"
    if code == 10:
        return "COOKIE"  # server cookies differ by design; presence is what compares
    return f"option {code} {data.hex()}"


def differing(a, b):
    keys = set(a) | set(b)
    diff = {k for k in keys if a.get(k) != b.get(k)}
    # TTLs of zone data present on both sides must match even where the sections differ.
    if "additional" in diff:
        ttl = {(r[0], r[2], r[4]): r[3] for r in a.get("additional", ())}
        for r in b.get("additional", ()):
            if (r[0], r[2], r[4]) in ttl and ttl[(r[0], r[2], r[4])] != r[3]:
                diff.add("additional.ttl")
    return diff


def show(value):
    if isinstance(value, frozenset):
        return "{" + "; ".join(" ".join(map(str, v)) if isinstance(v, tuple) else str(v)
                               for v in sorted(value)) + "}"
    return repr(value)


def wait_for(servers, origin):
    """Waits until each server answers the zone's SOA (50 tries); returns that query."""
    probe = Case("probe", query(f"{origin}.", "SOA"))
    for name, addr in servers.items():
        for _ in range(50):
            if exchange(addr, probe) is not None:
                break
        else:
            sys.exit(f"{name} on {addr} does not answer")
    return probe


# ---- the signed pass: DO queries to Meridian and Knot signing the same zone with the same keys

CO = 0x4000  # the Compact Answers OK EDNS flag (RFC 9824)
NXNAME = 128


def signed_corpus(zone_file, origin):
    """DO queries over the zone: every name with the common types and its own, names below
    each, empty non-terminals, wildcards and delegations; NXDOMAIN names with and without CO."""
    zone = dns.zone.from_file(zone_file, origin=origin, relativize=False)
    cases = []
    add = lambda name, wire: cases.append(Case(name, wire))
    common = ["A", "AAAA", "NS", "SOA", "MX", "TXT", "CNAME", "SRV", "DS", "DNSKEY"]
    for node_name, node in sorted(zone.nodes.items()):
        present = {dns.rdatatype.to_text(r.rdtype) for r in node.rdatasets}
        name = node_name.to_text()
        for t in sorted(set(common) | present):
            add(f"do {name} {t}", query(name, t, do=True))
        if not name.startswith("*"):
            add(f"do below {name}", query("zz." + name, "A", do=True))
    for name in ["c.ent", "b.c.ent", "y.wild", "a.b.wild", "host.wild", "deep.a.b.c.ent",
                 "sub", "ns.sub", "deep.x.sub", "sub2", "far", "x.far"]:
        for t in ["A", "TXT", "DS"]:
            add(f"do {name} {t}", query(f"{name}.{origin}.", t, do=True))
    for name in ["nothing", "zz.c.ent", "a.nothing"]:
        add(f"do {name} A co", query(f"{name}.{origin}.", "A", do=True, ednsflags=CO))
    return cases


def rrsig_summary(rrsets):
    """RRSIGs as compared: (owner, type covered, algorithm, labels, original TTL, signer)."""
    out = set()
    for rrset in rrsets:
        if rrset.rdtype == dns.rdatatype.RRSIG:
            for rd in rrset:
                out.add((rrset.name.to_text().lower(), dns.rdatatype.to_text(rd.type_covered),
                         int(rd.algorithm), rd.labels, rd.original_ttl,
                         rd.signer.to_text().lower()))
    return out


def plain_records(rrsets, skip=(dns.rdatatype.RRSIG, dns.rdatatype.NSEC, dns.rdatatype.NSEC3)):
    out = set()
    for rrset in rrsets:
        if rrset.rdtype not in skip:
            out |= rrset_key(rrset)
    return out


def validation_problems(m, keys, origin):
    """Every RRset of `m` signed by the zone must validate with `keys`; the answer's and the
    authority's sets of the zone must be signed (not the NS set and glue of a referral)."""
    problems = []
    apex = dns.name.from_text(origin)
    for section, rrsets in [("answer", m.answer), ("authority", m.authority),
                            ("additional", m.additional)]:
        sigs = [r for r in rrsets if r.rdtype == dns.rdatatype.RRSIG]
        for rrset in rrsets:
            if rrset.rdtype == dns.rdatatype.RRSIG:
                continue
            mine = [s for s in sigs if s.name == rrset.name and s[0].type_covered == rrset.rdtype]
            # A delegation's NS set is the child's: never signed by the parent.
            needed = section != "additional" and rrset.name.is_subdomain(apex) and not (
                rrset.rdtype == dns.rdatatype.NS and rrset.name != apex)
            if not mine:
                if needed:
                    problems.append(f"{section} {rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} unsigned")
                continue
            try:
                dns.dnssec.validate(rrset, mine[0], {apex: keys})
            except Exception as e:
                problems.append(f"{section} {rrset.name} {dns.rdatatype.to_text(rrset.rdtype)}: {e}")
    return problems


def compact_denial(m, qname):
    """Whether `m` denies `qname` (or the end of the CNAME chain it starts) the compact way: an
    NSEC at the name, next name \\000.name, NXNAME in its bitmap."""
    for _ in range(10):
        alias = [r for r in m.answer if r.name == qname and r.rdtype == dns.rdatatype.CNAME]
        if not alias:
            break
        qname = alias[0][0].target
    for rrset in m.authority:
        if rrset.rdtype == dns.rdatatype.NSEC and rrset.name == qname:
            rd = rrset[0]
            types = {t for window, bits in rd.windows for t in
                     (window * 256 + i * 8 + b for i, byte in enumerate(bits)
                      for b in range(8) if byte & (0x80 >> b))}
            return rd.next == dns.name.Name((b"\x00",) + qname.labels) and NXNAME in types
    return False


def signed_pass(args):
    """Meridian against Knot, both signing with the same keys: rcodes (compact denial's
    NOERROR, and NXDOMAIN under CO, is the rule here), AA and TC, the answer's and authority's
    records but the denial's, RRSIGs by (owner, type covered, algorithm, labels, original TTL,
    signer), and every Meridian reply validated with the key. Knot denies with its NSEC chain
    and Meridian with one compact NSEC: each reply's denial is checked on its own. Knot signs a
    wildcard's answer with the wildcard's labels and proves the name absent; Meridian, signing
    online, signs it as the name asked (labels of the query name), which needs no proof."""
    keys = dns.rrset.from_text(f"{args.origin}.", 300, "IN", "DNSKEY",
                               *[l.split("DNSKEY", 1)[1].strip()
                                 for l in open(args.dnskey) if "DNSKEY" in l and not l.startswith(";")])
    servers = {"meridian": args.signed_meridian, "knot": args.signed_knot}
    wait_for(servers, args.origin)
    cases = signed_corpus(args.zone, args.origin)
    failures, rules = [], {"compact NXDOMAIN": 0, "CO restores NXDOMAIN": 0, "wildcard labels": 0}
    for case in cases:
        raw = {n: exchange(a, case) for n, a in servers.items()}
        if raw["meridian"] is None or raw["knot"] is None:
            failures.append((case.name, "reply", f"meridian {raw['meridian'] is not None}, knot {raw['knot'] is not None}"))
            continue
        m, k = (dns.message.from_wire(raw[n], ignore_trailing=True) for n in ("meridian", "knot"))
        qname = dns.message.from_wire(case.wire).question[0].name
        co = bool(dns.message.from_wire(case.wire).ednsflags & CO)
        mr, kr = m.rcode(), k.rcode()
        if mr != kr:
            if kr == dns.rcode.NXDOMAIN and mr == dns.rcode.NOERROR and not co and compact_denial(m, qname):
                rules["compact NXDOMAIN"] += 1
            else:
                failures.append((case.name, "rcode", f"meridian {dns.rcode.to_text(mr)}, knot {dns.rcode.to_text(kr)}"))
        elif co and mr == dns.rcode.NXDOMAIN:
            rules["CO restores NXDOMAIN"] += 1
        for f in ["AA", "TC"]:
            flag = dns.flags.from_text(f)
            if bool(m.flags & flag) != bool(k.flags & flag):
                failures.append((case.name, f"flag.{f}", f"meridian {bool(m.flags & flag)}"))
        for section in ["answer", "authority"]:
            mine, theirs = getattr(m, section), getattr(k, section)
            if plain_records(mine) != plain_records(theirs):
                failures.append((case.name, section, f"meridian {show(frozenset(plain_records(mine)))}, "
                                 f"knot {show(frozenset(plain_records(theirs)))}"))
            skip_denial = lambda s: {r for r in s if r[1] not in ("NSEC", "NSEC3")}
            ms, ks = skip_denial(rrsig_summary(mine)), skip_denial(rrsig_summary(theirs))
            if ms != ks:
                # The wildcard rule: the same signatures but for labels, Meridian's counting
                # the owner's labels and Knot's fewer.
                strip = lambda s: {r[:3] + r[4:] for r in s}
                owner_labels = lambda r: len(dns.name.from_text(r[0]).labels) - 1
                if strip(ms) == strip(ks) and all(r[3] == owner_labels(r) for r in ms):
                    rules["wildcard labels"] += 1
                else:
                    failures.append((case.name, f"{section} RRSIGs", f"meridian {show(frozenset(ms))}, knot {show(frozenset(ks))}"))
        for problem in validation_problems(m, keys, args.origin + "."):
            failures.append((case.name, "validation", problem))
    print(f"\nsigned pass: {len(cases)} DO queries to Meridian and Knot signing with the same keys")
    for rule, n in rules.items():
        print(f"  rule {rule}: {n} replies")
    if failures:
        print(f"\n{len(failures)} differences in the signed pass:")
        for name, aspect, what in failures:
            print(f"  {name!r} {aspect}: {what}")
    return not failures


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--zone", required=True)
    p.add_argument("--origin", required=True)
    p.add_argument("--deliberate", required=True)
    p.add_argument("--meridian", required=True)
    p.add_argument("--nsd", required=True)
    p.add_argument("--knot", required=True)
    p.add_argument("--show", action="append", default=[],
                   help="print the three replies of the cases matching this glob")
    p.add_argument("--signed-meridian", help="Meridian serving the zone signed")
    p.add_argument("--signed-knot", help="Knot serving the zone signed with the same key")
    p.add_argument("--dnskey", help="the key's .key file")
    args = p.parse_args()
    with open(args.deliberate, "rb") as f:
        documented = tomllib.load(f).get("difference", [])
    for d in documented:
        if PROTECTED & set(d["aspects"]):
            sys.exit(f"deliberate.toml: '{d['id']}' documents a protected aspect")

    servers = {"meridian": args.meridian, "nsd": args.nsd, "knot": args.knot}
    probe = wait_for(servers, args.origin)

    cases = corpus(args.zone, args.origin)
    failures, tolerated, used = [], {}, set()
    knot_vs_nsd = 0
    for case in cases:
        got = {n: aspects(exchange(a, case), args.origin + "." if n == "nsd" else None)
               for n, a in servers.items()}
        m, n, k = got["meridian"], got["nsd"], got["knot"]
        if any(fnmatch.fnmatchcase(case.name, pat) for pat in args.show):
            print(f"{case.name!r}:")
            for server, reply in got.items():
                print(f"  {server:8} {reply.get('rcode')} AA={reply.get('flag.AA')} "
                      f"TC={reply.get('flag.TC')}")
                for section in ["answer", "authority", "additional"]:
                    print(f"    {section:10} {show(reply.get(section))}")
        if case.malformed:
            ok = m["reply"] == "silence" or m.get("rcode") == "FORMERR" or m == n
            if not ok:
                failures.append((case, "reply", f"{m.get('rcode', m['reply'])} "
                                 "(a malformed query gets FORMERR or silence)", n, k))
            continue
        if differing(k, n):
            knot_vs_nsd += 1
        peers_differ = differing(n, k)
        for aspect in sorted(differing(m, n)):
            entry = next((d for d in documented if aspect in d["aspects"] and any(
                fnmatch.fnmatchcase(case.name.removeprefix(TCP_COPY), pat)
                for pat in d["cases"])), None)
            if aspect not in PROTECTED and entry and aspect in peers_differ:
                tolerated.setdefault(entry["id"], []).append(case.name)
                used.add(entry["id"])
                continue
            why = ("protected" if aspect in PROTECTED else
                   "undocumented" if not entry else "documented, but NSD and Knot agree")
            failures.append((case, aspect, f"{show(m.get(aspect))} [{why}]",
                             n.get(aspect), k.get(aspect)))

    alive = exchange(args.meridian, probe) is not None
    print(f"{len(cases)} queries; Knot differs from NSD on {knot_vs_nsd} of them")
    if tolerated:
        print("\ndocumented differences met:")
        for d in documented:
            if d["id"] in tolerated:
                names = tolerated[d["id"]]
                print(f"  {d['id']} ({len(set(names))} queries, e.g. {names[0]!r}):")
                reason = " ".join(d["reason"].split())
                print(textwrap.indent(textwrap.fill(f"{reason} [{d['rfc']}]", 92), "    "))
    unused = [d["id"] for d in documented if d["id"] not in used]
    if unused:
        print(f"\ndocumented differences not met in this run: {', '.join(unused)}")
    if failures:
        print(f"\n{len(failures)} undocumented differences:")
        for case, aspect, mine, nsd, knot in failures:
            print(f"  {case.name!r} {aspect}:\n    meridian {mine}\n    nsd      {show(nsd)}\n"
                  f"    knot     {show(knot)}")
    if not alive:
        print("\nmeridian stopped answering")
    signed_ok = True
    if args.signed_meridian:
        signed_ok = signed_pass(args)
    if failures or not alive or not signed_ok:
        sys.exit(1)
    print("\nno undocumented differences")


if __name__ == "__main__":
    main()
