//! Drivers: ExaBGP (announce and withdraw lines on its API) and BIRD (a generated include
//! file, then `birdc configure`).

use super::*;

/// Which BGP daemon carries the routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    ExaBgp,
    Bird,
}

/// Hands route decisions to the BGP daemon.
pub enum Driver {
    ExaBgp { local_as: Option<u32> },
    Bird(BirdSettings),
}

impl Driver {
    pub fn new(kind: DriverKind, cfg: &AnycastConfig) -> Driver {
        match kind {
            DriverKind::ExaBgp => Driver::ExaBgp {
                local_as: cfg.local_as,
            },
            DriverKind::Bird => Driver::Bird(cfg.bird.clone()),
        }
    }

    /// Makes the daemon carry `routes` (one per prefix, same order). ExaBGP gets a line for
    /// each prefix in `changed`; BIRD gets the whole include file and a reconfiguration.
    pub fn apply(
        &mut self,
        prefixes: &[PrefixSpec],
        routes: &[Route],
        changed: &[usize],
    ) -> Result<(), AnycastError> {
        match self {
            Driver::ExaBgp { local_as } => {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                for &i in changed {
                    let line = exabgp_line(&prefixes[i], routes[i], *local_as);
                    writeln!(out, "{line}").map_err(AnycastError::ExaBgp)?;
                }
                out.flush().map_err(AnycastError::ExaBgp)
            }
            Driver::Bird(b) => {
                write_atomically(&b.include, bird_include(prefixes, routes).as_bytes())?;
                bird_configure(b)
            }
        }
    }
}

/// The ExaBGP API command for a prefix's route.
pub fn exabgp_line(p: &PrefixSpec, route: Route, local_as: Option<u32>) -> String {
    if route == Route::Withdrawn {
        return format!("withdraw route {} next-hop self", p.prefix);
    }
    let mut line = format!("announce route {} next-hop self", p.prefix);
    if let Some(med) = p.med {
        line.push_str(&format!(" med {med}"));
    }
    let prepends = p.prepend
        + if route == Route::Degraded {
            p.degraded_prepend
        } else {
            0
        };
    if let (Some(asn), true) = (local_as, prepends > 0) {
        let path: Vec<String> = (0..prepends).map(|_| asn.to_string()).collect();
        line.push_str(&format!(" as-path [ {} ]", path.join(" ")));
    }
    if !p.communities.is_empty() {
        line.push_str(&format!(" community [ {} ]", p.communities.join(" ")));
    }
    line
}

/// The BIRD include: four prefix sets the operator's export filter tests, e.g.
/// `if net ~ MERIDIAN_ANNOUNCE_V4 then accept;`. Each holds a dummy prefix (BIRD rejects an
/// empty set) that no real route matches: `0.0.0.0/32` and `::/128`.
pub fn bird_include(prefixes: &[PrefixSpec], routes: &[Route]) -> String {
    let set = |v6: bool, wanted: &[Route]| -> String {
        let mut items = vec![if v6 { "::/128" } else { "0.0.0.0/32" }.to_string()];
        for (p, r) in prefixes.iter().zip(routes) {
            if matches!(p.prefix, IpNet::V6(_)) == v6 && wanted.contains(r) {
                items.push(p.prefix.to_string());
            }
        }
        items.join(", ")
    };
    let announced = [Route::Announced, Route::Degraded];
    format!(
        "# Written by meridian anycast; replaced on every change. Do not edit.\n\
         define MERIDIAN_ANNOUNCE_V4 = [ {} ];\n\
         define MERIDIAN_ANNOUNCE_V6 = [ {} ];\n\
         define MERIDIAN_DEGRADED_V4 = [ {} ];\n\
         define MERIDIAN_DEGRADED_V6 = [ {} ];\n",
        set(false, &announced),
        set(true, &announced),
        set(false, &[Route::Degraded]),
        set(true, &[Route::Degraded]),
    )
}

pub(super) fn bird_configure(b: &BirdSettings) -> Result<(), AnycastError> {
    let mut cmd = std::process::Command::new(&b.birdc);
    if let Some(s) = &b.socket {
        cmd.arg("-s").arg(s);
    }
    let out = cmd
        .arg("configure")
        .output()
        .map_err(|e| AnycastError::Bird(format!("cannot run {}: {e}", b.birdc.display())))?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // BIRD answers "Reconfigured" (or "Reconfiguration in progress" while it applies it);
    // anything else (a parse error in the include, no socket) is a failure.
    if out.status.success()
        && (text.contains("Reconfigured") || text.contains("Reconfiguration in progress"))
    {
        Ok(())
    } else {
        Err(AnycastError::Bird(text.trim().replace('\n', "; ")))
    }
}

/// Writes a file so readers see the old or the new content, never a part: temp file in the
/// same directory, fsync, rename, fsync of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), AnycastError> {
    use std::io::Write;
    let err = |source| AnycastError::File {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("meridian"),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
