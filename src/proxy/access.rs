//! The access log: one line per request, in nginx's combined format or as JSON, written to the
//! process log (stderr) or to a file of its own. The file is opened for appending and written
//! one whole line per call, so lines from concurrent requests never interleave; SIGUSR1
//! reopens it, after a log rotation has moved it away, as nginx does.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::{Method, StatusCode, Version};

use crate::config::AccessLog;

/// One request as the log shows it.
pub struct Entry<'a> {
    pub client: IpAddr,
    pub method: &'a Method,
    pub target: &'a str,
    pub version: Version,
    pub status: StatusCode,
    pub referer: &'a str,
    pub agent: &'a str,
    pub took: Duration,
    pub upstream: Option<SocketAddr>,
    pub request_id: &'a str,
    /// The response's `Cache-Status` (on routes that cache).
    pub cache: Option<&'a str>,
}

impl Entry<'_> {
    /// The line in `format` (none when the log is off).
    pub fn line(&self, format: AccessLog) -> Option<String> {
        let upstream = self.upstream.map(|a| a.to_string());
        match format {
            AccessLog::Off => None,
            AccessLog::Combined => Some(format!(
                "{} - - [{}] \"{} {} {:?}\" {} - \"{}\" \"{}\" rt={:.3} upstream={} id={}{}",
                self.client,
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
                self.method,
                self.target,
                self.version,
                self.status.as_u16(),
                self.referer,
                self.agent,
                self.took.as_secs_f64(),
                upstream.as_deref().unwrap_or("-"),
                self.request_id,
                self.cache
                    .map(|c| format!(" cache=\"{c}\""))
                    .unwrap_or_default(),
            )),
            AccessLog::Json => Some(
                serde_json::json!({
                    "client": self.client.to_string(),
                    "method": self.method.as_str(),
                    "target": self.target,
                    "version": format!("{:?}", self.version),
                    "status": self.status.as_u16(),
                    "referer": self.referer,
                    "user_agent": self.agent,
                    "seconds": self.took.as_secs_f64(),
                    "upstream": upstream,
                    "request_id": self.request_id,
                    "cache": self.cache,
                })
                .to_string(),
            ),
        }
    }
}

/// Where access log lines go: the process log, or the file the config names.
#[derive(Default)]
pub struct Sink {
    file: ArcSwapOption<LogFile>,
}

struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Sink {
    /// Writes to `path` from now on (the file it wrote before is closed), or to the process
    /// log when `None`. An unchanged path keeps the open file.
    pub fn set(&self, path: Option<&Path>) -> std::io::Result<()> {
        let current = self.file.load();
        match (path, current.as_deref()) {
            (Some(p), Some(f)) if f.path == p => Ok(()),
            (Some(p), _) => {
                let file = open(p)?;
                self.file.store(Some(Arc::new(LogFile {
                    path: p.to_path_buf(),
                    file: Mutex::new(file),
                })));
                Ok(())
            }
            (None, _) => {
                self.file.store(None);
                Ok(())
            }
        }
    }

    /// Opens the file anew under its name (after a rotation moved the old one away).
    pub fn reopen(&self) -> std::io::Result<()> {
        let Some(f) = self.file.load_full() else {
            return Ok(());
        };
        let fresh = open(&f.path)?;
        *f.file.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    pub fn write(&self, line: &str) {
        match self.file.load().as_deref() {
            None => tracing::info!(target: "meridian::access", "{line}"),
            Some(f) => {
                let mut text = String::with_capacity(line.len() + 1);
                text.push_str(line);
                text.push('\n');
                let mut file = f.file.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(e) = file.write_all(text.as_bytes()) {
                    tracing::warn!(error = %e, file = %f.path.display(), "access log write failed");
                }
            }
        }
    }
}
