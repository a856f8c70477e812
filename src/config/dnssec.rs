//! A zone's DNSSEC settings as the server file gives them (its keys checked, how it signs,
//! its parent's servers), and its signing set up once every zone is read, with the DS set
//! its parent holds for it.

use super::gslb::Builder;
use super::*;

/// A zone with keys, waiting for its signing: its index, how it signs, and where the server
/// file declares it (span, object, line).
pub(super) type Pending = (
    usize,
    ZoneSigningSettings,
    (std::ops::Range<usize>, Object, usize),
);

/// A zone's DNSSEC keys, checked ([`crate::dnssec::zone_keys`]), how it signs and its
/// parent's servers, with the warnings to print.
pub(super) fn zone_dnssec(
    z: &file::ZoneEntry,
    paths: &[PathBuf],
) -> Result<
    (
        Vec<crate::dnssec::ZoneKey>,
        ZoneSigningSettings,
        Vec<String>,
    ),
    String,
> {
    use crate::dnssec::{DenialStyle, SigningPolicy};
    let now = crate::clock::unix_now();
    let checked =
        crate::dnssec::zone_keys(&z.origin, paths, now).map_err(|m| format!("dnssec_keys: {m}"))?;
    let defaults = SigningPolicy::default();
    let seconds = |key: &str, value: &Option<String>, default: u32| match value {
        None => Ok(default),
        Some(text) => parse_duration(text)
            .map_err(|m| format!("{key}: {m}"))
            .and_then(|d| u32::try_from(d.as_secs()).map_err(|_| format!("{key}: too long"))),
    };
    let policy = SigningPolicy {
        validity: seconds("dnssec_validity", &z.dnssec_validity, defaults.validity)?,
        refresh: seconds("dnssec_refresh", &z.dnssec_refresh, defaults.refresh)?,
        jitter: seconds("dnssec_jitter", &z.dnssec_jitter, defaults.jitter)?,
        cds: z.dnssec_cds.unwrap_or(defaults.cds),
        denial: match z.dnssec_denial.as_deref() {
            None | Some("compact") => DenialStyle::Compact,
            Some("white-lies") => DenialStyle::WhiteLies,
            Some(other) => {
                return Err(format!(
                    "dnssec_denial: {other:?} is neither \"compact\" (RFC 9824) nor \"white-lies\" \
                     (RFC 4470)"
                ))
            }
        },
    };
    if policy.refresh < 3600 {
        return Err("dnssec_refresh: at least an hour".into());
    }
    if policy.refresh >= policy.validity {
        return Err(format!(
            "dnssec_refresh ({}s) must be shorter than dnssec_validity ({}s): signatures would be \
             made again on every answer",
            policy.refresh, policy.validity
        ));
    }
    let parents = z
        .dnssec_parent
        .iter()
        .flatten()
        .map(|text| {
            text.parse::<std::net::SocketAddr>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
                .map_err(|_| format!("dnssec_parent: {text:?} is not ADDR or ADDR:PORT"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((checked.keys, (policy, parents), checked.warnings))
}

/// How a zone signs, and the servers of its parent zone.
pub(super) type ZoneSigningSettings = (crate::dnssec::SigningPolicy, Vec<std::net::SocketAddr>);

/// Sets up the signing of each zone in `signed` (read from `file`): the parent's DS set (from
/// the parent zone when this node serves it, else from the zone's `dnssec_parent` servers),
/// the zone's signing, and its key sets published at its apex. Returns the errors, as
/// (span, object, message) for the caller to place.
pub(super) fn set_up_signing(
    builder: &mut Builder,
    signed: Vec<Pending>,
    file: &Path,
) -> Vec<(std::ops::Range<usize>, Object, String)> {
    let mut errors = Vec::new();
    let now = crate::clock::unix_now();
    for (i, (policy, parents), (span, object, at)) in signed {
        let origin = builder.zones[i].origin.clone();
        let local = builder
            .zones
            .iter()
            .filter(|z| z.origin != origin && z.origin.zone_of(&origin))
            .max_by_key(|z| z.origin.num_labels())
            .map(|parent| {
                let ds = parent.node(&origin).and_then(|n| n.rrset(RecordType::DS));
                ds.map(|set| set.wire_rdata().map(<[u8]>::to_vec).collect())
                    .unwrap_or_default()
            });
        // Not served here: asked of the parent's servers, when the zone names them.
        let parent_ds: Option<Vec<Vec<u8>>> = match local {
            Some(ds) => Some(ds),
            None if parents.is_empty() => None,
            None => match crate::dnssec::parent_ds(&origin, &parents) {
                Ok(ds) => Some(ds),
                Err(e) => {
                    builder.warnings.push(format!(
                        "{}:{at}: {object}: dnssec_parent: the parent's DS set could not be \
                         read ({e}): a retiring key-signing key is not held for it",
                        file.display()
                    ));
                    None
                }
            },
        };
        let keys = builder.zone_keys[i].0.clone();
        let limits = crate::dnssec::CacheLimits::default();
        match crate::dnssec::ZoneSigning::new(&keys, policy, limits, now, parent_ds.as_deref()) {
            Ok(signing) => {
                for key in keys.iter().filter(|k| signing.is_held(k.key_tag())) {
                    builder.warnings.push(format!(
                        "{}:{at}: {object}: key {} is past its Inactive time but keeps signing \
                         the key set: the parent's DS points at no other active key-signing \
                         key yet",
                        file.display(),
                        key.file_stem()
                    ));
                }
                let (cds, cdnskey) = signing.parent_signals();
                builder.zones[i].publish_keys(signing.published(), cds, cdnskey);
                builder.zone_keys[i].1 = Some(Arc::new(signing));
            }
            Err(e) => errors.push((span, object, format!("dnssec_keys: {e}"))),
        }
    }
    errors
}
