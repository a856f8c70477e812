//! Wall-clock time as the node records it: seconds since the Unix epoch, the unit of status
//! documents, logs, the state store and the protocols that carry times (TSIG, cookies).
//! Nothing here depends on another module, so every module may use it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 for a time before it).
pub fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The time now, in [`unix_seconds`].
pub fn unix_now() -> u64 {
    unix_seconds(SystemTime::now())
}
