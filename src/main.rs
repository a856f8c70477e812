//! The `meridian` command: `serve`, `check` and `ctl`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use meridian::config::Source;
use meridian::server::{self, Overrides};

#[derive(Parser)]
#[command(
    name = "meridian",
    version,
    about = "Authoritative DNS global server load balancer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Answer DNS for the configured zones (the demo zone when no --config is given).
    Serve {
        /// Server config file (default: the compiled-in demo, zones/meridian.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// DNS listen address, repeatable; overrides the config. Port 0 picks a free port.
        #[arg(long)]
        listen: Vec<SocketAddr>,
        /// Control endpoint address; overrides the config.
        #[arg(long = "admin", alias = "control")]
        admin: Option<SocketAddr>,
        /// Directory for the state store; overrides the config.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Validate the config, zone files and load-balancing files without binding sockets.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Talk to a running server's control endpoint.
    Ctl {
        /// Control endpoint (default: the demo's 127.0.0.1:5380).
        #[arg(long, default_value = "127.0.0.1:5380")]
        control: SocketAddr,
        #[command(subcommand)]
        action: CtlAction,
    },
}

#[derive(Subcommand)]
enum CtlAction {
    /// Show names, pools and members with health and overrides.
    Status,
    /// Take a member out of the answers: SITE/ADDRESS or POOL/SITE.
    Drain { member: String },
    /// Clear an override.
    Undrain { member: String },
    /// Answer the member whatever its probes say.
    ForceUp { member: String },
    /// Never answer the member.
    ForceDown { member: String },
    /// Reload the config files now.
    Reload,
}

fn source(config: Option<PathBuf>) -> Source {
    match config {
        Some(p) => Source::File(p),
        None => Source::demo(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meridian: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { config } => {
            let src = source(config);
            match meridian::config::load(&src) {
                Ok(cfg) => {
                    println!(
                        "ok: {} zone(s), {} load-balanced name(s), {} pool(s), {} distinct probe(s)",
                        cfg.zones.len(),
                        cfg.bindings.len(),
                        cfg.pools.len(),
                        cfg.probes.len()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Serve {
            config,
            listen,
            admin,
            state_dir,
        } => {
            init_logging();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let overrides = Overrides {
                listen,
                control: admin,
                state_dir,
            };
            rt.block_on(server::serve(source(config), overrides, shutdown_signal()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ctl { control, action } => ctl(control, action),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MERIDIAN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn ctl(control: SocketAddr, action: CtlAction) -> anyhow::Result<ExitCode> {
    let (method, path) = match &action {
        CtlAction::Status => ("GET", "/status".to_string()),
        CtlAction::Reload => ("POST", "/reload".to_string()),
        CtlAction::Drain { member } => ("POST", format!("/members/{}/drain", encode(member))),
        CtlAction::Undrain { member } => ("POST", format!("/members/{}/undrain", encode(member))),
        CtlAction::ForceUp { member } => ("POST", format!("/members/{}/force-up", encode(member))),
        CtlAction::ForceDown { member } => {
            ("POST", format!("/members/{}/force-down", encode(member)))
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (status, body) = rt.block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(10))
            .build()?;
        let url = format!("http://{control}{path}");
        let req = if method == "GET" {
            client.get(&url)
        } else {
            client.post(&url)
        };
        let resp = req.send().await.with_context(|| {
            format!("cannot reach the control endpoint at {control} (is `meridian serve` running?)")
        })?;
        let status = resp.status();
        anyhow::Ok((status, resp.text().await?))
    })?;
    print!("{body}");
    if !status.is_success() {
        bail!("control endpoint answered {status}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Percent-encodes a member spec for a URL path segment ('/' and ':' in IPv6 addresses).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
