//! Geography: `.mmdb` lookups (MaxMind's format: GeoIP2/GeoLite2 City and Country, DB-IP
//! Lite and others with the same fields), great-circle distance, and the builder of the demo
//! database from a CSV file.
//!
//! A lookup always returns the database network that decided it, hit or miss: every address in
//! that network gets the same location, which is what the ECS scope is built from.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use std::sync::{Arc, RwLock};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("{0}: cannot open GeoIP database: {1}")]
    Open(PathBuf, maxminddb::MaxMindDbError),
    #[error("{0}: GeoIP database is damaged: {1}")]
    Verify(PathBuf, maxminddb::MaxMindDbError),
    #[error("{0}: cannot read: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{file}:{line}: {message}")]
    Csv {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{0}: cannot write the database: {1}")]
    Write(PathBuf, String),
}

/// Latitude and longitude in degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Coords {
    pub lat: f64,
    pub lon: f64,
}

impl Coords {
    /// The point as a unit vector from the Earth's centre: distances between unit vectors
    /// need one `acos` instead of the four trigonometric calls of haversine, and a location
    /// is converted once per database record.
    pub fn unit(&self) -> [f64; 3] {
        let (lat, lon) = (self.lat.to_radians(), self.lon.to_radians());
        [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
    }
}

/// The great-circle distance for the cosine of the angle between two points.
pub fn cos_to_km(cos: f64) -> f64 {
    EARTH_RADIUS_KM * cos.clamp(-1.0, 1.0).acos()
}

const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Where an address is, as far as the database says.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Location {
    pub coords: Option<Coords>,
    /// `coords` as a unit vector, for distance ranking.
    #[serde(skip)]
    pub unit: Option<[f64; 3]>,
    /// Continent code (`EU`, `NA`, ...).
    pub continent: Option<String>,
    /// ISO 3166-1 country code.
    pub country: Option<String>,
    /// ISO 3166-2 subdivision code without the country (`HE` for Hesse).
    pub subdivision: Option<String>,
    pub city: Option<String>,
    /// `continent`, `continent/country`, `continent/country/subdivision`, as far as known
    /// (computed once per database record).
    #[serde(skip)]
    keys: Vec<String>,
}

impl Location {
    /// A location from its parts.
    pub fn new(
        coords: Option<Coords>,
        continent: Option<String>,
        country: Option<String>,
        subdivision: Option<String>,
        city: Option<String>,
    ) -> Location {
        let mut keys = Vec::new();
        if let Some(c) = &continent {
            keys.push(c.clone());
            if let Some(k) = &country {
                keys.push(format!("{c}/{k}"));
                if let Some(s) = &subdivision {
                    keys.push(format!("{c}/{k}/{s}"));
                }
            }
        }
        Location {
            coords,
            unit: coords.map(|c| c.unit()),
            continent,
            country,
            subdivision,
            city,
            keys,
        }
    }

    /// The `continent/country/subdivision` path used by geo maps, least specific first.
    pub fn path(&self) -> &[String] {
        &self.keys
    }
}

/// One lookup's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeoHit {
    /// `None` when the database has no record for the address.
    pub location: Option<Arc<Location>>,
    /// The database network that matched (or the empty network around a miss).
    pub network: IpNet,
}

/// Locates client addresses.
pub trait GeoLocator: Send + Sync {
    fn locate(&self, ip: IpAddr) -> GeoHit;
}

/// A locator that knows nothing: every address is unlocated, in the whole address space.
pub struct NoGeo;

impl GeoLocator for NoGeo {
    fn locate(&self, ip: IpAddr) -> GeoHit {
        GeoHit {
            location: None,
            network: whole_space(ip),
        }
    }
}

/// The network holding every address of `ip`'s family.
pub fn whole_space(ip: IpAddr) -> IpNet {
    match ip {
        IpAddr::V4(_) => IpNet::V4(Default::default()),
        IpAddr::V6(_) => IpNet::V6(Default::default()),
    }
}

/// A MaxMind-format database read into memory.
pub struct Mmdb {
    reader: maxminddb::Reader<Vec<u8>>,
    pub path: PathBuf,
    /// Decoded records by their offset in the data section: decoding allocates, and many
    /// networks share one record, so each is decoded once.
    cache: RwLock<crate::hash::FastMap<usize, Option<Arc<Location>>>>,
}

/// Records kept decoded at most; past that, lookups decode without caching.
const CACHE_LIMIT: usize = 1 << 20;

/// The subset of a City or Country record Meridian reads.
#[derive(Deserialize, Default)]
struct Record {
    #[serde(default)]
    continent: Option<Coded>,
    #[serde(default)]
    country: Option<Coded>,
    #[serde(default)]
    location: Option<RecordLocation>,
    #[serde(default)]
    subdivisions: Option<Vec<Coded>>,
    #[serde(default)]
    city: Option<Named>,
}

#[derive(Deserialize, Default)]
struct Coded {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    iso_code: Option<String>,
}

#[derive(Deserialize, Default)]
struct Named {
    #[serde(default)]
    names: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
struct RecordLocation {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

impl Mmdb {
    /// Opens and verifies a database (the whole file is checked, so a damaged replacement
    /// is rejected before it is used).
    pub fn open(path: &Path) -> Result<Mmdb, GeoError> {
        let reader = maxminddb::Reader::open_readfile(path)
            .map_err(|e| GeoError::Open(path.to_path_buf(), e))?;
        reader
            .verify()
            .map_err(|e| GeoError::Verify(path.to_path_buf(), e))?;
        Ok(Mmdb {
            reader,
            path: path.to_path_buf(),
            cache: RwLock::new(Default::default()),
        })
    }

    /// The database's own description (type and build time), for `geo lookup`.
    pub fn describe(&self) -> String {
        let m = self.reader.metadata();
        format!(
            "{} (built {}, IPv{})",
            m.database_type, m.build_epoch, m.ip_version
        )
    }
}

impl GeoLocator for Mmdb {
    fn locate(&self, ip: IpAddr) -> GeoHit {
        let Ok(result) = self.reader.lookup(ip) else {
            return NoGeo.locate(ip);
        };
        let network = result
            .network()
            .ok()
            .and_then(|n| IpNet::new(n.network(), n.prefix()).ok())
            .map(|n| n.trunc())
            .unwrap_or_else(|| whole_space(ip));
        let Some(offset) = result.offset() else {
            return GeoHit {
                location: None,
                network,
            };
        };
        if let Some(hit) = self.cache.read().ok().and_then(|c| c.get(&offset).cloned()) {
            return GeoHit {
                location: hit,
                network,
            };
        }
        let record: Option<Record> = result.decode().ok().flatten();
        let location = record.map(|r| {
            Arc::new(Location::new(
                r.location.and_then(|l| {
                    Some(Coords {
                        lat: l.latitude?,
                        lon: l.longitude?,
                    })
                }),
                r.continent.and_then(|c| c.code),
                r.country.and_then(|c| c.iso_code),
                r.subdivisions
                    .and_then(|s| s.into_iter().next())
                    .and_then(|s| s.iso_code),
                r.city
                    .and_then(|c| c.names)
                    .and_then(|n| n.get("en").cloned()),
            ))
        });
        if let Ok(mut c) = self.cache.write() {
            if c.len() < CACHE_LIMIT {
                c.insert(offset, location.clone());
            }
        }
        GeoHit { location, network }
    }
}

/// Great-circle distance in kilometres (haversine, mean Earth radius).
pub fn distance_km(a: Coords, b: Coords) -> f64 {
    let (la1, la2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = la2 - la1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// City-style record layout written by [`build`], matching what GeoIP2 City readers expect.
#[derive(Serialize)]
struct OutRecord {
    continent: OutCode,
    country: OutIso,
    location: OutLocation,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    subdivisions: Vec<OutIso>,
    #[serde(skip_serializing_if = "Option::is_none")]
    city: Option<OutNames>,
}

#[derive(Serialize)]
struct OutCode {
    code: String,
}

#[derive(Serialize)]
struct OutIso {
    iso_code: String,
}

#[derive(Serialize)]
struct OutLocation {
    latitude: f64,
    longitude: f64,
    accuracy_radius: u16,
}

#[derive(Serialize)]
struct OutNames {
    names: std::collections::BTreeMap<String, String>,
}

/// Builds a City-style `.mmdb` from a CSV file with the header
/// `network,latitude,longitude,continent,country,subdivision,city` (the last two may be empty;
/// `#` starts a comment line). The output is reproducible: the build time is fixed.
pub fn build(csv: &Path, out: &Path) -> Result<usize, GeoError> {
    let text = std::fs::read_to_string(csv).map_err(|e| GeoError::Read(csv.to_path_buf(), e))?;
    let mut writer = mmdb_writer::Writer::builder("Meridian-Demo-City")
        .description(&[(
            "en",
            "Meridian demo database: documentation and private ranges only",
        )])
        .build_epoch(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600))
        .build();
    let mut count = 0;
    let mut header_seen = false;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let err = |message: String| GeoError::Csv {
            file: csv.to_path_buf(),
            line: line_no,
            message,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if !header_seen {
            header_seen = true;
            if fields.first() == Some(&"network") {
                continue;
            }
        }
        if fields.len() != 7 {
            return Err(err(format!("expected 7 fields, found {}", fields.len())));
        }
        let network: IpNet = fields[0]
            .parse()
            .map_err(|_| err(format!("bad network {:?}", fields[0])))?;
        let coord = |s: &str, max: f64| {
            s.parse::<f64>()
                .ok()
                .filter(|v| v.abs() <= max)
                .ok_or_else(|| err(format!("bad coordinate {s:?}")))
        };
        let record = OutRecord {
            continent: OutCode {
                code: fields[3].to_string(),
            },
            country: OutIso {
                iso_code: fields[4].to_string(),
            },
            location: OutLocation {
                latitude: coord(fields[1], 90.0)?,
                longitude: coord(fields[2], 180.0)?,
                accuracy_radius: 50,
            },
            subdivisions: if fields[5].is_empty() {
                Vec::new()
            } else {
                vec![OutIso {
                    iso_code: fields[5].to_string(),
                }]
            },
            city: (!fields[6].is_empty()).then(|| OutNames {
                names: [("en".to_string(), fields[6].to_string())].into(),
            }),
        };
        writer
            .insert(network.trunc(), &record)
            .map_err(|e| err(format!("cannot insert {network}: {e}")))?;
        count += 1;
    }
    let bytes = writer
        .to_bytes()
        .map_err(|e| GeoError::Write(out.to_path_buf(), e.to_string()))?;
    // Replace by rename so a running server never reads a half-written file.
    let tmp = out.with_extension("mmdb.tmp");
    std::fs::write(&tmp, bytes).map_err(|e| GeoError::Write(out.to_path_buf(), e.to_string()))?;
    std::fs::rename(&tmp, out).map_err(|e| GeoError::Write(out.to_path_buf(), e.to_string()))?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_are_great_circle() {
        let fra = Coords {
            lat: 50.11,
            lon: 8.68,
        };
        let iad = Coords {
            lat: 38.95,
            lon: -77.45,
        };
        let d = distance_km(fra, iad);
        assert!((6500.0..6600.0).contains(&d), "{d}");
        assert_eq!(distance_km(fra, fra), 0.0);
        let (a, b) = (fra.unit(), iad.unit());
        let via_units = cos_to_km(a[0] * b[0] + a[1] * b[1] + a[2] * b[2]);
        assert!((via_units - d).abs() < 0.5, "{via_units} vs {d}");
    }

    #[test]
    fn builds_and_reads_back_with_networks() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("g.csv");
        std::fs::write(
            &csv,
            "network,latitude,longitude,continent,country,subdivision,city\n\
             10.1.0.0/16,50.11,8.68,EU,DE,HE,Frankfurt\n\
             10.1.128.0/17,48.14,11.58,EU,DE,BY,Munich\n\
             2001:db8:1::/48,1.35,103.82,AS,SG,,\n",
        )
        .unwrap();
        let out = dir.path().join("g.mmdb");
        assert_eq!(build(&csv, &out).unwrap(), 3);
        let db = Mmdb::open(&out).unwrap();
        let hit = db.locate("10.1.1.1".parse().unwrap());
        assert_eq!(hit.network, "10.1.0.0/17".parse::<IpNet>().unwrap());
        let loc = hit.location.unwrap();
        assert_eq!(loc.path(), vec!["EU", "EU/DE", "EU/DE/HE"]);
        assert_eq!(loc.city.as_deref(), Some("Frankfurt"));
        let hit = db.locate("10.1.200.1".parse().unwrap());
        assert_eq!(hit.location.unwrap().subdivision.as_deref(), Some("BY"));
        let hit = db.locate("2001:db8:1::5".parse().unwrap());
        assert_eq!(hit.network.prefix_len(), 48);
        assert_eq!(hit.location.unwrap().country.as_deref(), Some("SG"));
        // A miss still names the empty network around it.
        let miss = db.locate("10.2.0.1".parse().unwrap());
        assert!(miss.location.is_none());
        assert!(miss
            .network
            .contains(&"10.2.0.1".parse::<IpAddr>().unwrap()));
        assert!(!miss
            .network
            .contains(&"10.1.0.1".parse::<IpAddr>().unwrap()));
    }

    #[test]
    fn damaged_database_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.mmdb");
        std::fs::write(&p, b"not a database at all").unwrap();
        assert!(Mmdb::open(&p).is_err());
    }
}
