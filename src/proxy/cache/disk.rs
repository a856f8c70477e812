//! The cache's disk tier: one file per key, holding every stored variant of it, so stored
//! responses survive a restart.
//!
//! Plain files rather than sled: a file is written under a temporary name and renamed into
//! place, so a crash leaves either the old file, the new one, or a temporary file that the
//! next start deletes; each file carries a checksum of its records, verified on every read,
//! so a torn or damaged file is dropped rather than served. The index (key, size, least
//! recently used first) lives in memory and is rebuilt at start by reading the directory:
//! only each file's head (its key, tags and length, under a checksum of their own), so a
//! start reads kilobytes per entry however large the bodies; a file whose length is not the
//! one its head gives is deleted then.
//! The tier is bounded by bytes: past the bound the least recently used files go.

use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

const MAGIC: &[u8; 8] = b"MRDCACH2";

/// The most a file's head may hold (its key and tags).
const MAX_HEAD: u64 = 1 << 20;

/// One stored response as the disk keeps it: what [`super::policy::Meta`] is built from,
/// and the response.
pub(super) struct Record {
    pub(super) status: StatusCode,
    pub(super) negotiated: bool,
    pub(super) sent: SystemTime,
    pub(super) received: SystemTime,
    pub(super) until: Option<SystemTime>,
    /// The request headers the response varies on.
    pub(super) request: HeaderMap,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

/// Each key on disk with the tags its responses carry.
pub(super) type KeyTags = Vec<(String, Vec<String>)>;

/// The disk tier.
pub(super) struct Disk {
    dir: PathBuf,
    max_bytes: u64,
    tag_header: HeaderName,
    /// Keys on disk with their files' sizes, least recently used first.
    index: Mutex<(lru::LruCache<String, u64>, u64)>,
}

fn file_name(key: &str) -> String {
    let mut h = siphasher::sip::SipHasher24::new_with_keys(0x6d65_7269, 0x6469_616e);
    h.write(key.as_bytes());
    format!("{:016x}.entry", h.finish())
}

fn checksum(bytes: &[u8]) -> u64 {
    let mut h = siphasher::sip::SipHasher24::new_with_keys(0x636b_7375, 0x6d31);
    h.write(bytes);
    h.finish()
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_headers(out: &mut Vec<u8>, h: &HeaderMap) {
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    for (k, v) in h {
        put_bytes(out, k.as_str().as_bytes());
        put_bytes(out, v.as_bytes());
    }
}

/// Reads what [`encode`] wrote, failing on anything short or malformed.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u64()?).ok()?;
        self.take(n)
    }

    fn headers(&mut self) -> Option<HeaderMap> {
        let n = self.u64()?;
        let mut h = HeaderMap::new();
        for _ in 0..n {
            let k = HeaderName::from_bytes(self.bytes()?).ok()?;
            let v = HeaderValue::from_bytes(self.bytes()?).ok()?;
            h.append(k, v);
        }
        Some(h)
    }
}

/// A file's bytes for `key`, its records and their `tags`: the magic, the head's checksum
/// and length, the head (key, tags, the records' length), the records' checksum, the records.
fn encode(key: &str, tags: &[&str], records: &[Record]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(records.len() as u64).to_le_bytes());
    for r in records {
        body.extend_from_slice(&u64::from(r.status.as_u16()).to_le_bytes());
        body.extend_from_slice(&u64::from(r.negotiated).to_le_bytes());
        body.extend_from_slice(&secs(r.sent).to_le_bytes());
        body.extend_from_slice(&secs(r.received).to_le_bytes());
        body.extend_from_slice(&r.until.map_or(0, secs).to_le_bytes());
        put_headers(&mut body, &r.request);
        put_headers(&mut body, &r.headers);
        put_bytes(&mut body, &r.body);
    }
    let mut head = Vec::new();
    put_bytes(&mut head, key.as_bytes());
    head.extend_from_slice(&(tags.len() as u64).to_le_bytes());
    for t in tags {
        put_bytes(&mut head, t.as_bytes());
    }
    head.extend_from_slice(&(body.len() as u64).to_le_bytes());
    let mut out = Vec::with_capacity(head.len() + body.len() + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&checksum(&head).to_le_bytes());
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&checksum(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// What a file's head says.
struct Head {
    key: String,
    tags: Vec<String>,
    /// The whole file's length.
    len: u64,
}

/// The head at the start of `r` (the magic, its checksum and length, itself), checked.
fn head(r: &mut Reader<'_>) -> Option<Head> {
    if r.take(8)? != MAGIC {
        return None;
    }
    let sum = r.u64()?;
    let n = r.u64()?;
    let bytes = r.take(usize::try_from(n.min(MAX_HEAD)).ok()?)?;
    if n > MAX_HEAD || checksum(bytes) != sum {
        return None;
    }
    let mut h = Reader(bytes);
    let key = String::from_utf8(h.bytes()?.to_vec()).ok()?;
    let tags = (0..h.u64()?.min(MAX_HEAD))
        .map(|_| String::from_utf8(h.bytes()?.to_vec()).ok())
        .collect::<Option<Vec<String>>>()?;
    let body = h.u64()?;
    h.0.is_empty().then_some(Head {
        key,
        tags,
        len: 24u64.checked_add(n)?.checked_add(8)?.checked_add(body)?,
    })
}

/// Reads a file's head: its first bytes only.
fn read_head(path: &Path) -> Option<Head> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut start = [0u8; 24];
    f.read_exact(&mut start).ok()?;
    let n = u64::from_le_bytes(start[16..24].try_into().ok()?);
    if n > MAX_HEAD {
        return None;
    }
    let mut bytes = start.to_vec();
    bytes.resize(24 + n as usize, 0);
    f.read_exact(&mut bytes[24..]).ok()?;
    head(&mut Reader(&bytes))
}

/// The key and records of a file's bytes; `None` when a checksum or the layout is wrong.
fn decode(bytes: &[u8]) -> Option<(String, Vec<Record>)> {
    let mut r = Reader(bytes);
    let Head { key, len, .. } = head(&mut r)?;
    let sum = r.u64()?;
    if len != bytes.len() as u64 || checksum(r.0) != sum {
        return None;
    }
    let count = r.u64()?;
    let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
    let mut records = Vec::new();
    for _ in 0..count {
        let status = StatusCode::from_u16(u16::try_from(r.u64()?).ok()?).ok()?;
        let negotiated = r.u64()? == 1;
        let sent = at(r.u64()?);
        let received = at(r.u64()?);
        let until = match r.u64()? {
            0 => None,
            s => Some(at(s)),
        };
        let request = r.headers()?;
        let headers = r.headers()?;
        let body = Bytes::copy_from_slice(r.bytes()?);
        records.push(Record {
            status,
            negotiated,
            sent,
            received,
            until,
            request,
            headers,
            body,
        });
    }
    r.0.is_empty().then_some((key, records))
}

impl Disk {
    /// Opens the tier in `dir` (created if missing), bounded by `max_bytes`: temporary
    /// files from an interrupted write are deleted, every entry's head is read and checked,
    /// and the damaged ones are deleted. Also returns each key's values of `tag_header`.
    pub(super) fn open(
        dir: &Path,
        max_bytes: u64,
        tag_header: &HeaderName,
    ) -> std::io::Result<(Disk, KeyTags)> {
        let mut tags = Vec::new();
        std::fs::create_dir_all(dir)?;
        let mut found: Vec<(SystemTime, String, u64)> = Vec::new();
        for item in std::fs::read_dir(dir)? {
            let path = item?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !name.ends_with(".entry") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let meta = std::fs::metadata(&path).ok();
            match (read_head(&path), meta) {
                (Some(head), Some(meta))
                    if file_name(&head.key) == name && head.len == meta.len() =>
                {
                    tags.push((head.key.clone(), head.tags));
                    let when = meta.modified().unwrap_or(UNIX_EPOCH);
                    found.push((when, head.key, head.len));
                }
                _ => {
                    tracing::warn!(file = %path.display(), "cache entry damaged: deleted");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        found.sort();
        let mut index = lru::LruCache::unbounded();
        let mut total = 0;
        for (_, key, size) in found {
            total += size;
            index.put(key, size);
        }
        let disk = Disk {
            dir: dir.to_path_buf(),
            max_bytes,
            tag_header: tag_header.clone(),
            index: Mutex::new((index, total)),
        };
        disk.trim();
        Ok((disk, tags))
    }

    /// Whether `key` is on disk.
    pub(super) fn has(&self, key: &str) -> bool {
        self.lock().0.contains(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (lru::LruCache<String, u64>, u64)> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The records stored under `key`, read and checked; a damaged file is deleted.
    pub(super) fn read(&self, key: &str) -> Option<Vec<Record>> {
        let size = *self.lock().0.get(key)?;
        let path = self.dir.join(file_name(key));
        let decoded = std::fs::read(&path).ok().and_then(|b| decode(&b));
        match decoded {
            Some((k, records)) if k == key => Some(records),
            _ => {
                tracing::warn!(file = %path.display(), "cache entry damaged: deleted");
                self.forget(key, size);
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Writes `key`'s records: to a temporary file, then renamed over the old one.
    pub(super) fn write(&self, key: &str, records: &[Record]) {
        let tags: Vec<&str> = records
            .iter()
            .flat_map(|r| r.headers.get_all(&self.tag_header))
            .filter_map(|v| v.to_str().ok())
            .flat_map(str::split_whitespace)
            .collect();
        let bytes = encode(key, &tags, records);
        let name = file_name(key);
        let tmp = self
            .dir
            .join(format!("{name}.{:016x}.tmp", rand::random::<u64>()));
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&bytes).and_then(|_| f.sync_data()))
            .and_then(|_| std::fs::rename(&tmp, self.dir.join(&name)));
        if let Err(e) = written {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cache entry not written to disk");
            let _ = std::fs::remove_file(&tmp);
            return;
        }
        {
            let mut index = self.lock();
            let old = index
                .0
                .put(key.to_string(), bytes.len() as u64)
                .unwrap_or(0);
            index.1 = index.1 - old + bytes.len() as u64;
        }
        self.trim();
    }

    /// Deletes `key`'s file.
    pub(super) fn remove(&self, key: &str) {
        let size = self.lock().0.peek(key).copied();
        if let Some(size) = size {
            self.forget(key, size);
            let _ = std::fs::remove_file(self.dir.join(file_name(key)));
        }
    }

    /// Keys on disk, for purges by prefix.
    pub(super) fn keys(&self) -> Vec<String> {
        self.lock().0.iter().map(|(k, _)| k.clone()).collect()
    }

    /// Bytes on disk.
    pub(super) fn bytes(&self) -> u64 {
        self.lock().1
    }

    fn forget(&self, key: &str, size: u64) {
        let mut index = self.lock();
        if index.0.pop(key).is_some() {
            index.1 = index.1.saturating_sub(size);
        }
    }

    /// Deletes the least recently used files while the tier is over its bound.
    fn trim(&self) {
        loop {
            let victim = {
                let mut index = self.lock();
                if index.1 <= self.max_bytes {
                    return;
                }
                match index.0.pop_lru() {
                    Some((key, size)) => {
                        index.1 = index.1.saturating_sub(size);
                        key
                    }
                    None => return,
                }
            };
            let _ = std::fs::remove_file(self.dir.join(file_name(&victim)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: HeaderName = HeaderName::from_static("surrogate-key");

    /// A `200` stored now with `headers` and `body`.
    fn record(headers: HeaderMap, body: Bytes) -> Record {
        Record {
            status: StatusCode::OK,
            negotiated: false,
            sent: SystemTime::now(),
            received: SystemTime::now(),
            until: None,
            request: HeaderMap::new(),
            headers,
            body,
        }
    }

    #[test]
    fn a_damaged_file_is_never_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(dir.path(), 1 << 20, &TAG).unwrap().0;
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", "max-age=60".parse().unwrap());
        let record = || record(headers.clone(), Bytes::from_static(b"stored body"));
        disk.write("http://x/a", &[record()]);
        assert_eq!(disk.read("http://x/a").unwrap()[0].body, "stored body");
        // A byte flipped in the body: the checksum catches it, and the file goes.
        let path = dir.path().join(file_name("http://x/a"));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(disk.read("http://x/a").is_none());
        assert!(!path.exists());
        // A torn file and a leftover temporary one are cleared at the next start.
        disk.write("http://x/b", &[record()]);
        let b = dir.path().join(file_name("http://x/b"));
        let bytes = std::fs::read(&b).unwrap();
        std::fs::write(&b, &bytes[..bytes.len() / 2]).unwrap();
        std::fs::write(dir.path().join("x.entry.1.tmp"), b"partial").unwrap();
        disk.write("http://x/c", &[record()]);
        let reopened = Disk::open(dir.path(), 1 << 20, &TAG).unwrap().0;
        assert!(!reopened.has("http://x/b") && reopened.has("http://x/c"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_start_reads_heads_only_and_finds_keys_and_tags() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(dir.path(), 1 << 20, &TAG).unwrap().0;
        let mut headers = HeaderMap::new();
        headers.insert(TAG, "team-a team-b".parse().unwrap());
        disk.write(
            "http://x/t",
            &[record(headers, Bytes::from(vec![b'x'; 4096]))],
        );
        // A body byte flipped: the start, reading heads only, keeps the key; the first read
        // finds the damage and deletes the file.
        let path = dir.path().join(file_name("http://x/t"));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (reopened, tags) = Disk::open(dir.path(), 1 << 20, &TAG).unwrap();
        assert_eq!(
            tags,
            vec![(
                "http://x/t".to_string(),
                vec!["team-a".to_string(), "team-b".to_string()]
            )]
        );
        assert_eq!(reopened.bytes(), bytes.len() as u64);
        assert!(reopened.read("http://x/t").is_none());
        assert!(!path.exists() && !reopened.has("http://x/t"));
    }

    #[test]
    fn the_tier_stays_under_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(dir.path(), 3000, &TAG).unwrap().0;
        for i in 0..10 {
            let r = record(HeaderMap::new(), Bytes::from(vec![b'x'; 1000]));
            disk.write(&format!("http://x/{i}"), &[r]);
        }
        assert!(disk.bytes() <= 3000);
        assert!(disk.has("http://x/9") && !disk.has("http://x/0"));
    }
}
