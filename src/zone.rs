//! Static zone data from RFC 1035 master files, and the lookups an authoritative server needs.
//!
//! Record data is parsed by hickory-proto (`RData::try_from_str`); the master-file framing
//! (entries, parentheses, comments, `$ORIGIN`, `$TTL`, omitted owners) is read here so every
//! error can name its file and line, which hickory's own zone parser does not report.
//!
//! A [`Zone`] is a map from owner name to [`Node`]. Every ancestor of an owner down from the
//! apex exists as a node too (an empty non-terminal when it holds nothing), so "does this name
//! exist" is a single map lookup and the closest encloser of a missing name is found by walking
//! up. Load-balanced names are marked on their node ([`Node::lb`]) so they take part in the same
//! walk: they are never shadowed by wildcards and their ancestors are empty non-terminals.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use hickory_proto::rr::{Name, RData, Record, RecordType};

/// A zone file could not be read or holds data an authoritative server must refuse.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    #[error("{file}: cannot read zone file: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {message}")]
    Syntax {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{file}:{line}: {owner} {rtype}: {message}")]
    Record {
        file: PathBuf,
        line: usize,
        owner: String,
        rtype: String,
        message: String,
    },
    #[error("{file}: zone {origin}: {message}")]
    Zone {
        file: PathBuf,
        origin: String,
        message: String,
    },
}

/// One RRset of static data, in file order.
#[derive(Debug, Clone)]
pub struct RRset {
    pub rtype: RecordType,
    pub records: Vec<Record>,
    /// Line of the first record, for error messages about the set.
    pub line: usize,
}

/// Which types of a node are answered by a load-balanced binding instead of static data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LbMark {
    /// Index into the config's list of bindings.
    pub binding: usize,
    pub a: bool,
    pub aaaa: bool,
}

impl LbMark {
    /// Whether the binding answers this query type.
    pub fn covers(&self, rtype: RecordType) -> bool {
        (rtype == RecordType::A && self.a) || (rtype == RecordType::AAAA && self.aaaa)
    }
}

/// Everything at one owner name.
#[derive(Debug, Clone, Default)]
pub struct Node {
    pub rrsets: Vec<RRset>,
    /// Set when a load-balanced name lives here.
    pub lb: Option<LbMark>,
}

impl Node {
    pub fn rrset(&self, rtype: RecordType) -> Option<&RRset> {
        self.rrsets.iter().find(|s| s.rtype == rtype)
    }

    /// An empty non-terminal: the name exists only because names below it do.
    pub fn is_empty(&self) -> bool {
        self.rrsets.is_empty() && self.lb.is_none()
    }
}

/// Where a query name lands in a zone.
#[derive(Debug)]
pub enum Position<'z> {
    /// The name exists (possibly as an empty non-terminal); answer from this node.
    Exact(&'z Node),
    /// The name does not exist but a wildcard covers it; answer from the wildcard node,
    /// rewriting owners to the query name.
    Wildcard(&'z Node),
    /// The name is at or below a zone cut: refer to the child's name servers.
    Referral { cut: Name, node: &'z Node },
    /// Nothing here and no wildcard: NXDOMAIN.
    Missing,
}

/// A parsed, validated zone.
#[derive(Debug, Clone)]
pub struct Zone {
    pub origin: Name,
    pub file: PathBuf,
    pub nodes: HashMap<Name, Node>,
}

impl Zone {
    /// Reads and validates a zone file for `origin`.
    pub fn load(file: &Path, origin: &Name) -> Result<Zone, ZoneError> {
        let text = std::fs::read_to_string(file).map_err(|source| ZoneError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Zone::parse(&text, file, origin)
    }

    /// Parses and validates master-file text; `file` is used only in messages.
    pub fn parse(text: &str, file: &Path, origin: &Name) -> Result<Zone, ZoneError> {
        let origin = fqdn_lower(origin);
        let mut zone = Zone {
            origin: origin.clone(),
            file: file.to_path_buf(),
            nodes: HashMap::new(),
        };
        zone.nodes.insert(origin.clone(), Node::default());
        let syntax = |line: usize, message: String| ZoneError::Syntax {
            file: file.to_path_buf(),
            line,
            message,
        };

        let mut current_origin = origin.clone();
        let mut default_ttl: Option<u32> = None;
        let mut last_ttl: Option<u32> = None;
        let mut last_owner: Option<Name> = None;

        for entry in entries(text).map_err(|(line, m)| syntax(line, m))? {
            let line = entry.line;
            let mut toks = entry.tokens.iter().map(|t| t.as_str()).peekable();
            let Some(first) = toks.peek().copied() else {
                continue;
            };
            if !entry.owner_omitted && first.starts_with('$') {
                toks.next();
                let arg = toks.next();
                match (first.to_ascii_uppercase().as_str(), arg) {
                    ("$ORIGIN", Some(o)) => {
                        current_origin = parse_name(o, &current_origin)
                            .map_err(|m| syntax(line, format!("$ORIGIN {o}: {m}")))?;
                    }
                    ("$TTL", Some(t)) => {
                        default_ttl = Some(
                            hickory_proto::serialize::txt::parse_ttl(t)
                                .map_err(|e| syntax(line, format!("$TTL {t}: {e}")))?,
                        );
                    }
                    ("$INCLUDE", _) => {
                        return Err(syntax(line, "$INCLUDE is not supported".into()));
                    }
                    (d, _) => {
                        return Err(syntax(line, format!("unknown or incomplete directive {d}")))
                    }
                }
                continue;
            }

            let owner = if entry.owner_omitted {
                last_owner
                    .clone()
                    .ok_or_else(|| syntax(line, "record without an owner name".into()))?
            } else {
                let o = toks.next().unwrap_or_default();
                parse_name(o, &current_origin)
                    .map_err(|m| syntax(line, format!("owner {o}: {m}")))?
            };
            last_owner = Some(owner.clone());

            let mut ttl = None;
            let mut rtype = None;
            for tok in toks.by_ref() {
                let upper = tok.to_ascii_uppercase();
                match upper.as_str() {
                    "IN" => continue,
                    "CH" | "CS" | "HS" => {
                        return Err(syntax(
                            line,
                            format!("class {tok} is not supported, only IN"),
                        ))
                    }
                    _ => {}
                }
                if tok.as_bytes()[0].is_ascii_digit() {
                    ttl = Some(
                        hickory_proto::serialize::txt::parse_ttl(tok)
                            .map_err(|e| syntax(line, format!("TTL {tok}: {e}")))?,
                    );
                    continue;
                }
                rtype = Some(
                    RecordType::from_str(&upper)
                        .map_err(|_| syntax(line, format!("unknown record type {tok}")))?,
                );
                break;
            }
            let rtype = rtype.ok_or_else(|| syntax(line, "record type missing".into()))?;
            let origin_text = current_origin.to_string();
            let rdata_text = toks
                .map(|t| if t == "@" { origin_text.as_str() } else { t })
                .collect::<Vec<_>>()
                .join(" ");
            let record_err = |message: String| ZoneError::Record {
                file: file.to_path_buf(),
                line,
                owner: owner.to_string(),
                rtype: rtype.to_string(),
                message,
            };
            if rdata_text.is_empty() {
                return Err(record_err("record data missing".into()));
            }
            let rdata = parse_rdata(rtype, &rdata_text)
                .map_err(|e| record_err(format!("bad record data \"{rdata_text}\": {e}")))?;
            let rdata = absolutize(rdata, &current_origin).map_err(record_err)?;
            let ttl = match (ttl, &rdata) {
                (Some(t), _) => t,
                (None, _) if default_ttl.is_some() => default_ttl.unwrap_or_default(),
                (None, RData::SOA(soa)) => soa.minimum,
                (None, _) => last_ttl.ok_or_else(|| {
                    record_err("no TTL given and no $TTL or earlier TTL to default to".into())
                })?,
            };
            last_ttl = Some(ttl);
            if !origin.zone_of(&owner) {
                return Err(record_err(format!(
                    "out-of-zone data: not in zone {origin}"
                )));
            }
            let record = Record::from_rdata(owner.clone(), ttl, rdata);
            zone.insert(record, line);
        }
        zone.validate()?;
        Ok(zone)
    }

    fn insert(&mut self, record: Record, line: usize) {
        let owner = record.name.clone();
        self.ensure_node(&owner);
        let node = self.nodes.get_mut(&owner).expect("node just ensured");
        let rtype = record.record_type();
        match node.rrsets.iter_mut().find(|s| s.rtype == rtype) {
            Some(set) => {
                // RFC 2181 section 5.2: one TTL per RRset; take the lowest, as NSD does.
                let ttl = set.records[0].ttl.min(record.ttl);
                if !set.records.iter().any(|r| r.data == record.data) {
                    set.records.push(record);
                }
                set.records.iter_mut().for_each(|r| r.ttl = ttl);
            }
            None => node.rrsets.push(RRset {
                rtype,
                records: vec![record],
                line,
            }),
        }
    }

    /// Makes sure `name` and every ancestor down from the apex has a node.
    pub fn ensure_node(&mut self, name: &Name) {
        let apex_labels = self.origin.num_labels();
        for n in (apex_labels..=name.num_labels()).rev() {
            let ancestor = name.trim_to(n as usize);
            if self.nodes.contains_key(&ancestor) {
                break;
            }
            self.nodes.insert(ancestor, Node::default());
        }
        // `num_labels` does not count a leading `*`: a wildcard owner is added here.
        self.nodes.entry(name.clone()).or_default();
    }

    fn validate(&self) -> Result<(), ZoneError> {
        let zone_err = |message: String| ZoneError::Zone {
            file: self.file.clone(),
            origin: self.origin.to_string(),
            message,
        };
        let apex = &self.nodes[&self.origin];
        match apex.rrset(RecordType::SOA) {
            None => return Err(zone_err("missing SOA record at the apex".into())),
            Some(s) if s.records.len() > 1 => {
                return Err(self.record_error(s, "more than one SOA record at the apex"))
            }
            Some(_) => {}
        }
        if apex.rrset(RecordType::NS).is_none() {
            return Err(zone_err("no NS records at the apex".into()));
        }
        for (name, node) in &self.nodes {
            if let Some(cname) = node.rrset(RecordType::CNAME) {
                if cname.records.len() > 1 {
                    return Err(self.record_error(cname, "more than one CNAME at one name"));
                }
                if node.rrsets.len() > 1 {
                    return Err(self.record_error(cname, "CNAME beside other data"));
                }
            }
            if name != &self.origin && node.rrset(RecordType::SOA).is_some() {
                let soa = node.rrset(RecordType::SOA).expect("checked");
                return Err(self.record_error(soa, "SOA record outside the zone apex"));
            }
        }
        Ok(())
    }

    fn record_error(&self, set: &RRset, message: &str) -> ZoneError {
        ZoneError::Record {
            file: self.file.clone(),
            line: set.line,
            owner: set.records[0].name.to_string(),
            rtype: set.rtype.to_string(),
            message: message.into(),
        }
    }

    /// The apex SOA record.
    pub fn soa(&self) -> &Record {
        &self.nodes[&self.origin]
            .rrset(RecordType::SOA)
            .expect("validated zone has a SOA")
            .records[0]
    }

    /// The SOA to put in a negative answer, with TTL = min(SOA TTL, SOA MINIMUM) (RFC 2308).
    pub fn negative_soa(&self) -> Record {
        let mut soa = self.soa().clone();
        if let RData::SOA(data) = &soa.data {
            soa.ttl = soa.ttl.min(data.minimum);
        }
        soa
    }

    /// Finds where `qname` (lower case, inside this zone) lands.
    pub fn find(&self, qname: &Name, qtype: RecordType) -> Position<'_> {
        let apex_labels = self.origin.num_labels() as usize;
        let total = qname.num_labels() as usize;
        let mut encloser = self.origin.clone();
        for n in apex_labels + 1..=total {
            let ancestor = qname.trim_to(n);
            let Some(node) = self.nodes.get(&ancestor) else {
                return self.wildcard(&encloser);
            };
            if node.rrset(RecordType::NS).is_some() && node.lb.is_none() {
                // A zone cut. DS lives on the parent side of the cut (RFC 4035 section 3.1.4.1).
                if n == total && qtype == RecordType::DS {
                    return Position::Exact(node);
                }
                return Position::Referral {
                    cut: ancestor,
                    node,
                };
            }
            encloser = ancestor;
        }
        match self.nodes.get(qname) {
            Some(node) => Position::Exact(node),
            None => self.wildcard(&encloser),
        }
    }

    fn wildcard(&self, encloser: &Name) -> Position<'_> {
        match encloser
            .prepend_label("*")
            .ok()
            .and_then(|w| self.nodes.get(&w))
        {
            Some(node) => Position::Wildcard(node),
            None => Position::Missing,
        }
    }

    /// Address records for `name` if it is data in this zone (glue included), ignoring cuts.
    pub fn addresses(&self, name: &Name) -> impl Iterator<Item = &Record> {
        self.nodes
            .get(&name.to_lowercase())
            .into_iter()
            .flat_map(|n| n.rrsets.iter())
            .filter(|s| matches!(s.rtype, RecordType::A | RecordType::AAAA))
            .flat_map(|s| s.records.iter())
    }
}

/// A name made fully qualified and lower case.
pub fn fqdn_lower(name: &Name) -> Name {
    let mut n = name.to_lowercase();
    n.set_fqdn(true);
    n
}

fn parse_name(text: &str, origin: &Name) -> Result<Name, String> {
    if text == "@" {
        return Ok(origin.clone());
    }
    Name::parse(text, Some(origin))
        .map(|n| n.to_lowercase())
        .map_err(|e| e.to_string())
}

/// Parses record data. hickory-proto parses most types; the RFC 3597 generic form
/// (`\# LEN HEX`) and DS/CDS (whose parser hickory builds only with DNSSEC enabled) are read
/// here into opaque record data, which is served as is.
fn parse_rdata(rtype: RecordType, text: &str) -> Result<RData, String> {
    let opaque = |bytes: Vec<u8>| RData::Unknown {
        code: rtype,
        rdata: hickory_proto::rr::rdata::NULL::with(bytes),
    };
    let mut words = text.split_whitespace();
    if text.starts_with("\\#") {
        words.next();
        let len: usize = words
            .next()
            .and_then(|w| w.parse().ok())
            .ok_or("generic form needs a length after \\#")?;
        let bytes = hex(&words.collect::<String>())?;
        if bytes.len() != len {
            return Err(format!(
                "generic form says {len} bytes but has {}",
                bytes.len()
            ));
        }
        return Ok(opaque(bytes));
    }
    if matches!(rtype, RecordType::DS | RecordType::CDS) {
        let mut field = |what: &str| words.next().ok_or(format!("{what} missing"));
        let key_tag: u16 = field("key tag")?.parse().map_err(|_| "bad key tag")?;
        let algorithm: u8 = field("algorithm")?.parse().map_err(|_| "bad algorithm")?;
        let digest_type: u8 = field("digest type")?
            .parse()
            .map_err(|_| "bad digest type")?;
        let digest = hex(&words.collect::<String>())?;
        if digest.is_empty() {
            return Err("digest missing".into());
        }
        let mut bytes = key_tag.to_be_bytes().to_vec();
        bytes.extend([algorithm, digest_type]);
        bytes.extend(digest);
        return Ok(opaque(bytes));
    }
    RData::try_from_str(rtype, text).map_err(|e| e.to_string())
}

fn hex(text: &str) -> Result<Vec<u8>, String> {
    if text.len() % 2 != 0 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{text:?} is not an even run of hex digits"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

/// Record data parsed without an origin holds relative names; make them absolute.
fn absolutize(rdata: RData, origin: &Name) -> Result<RData, String> {
    let abs = |n: Name| -> Result<Name, String> {
        if n.is_fqdn() {
            Ok(n)
        } else {
            n.append_domain(origin).map_err(|e| e.to_string())
        }
    };
    use hickory_proto::rr::rdata;
    Ok(match rdata {
        RData::CNAME(rdata::CNAME(n)) => RData::CNAME(rdata::CNAME(abs(n)?)),
        RData::NS(rdata::NS(n)) => RData::NS(rdata::NS(abs(n)?)),
        RData::PTR(rdata::PTR(n)) => RData::PTR(rdata::PTR(abs(n)?)),
        RData::MX(mut mx) => {
            mx.exchange = abs(mx.exchange)?;
            RData::MX(mx)
        }
        RData::SRV(mut srv) => {
            srv.target = abs(srv.target)?;
            RData::SRV(srv)
        }
        RData::SOA(mut soa) => {
            soa.mname = abs(soa.mname)?;
            soa.rname = abs(soa.rname)?;
            RData::SOA(soa)
        }
        other => other,
    })
}

/// One logical master-file entry: its tokens and the line it starts on.
struct Entry {
    line: usize,
    owner_omitted: bool,
    tokens: Vec<String>,
}

/// Splits master-file text into entries: handles comments, quoted strings (kept with their
/// quotes for the record-data parser), escapes and parentheses spanning lines.
fn entries(text: &str) -> Result<Vec<Entry>, (usize, String)> {
    let mut out = Vec::new();
    let mut line = 1usize;
    let mut depth = 0usize;
    let mut chars = text.chars().peekable();
    let mut current = Entry {
        line: 1,
        owner_omitted: false,
        tokens: Vec::new(),
    };
    let mut token = String::new();
    let mut at_line_start = true;
    let flush = |token: &mut String, current: &mut Entry| {
        if !token.is_empty() {
            current.tokens.push(std::mem::take(token));
        }
    };
    while let Some(c) = chars.next() {
        if at_line_start && depth == 0 {
            current.line = line;
            current.owner_omitted = c == ' ' || c == '\t';
            at_line_start = false;
        }
        match c {
            '\n' => {
                flush(&mut token, &mut current);
                line += 1;
                if depth == 0 {
                    if !current.tokens.is_empty() {
                        out.push(std::mem::replace(
                            &mut current,
                            Entry {
                                line,
                                owner_omitted: false,
                                tokens: Vec::new(),
                            },
                        ));
                    }
                    at_line_start = true;
                }
            }
            ';' => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            '"' => {
                token.push('"');
                let start = line;
                loop {
                    match chars.next() {
                        Some('\\') => {
                            token.push('\\');
                            if let Some(e) = chars.next() {
                                token.push(e);
                            }
                        }
                        Some('"') => break,
                        Some('\n') => {
                            return Err((start, "unterminated quoted string".into()));
                        }
                        Some(c) => token.push(c),
                        None => return Err((start, "unterminated quoted string".into())),
                    }
                }
                token.push('"');
            }
            '\\' => {
                token.push('\\');
                if let Some(e) = chars.next() {
                    token.push(e);
                }
            }
            '(' => {
                flush(&mut token, &mut current);
                depth += 1;
            }
            ')' => {
                flush(&mut token, &mut current);
                if depth == 0 {
                    return Err((line, "unbalanced ')'".into()));
                }
                depth -= 1;
            }
            ' ' | '\t' | '\r' => flush(&mut token, &mut current),
            c => token.push(c),
        }
    }
    if depth > 0 {
        return Err((current.line, "unbalanced '(' at end of file".into()));
    }
    flush(&mut token, &mut current);
    if !current.tokens.is_empty() {
        out.push(current);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(text: &str) -> Result<Zone, ZoneError> {
        Zone::parse(
            text,
            Path::new("t.zone"),
            &Name::from_ascii("example.test.").unwrap(),
        )
    }

    const BASE: &str = "$TTL 300\n@ IN SOA ns1 hostmaster ( 1 7200 900 1209600\n 60 )\n  NS ns1\nns1 A 192.0.2.53\n";

    #[test]
    fn parses_multiline_soa_and_relative_names() {
        let z = zone(BASE).unwrap();
        let soa = z.negative_soa();
        assert_eq!(soa.ttl, 60);
        let ns = z.nodes[&z.origin].rrset(RecordType::NS).unwrap();
        assert_eq!(ns.records[0].data.to_string(), "ns1.example.test.");
    }

    #[test]
    fn cname_beside_other_data_names_its_line() {
        let err = zone(&format!("{BASE}www CNAME ns1\nwww TXT \"x\"\n")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("t.zone:6:") && msg.contains("CNAME beside other data"),
            "{msg}"
        );
    }

    #[test]
    fn out_of_zone_data_is_rejected() {
        let err = zone(&format!("{BASE}www.other.test. A 192.0.2.1\n")).unwrap_err();
        assert!(err.to_string().contains("out-of-zone"), "{err}");
    }

    #[test]
    fn missing_soa_is_rejected() {
        let err = zone("$TTL 60\n@ NS ns1\n").unwrap_err();
        assert!(err.to_string().contains("missing SOA"), "{err}");
    }

    #[test]
    fn empty_non_terminals_exist_and_wildcards_cover_missing_names() {
        let z = zone(&format!("{BASE}a.b.c A 192.0.2.1\n*.w A 192.0.2.2\n")).unwrap();
        let n = |s: &str| Name::from_ascii(s).unwrap();
        assert!(
            matches!(z.find(&n("b.c.example.test."), RecordType::A), Position::Exact(node) if node.is_empty())
        );
        assert!(matches!(
            z.find(&n("x.w.example.test."), RecordType::A),
            Position::Wildcard(_)
        ));
        assert!(matches!(
            z.find(&n("zz.example.test."), RecordType::A),
            Position::Missing
        ));
    }

    #[test]
    fn quoted_strings_keep_spaces_and_semicolons() {
        let z = zone(&format!("{BASE}t TXT \"a b; c\" \"d\"\n")).unwrap();
        let n = Name::from_ascii("t.example.test.").unwrap();
        let txt = z.nodes[&n].rrset(RecordType::TXT).unwrap();
        assert!(txt.records[0].data.to_string().contains("a b; c"));
    }
}
