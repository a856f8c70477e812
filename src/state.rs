//! The persisted store (sled): last-known health and admin overrides per member, keyed by
//! member identity. Nothing outside this module sees a sled type.
//!
//! Health is written on each transition without waiting for a flush (losing the newest
//! transition in a crash costs one probe interval); overrides are flushed before the
//! operator's call returns, so a drain survives `kill -9`.

use std::path::{Path, PathBuf};

use crate::health::{Admin, Health, HealthSnapshot, MemberId, MemberState, Persist};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create state directory {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("cannot open state store {0}: {1}")]
    Open(PathBuf, sled::Error),
    #[error("cannot move damaged state store {0} aside: {1}")]
    MoveAside(PathBuf, std::io::Error),
    #[error("state store {0} is in use by another process (is another meridian running with this state_dir?)")]
    Locked(PathBuf),
}

/// The sled database behind the health table.
#[derive(Clone)]
pub struct Store {
    health: sled::Tree,
    admin: sled::Tree,
    /// Per zone with secondaries: the SOA serial and data digest last served.
    serials: sled::Tree,
    /// The audit log of mutating control calls, keyed by a rising sequence number.
    audit: sled::Tree,
    /// Override expiry times (seconds since the epoch) per member.
    expiry: sled::Tree,
    /// The store's marker (see [`MARKER_FILE`]).
    meta: sled::Tree,
    db: sled::Db,
}

/// What opening found.
pub enum Opened {
    /// The store opened as it was.
    Clean(Store),
    /// The store could not be opened; it was moved to `moved_to` and a new one started.
    Recreated {
        store: Store,
        moved_to: PathBuf,
        error: String,
    },
    /// The store opened, but empty, although this node had written it before (its marker
    /// file says so): its files were removed or damaged, or its snapshot is missing.
    Emptied { store: Store, path: PathBuf },
}

/// The file beside the store that holds the store's marker: a random value also written
/// inside the store when it is created. A store that opens without the marker it should hold
/// lost its data.
const MARKER_FILE: &str = "store.marker";
const MARKER_KEY: &[u8] = b"marker";

impl Store {
    /// Opens `dir/store`, or moves a damaged one aside and starts clean (never a crash loop).
    pub fn open(dir: &Path) -> Result<Opened, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| StateError::Dir(dir.to_path_buf(), e))?;
        let path = dir.join("store");
        // A store locked by another process is not damaged: wait a little (a previous instance
        // may still be exiting), then refuse rather than move a live store aside.
        let mut attempt = Self::open_at(&path);
        for _ in 0..40 {
            match &attempt {
                Err(e) if is_lock_error(e) => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    attempt = Self::open_at(&path);
                }
                _ => break,
            }
        }
        match attempt {
            Ok(s) => {
                let found = s.meta.get(MARKER_KEY).ok().flatten();
                let expected = std::fs::read(dir.join(MARKER_FILE)).ok();
                let lost = found.is_none() && expected.is_some();
                if found.is_none() || found.as_deref() != expected.as_deref() {
                    s.mark(dir)?;
                }
                Ok(if lost {
                    Opened::Emptied { store: s, path }
                } else {
                    Opened::Clean(s)
                })
            }
            Err(e) if is_lock_error(&e) => Err(StateError::Locked(path)),
            Err(e) => {
                let stamp = crate::clock::unix_now();
                let moved_to = dir.join(format!("store.damaged-{stamp}"));
                std::fs::rename(&path, &moved_to)
                    .map_err(|e| StateError::MoveAside(path.clone(), e))?;
                let store = Self::open_at(&path).map_err(|e| StateError::Open(path.clone(), e))?;
                store.mark(dir)?;
                Ok(Opened::Recreated {
                    store,
                    moved_to,
                    error: e.to_string(),
                })
            }
        }
    }

    /// Opens `dir/store` as it is, for reading: `None` when there is none. Never moves a
    /// damaged store aside nor marks it (that is for the node that serves from it); a store
    /// held by a running node is [`StateError::Locked`].
    pub fn open_existing(dir: &Path) -> Result<Option<Store>, StateError> {
        let path = dir.join("store");
        if !path.exists() {
            return Ok(None);
        }
        match Self::open_at(&path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if is_lock_error(&e) => Err(StateError::Locked(path)),
            Err(e) => Err(StateError::Open(path, e)),
        }
    }

    fn open_at(path: &Path) -> Result<Store, sled::Error> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(8 << 20)
            .open()?;
        Ok(Store {
            health: db.open_tree("health")?,
            admin: db.open_tree("admin")?,
            serials: db.open_tree("serials")?,
            audit: db.open_tree("audit")?,
            expiry: db.open_tree("expiry")?,
            meta: db.open_tree("meta")?,
            db,
        })
    }

    /// Gives the store a new marker, inside it and in the file beside it (the store first,
    /// so a crash in between leaves a file that does not match, never a false alarm).
    fn mark(&self, dir: &Path) -> Result<(), StateError> {
        let marker = format!("{:016x}", rand::random::<u64>());
        let failed = |e: std::io::Error| StateError::Dir(dir.to_path_buf(), e);
        self.meta
            .insert(MARKER_KEY, marker.as_bytes())
            .and_then(|_| self.meta.flush())
            .map_err(|e| failed(std::io::Error::other(e)))?;
        let tmp = dir.join(format!("{MARKER_FILE}.tmp"));
        std::fs::write(&tmp, &marker).map_err(failed)?;
        std::fs::rename(&tmp, dir.join(MARKER_FILE)).map_err(failed)
    }

    /// Everything remembered, as a starting snapshot.
    pub fn load(&self) -> HealthSnapshot {
        let mut snap = HealthSnapshot::default();
        for (tree, is_admin) in [(&self.health, false), (&self.admin, true)] {
            for (k, v) in tree.iter().flatten() {
                let id = MemberId(String::from_utf8_lossy(&k).into_owned());
                let mut state = snap.get(&id);
                if is_admin {
                    match serde_json::from_slice::<Admin>(&v) {
                        Ok(a) => state.admin = a,
                        Err(_) => continue,
                    }
                } else {
                    match serde_json::from_slice::<Health>(&v) {
                        Ok(h) => state.health = h,
                        Err(_) => continue,
                    }
                }
                snap.set(id, state);
            }
        }
        snap
    }

    /// Writes everything to disk; called on clean shutdown.
    pub fn flush(&self) {
        for tree in [&self.health, &self.admin] {
            if let Err(e) = tree.flush() {
                tracing::warn!(error = %e, "cannot flush the state store");
            }
        }
    }

    /// The SOA serial and data digest last served for the zone `origin`, if any.
    pub fn served_serial(&self, origin: &str) -> Option<(u32, u64)> {
        let v = self.serials.get(origin.as_bytes()).ok()??;
        let serial = u32::from_be_bytes(v.get(..4)?.try_into().ok()?);
        let digest = u64::from_be_bytes(v.get(4..12)?.try_into().ok()?);
        Some((serial, digest))
    }

    /// Remembers what is served for `origin` now (flushed: the serial must never go back,
    /// even after a crash).
    pub fn record_served(&self, origin: &str, serial: u32, digest: u64) {
        let mut v = serial.to_be_bytes().to_vec();
        v.extend(digest.to_be_bytes());
        let result = self
            .serials
            .insert(origin.as_bytes(), v)
            .and_then(|_| self.serials.flush().map(|_| ()));
        if let Err(e) = result {
            tracing::error!(zone = origin, error = %e, "cannot persist the served serial");
        }
    }

    /// Appends an entry to the audit log and flushes it before returning.
    pub fn audit(&self, entry: &serde_json::Value) {
        let result = self
            .db
            .generate_id()
            .and_then(|id| {
                self.audit.insert(
                    id.to_be_bytes(),
                    serde_json::to_vec(entry).unwrap_or_default(),
                )
            })
            .and_then(|_| self.audit.flush().map(|_| ()));
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }

    /// The newest `limit` audit entries, newest first.
    pub fn audit_log(&self, limit: usize) -> Vec<serde_json::Value> {
        self.audit
            .iter()
            .rev()
            .flatten()
            .take(limit)
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect()
    }

    /// Sets (or with `None` clears) when a member's override expires.
    pub fn set_expiry(&self, id: &MemberId, at: Option<u64>) {
        let result = match at {
            Some(t) => self
                .expiry
                .insert(id.0.as_bytes(), &t.to_be_bytes())
                .map(|_| ()),
            None => self.expiry.remove(id.0.as_bytes()).map(|_| ()),
        };
        if let Err(e) = result.and_then(|_| self.expiry.flush().map(|_| ())) {
            tracing::error!(member = %id, error = %e, "cannot persist an override expiry");
        }
    }

    /// Every override expiry: (member, seconds since the epoch).
    pub fn expiries(&self) -> Vec<(MemberId, u64)> {
        self.expiry
            .iter()
            .flatten()
            .filter_map(|(k, v)| {
                let at = u64::from_be_bytes(v.as_ref().try_into().ok()?);
                Some((MemberId(String::from_utf8_lossy(&k).into_owned()), at))
            })
            .collect()
    }

    /// Members with an override, for reporting overrides of members that left the config.
    pub fn overrides(&self) -> Vec<(MemberId, Admin)> {
        self.load()
            .iter()
            .filter(|(_, s)| s.admin != Admin::Normal)
            .map(|(id, s): (&MemberId, &MemberState)| (id.clone(), s.admin))
            .collect()
    }
}

/// sled reports a held lock as an I/O error of kind `Other` naming the lock.
fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

impl Persist for Store {
    fn health_changed(&self, id: &MemberId, health: Health) {
        let value = serde_json::to_vec(&health).unwrap_or_default();
        if let Err(e) = self.health.insert(id.0.as_bytes(), value) {
            tracing::warn!(member = %id, error = %e, "cannot persist health");
        }
    }

    fn admin_changed(&self, id: &MemberId, admin: Admin) {
        let result = if admin == Admin::Normal {
            self.admin.remove(id.0.as_bytes()).map(|_| ())
        } else {
            let value = serde_json::to_vec(&admin).unwrap_or_default();
            self.admin.insert(id.0.as_bytes(), value).map(|_| ())
        };
        if let Err(e) = result.and_then(|_| self.admin.flush().map(|_| ())) {
            tracing::error!(member = %id, error = %e, "cannot persist override");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_and_health_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let id = MemberId::new("fra", "192.0.2.10");
        {
            let Opened::Clean(s) = Store::open(dir.path()).unwrap() else {
                panic!("fresh store")
            };
            s.admin_changed(&id, Admin::Drained);
            s.health_changed(&id, Health::Down);
            s.health.flush().unwrap();
        }
        let Opened::Clean(s) = Store::open(dir.path()).unwrap() else {
            panic!("reopen")
        };
        let st = s.load().get(&id);
        assert_eq!(st.admin, Admin::Drained);
        assert_eq!(st.health, Health::Down);
    }

    #[test]
    fn a_store_in_use_is_refused_not_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let Opened::Clean(_held) = Store::open(dir.path()).unwrap() else {
            panic!("fresh store")
        };
        // A second opener (here: a second file handle in this process) finds the lock.
        assert!(matches!(
            Store::open(dir.path()),
            Err(StateError::Locked(_))
        ));
        let moved = dir
            .path()
            .read_dir()
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().contains("damaged"));
        assert!(!moved, "a live store is never moved aside");
    }

    #[test]
    fn damaged_store_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("store"), b"not a directory").unwrap();
        match Store::open(dir.path()).unwrap() {
            Opened::Recreated { moved_to, .. } => assert!(moved_to.exists()),
            _ => panic!("expected recreation"),
        }
        // The new store is marked: opened again, it is clean.
        assert!(matches!(Store::open(dir.path()), Ok(Opened::Clean(_))));
    }

    /// Writes an override into a fresh store in `dir` and closes it.
    fn written(dir: &Path) {
        let Opened::Clean(s) = Store::open(dir).unwrap() else {
            panic!("fresh store")
        };
        s.admin_changed(&MemberId::new("fra", "192.0.2.10"), Admin::Drained);
        s.db.flush().unwrap();
    }

    #[test]
    fn a_store_whose_files_are_gone_is_reported_emptied() {
        let dir = tempfile::tempdir().unwrap();
        written(dir.path());
        std::fs::remove_dir_all(dir.path().join("store")).unwrap();
        assert!(matches!(
            Store::open(dir.path()),
            Ok(Opened::Emptied { .. })
        ));
        // Reported once: the store is marked anew.
        assert!(matches!(Store::open(dir.path()), Ok(Opened::Clean(_))));
    }

    #[test]
    fn a_store_without_its_snapshot_is_never_silently_empty() {
        let dir = tempfile::tempdir().unwrap();
        written(dir.path());
        for entry in std::fs::read_dir(dir.path().join("store")).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("snap.")
            {
                std::fs::remove_file(path).unwrap();
            }
        }
        match Store::open(dir.path()).unwrap() {
            // Recovered from the log: the override is there.
            Opened::Clean(s) => assert_eq!(s.overrides().len(), 1),
            Opened::Emptied { .. } | Opened::Recreated { .. } => {}
        }
    }
}
