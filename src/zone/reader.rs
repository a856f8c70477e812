//! The master-file reader (RFC 1035 section 5): entries, parentheses, comments, quoted
//! strings, `$ORIGIN` and `$TTL`, omitted owners and TTLs, read here so every error names its
//! file and line; record data is handed to hickory-proto's parser.

use std::path::Path;
use std::str::FromStr;

use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::{fqdn_lower, null, Zone, ZoneError, MAX_ERRORS};
use crate::hash::FastMap;

impl Zone {
    /// Parses and validates master-file text; `file` is used only in messages.
    pub fn parse(text: &str, file: &Path, origin: &Name) -> Result<Zone, ZoneError> {
        // A UTF-8 byte-order mark, as some editors write one, is not part of the data.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let origin = fqdn_lower(origin);
        let mut zone = Zone {
            origin: origin.clone(),
            file: file.to_path_buf(),
            nodes: FastMap::default(),
            soa: None,
            digest: std::sync::OnceLock::new(),
            warnings: Vec::new(),
        };
        zone.ensure_node(&origin);
        let syntax = |line: usize, message: String| ZoneError::Syntax {
            file: file.to_path_buf(),
            line,
            message,
        };

        let mut current_origin = origin.clone();
        let mut default_ttl: Option<u32> = None;
        let mut last_ttl: Option<u32> = None;
        let mut last_owner: Option<Name> = None;
        // RRsets already warned of for mixed TTLs.
        let mut mixed = std::collections::HashSet::new();

        // Each entry is read on its own: one run reports every broken record (up to
        // MAX_ERRORS), not only the first.
        let mut errors: Vec<ZoneError> = Vec::new();
        for entry in Entries::new(text) {
            let read = || -> Result<(), ZoneError> {
                let entry = entry.map_err(|(line, m)| syntax(line, m))?;
                let line = entry.line;
                let mut toks = entry.tokens.iter().copied().peekable();
                let Some(first) = toks.peek().copied() else {
                    return Ok(());
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
                            return Err(syntax(
                                line,
                                format!("unknown or incomplete directive {d}"),
                            ))
                        }
                    }
                    return Ok(());
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
                    // A mnemonic, or TYPEnnn for any type (RFC 3597 section 5).
                    let generic = upper
                        .strip_prefix("TYPE")
                        .and_then(|n| n.parse::<u16>().ok());
                    rtype = Some(match generic {
                        Some(code) => RecordType::from(code),
                        None => RecordType::from_str(&upper)
                            .map_err(|_| syntax(line, format!("unknown record type {tok}")))?,
                    });
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
                let mut notes = Vec::new();
                if ttl > i32::MAX as u32 {
                    notes.push(format!(
                        "TTL {ttl} is over 2147483647 (RFC 2181 section 8): resolvers treat it as 0"
                    ));
                }
                if let Some(set) = zone.node(&owner).and_then(|n| n.rrset(rtype)) {
                    if set.ttl != ttl && mixed.insert((owner.clone(), rtype)) {
                        notes.push(format!(
                            "TTL {ttl} differs from the set's {}: every record of the set is served \
                             with {} (RFC 2181 section 5.2)",
                            set.ttl,
                            set.ttl.min(ttl)
                        ));
                    }
                }
                for note in notes {
                    let place = format!("{}:{line}: {owner} {rtype}", file.display());
                    zone.warnings.push(format!("{place}: {note}"));
                }
                if !origin.zone_of(&owner) {
                    return Err(record_err(format!(
                        "out-of-zone data: not in zone {origin}"
                    )));
                }
                zone.insert(&owner, ttl, &rdata, line).map_err(record_err)?;
                Ok(())
            };
            if let Err(e) = read() {
                errors.push(e);
                if errors.len() == MAX_ERRORS {
                    break;
                }
            }
        }
        match errors.len() {
            0 => {}
            1 => return Err(errors.remove(0)),
            _ => return Err(ZoneError::Several(errors)),
        }
        zone.validate()?;
        let soa = zone
            .apex()
            .rrset(RecordType::SOA)
            .map(|s| Record::from_rdata(zone.origin.clone(), s.ttl, s.first()));
        zone.soa = soa;
        zone.nodes.shrink_to_fit();
        Ok(zone)
    }
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
        rdata: null(bytes),
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
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
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
        RData::NAPTR(mut naptr) => {
            naptr.replacement = abs(naptr.replacement)?;
            RData::NAPTR(naptr)
        }
        RData::SVCB(mut svcb) => {
            svcb.target_name = abs(svcb.target_name)?;
            RData::SVCB(svcb)
        }
        RData::HTTPS(mut https) => {
            https.0.target_name = abs(https.0.target_name)?;
            RData::HTTPS(https)
        }
        other => other,
    })
}

/// One logical master-file entry: its tokens (slices of the text) and the line it starts on.
struct Entry<'t> {
    line: usize,
    owner_omitted: bool,
    tokens: Vec<&'t str>,
}

/// Splits master-file text into entries, one at a time (a large zone is never held as
/// tokens all at once): handles comments, quoted strings (kept with their quotes for the
/// record-data parser), escapes and parentheses spanning lines. Every token is a contiguous
/// slice of the text.
struct Entries<'t> {
    text: &'t str,
    chars: std::iter::Peekable<std::str::CharIndices<'t>>,
    line: usize,
    done: bool,
}

impl<'t> Entries<'t> {
    fn new(text: &'t str) -> Self {
        Entries {
            text,
            chars: text.char_indices().peekable(),
            line: 1,
            done: false,
        }
    }
}

impl<'t> Iterator for Entries<'t> {
    type Item = Result<Entry<'t>, (usize, String)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut current = Entry {
            line: self.line,
            owner_omitted: false,
            tokens: Vec::new(),
        };
        let mut depth = 0usize;
        let mut at_line_start = true;
        // The token being read, as a byte range of the text.
        let mut token: Option<(usize, usize)> = None;
        let text = self.text;
        let flush = |token: &mut Option<(usize, usize)>, current: &mut Entry<'t>| {
            if let Some((from, to)) = token.take() {
                current.tokens.push(&text[from..to]);
            }
        };
        let grow = |token: &mut Option<(usize, usize)>, at: usize, c: char| {
            let end = at + c.len_utf8();
            *token = Some(token.map_or((at, end), |(from, _)| (from, end)));
        };
        while let Some((at, c)) = self.chars.next() {
            if at_line_start && depth == 0 {
                current.line = self.line;
                current.owner_omitted = c == ' ' || c == '\t';
                at_line_start = false;
            }
            match c {
                '\n' => {
                    flush(&mut token, &mut current);
                    self.line += 1;
                    if depth == 0 {
                        if !current.tokens.is_empty() {
                            return Some(Ok(current));
                        }
                        at_line_start = true;
                    }
                }
                ';' => {
                    while self.chars.peek().is_some_and(|&(_, c)| c != '\n') {
                        self.chars.next();
                    }
                }
                '"' => {
                    grow(&mut token, at, c);
                    let start = self.line;
                    loop {
                        match self.chars.next() {
                            Some((at, '\\')) => {
                                grow(&mut token, at, '\\');
                                if let Some((at, e)) = self.chars.next() {
                                    grow(&mut token, at, e);
                                }
                            }
                            Some((at, '"')) => {
                                grow(&mut token, at, '"');
                                break;
                            }
                            Some((_, '\n')) | None => {
                                self.done = true;
                                return Some(Err((start, "unterminated quoted string".into())));
                            }
                            Some((at, c)) => grow(&mut token, at, c),
                        }
                    }
                }
                '\\' => {
                    grow(&mut token, at, c);
                    if let Some((at, e)) = self.chars.next() {
                        grow(&mut token, at, e);
                    }
                }
                '(' => {
                    flush(&mut token, &mut current);
                    depth += 1;
                }
                ')' => {
                    flush(&mut token, &mut current);
                    if depth == 0 {
                        self.done = true;
                        return Some(Err((self.line, "unbalanced ')'".into())));
                    }
                    depth -= 1;
                }
                ' ' | '\t' | '\r' => flush(&mut token, &mut current),
                c => grow(&mut token, at, c),
            }
        }
        self.done = true;
        if depth > 0 {
            return Some(Err((current.line, "unbalanced '(' at end of file".into())));
        }
        flush(&mut token, &mut current);
        (!current.tokens.is_empty()).then_some(Ok(current))
    }
}
