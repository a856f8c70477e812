//! The `meridian` command: `serve`, `check`, `ctl`, `explain`, `geo` and `anycast`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use meridian::config::Source;
use meridian::server::{self, Overrides};

#[derive(Parser)]
#[command(
    name = "meridian",
    version,
    about = "Authoritative DNS global server load balancer"
)]
struct Cli {
    /// Log lines as text or as JSON objects, one per line (for log shippers).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
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
    /// Validate the config, zone files and load-balancing files without binding sockets; or,
    /// given a site proxy's config, that file.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the site proxy: balance HTTP across a site's servers (the demo site, with built-in
    /// demo servers, when no --config is given).
    Proxy {
        /// Site config file (default: the compiled-in demo, ops/site/demo.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Explain how a load-balanced name answers a client: location, ranked sites, health,
    /// the answer, the ECS scope and the reason. Asks the running server unless --offline.
    Explain {
        /// The load-balanced name, e.g. geo.example.test
        name: String,
        /// A or AAAA
        #[arg(default_value = "A")]
        qtype: String,
        /// The client (or resolver) address.
        #[arg(long)]
        client: IpAddr,
        /// An ECS prefix the query carries, e.g. 10.3.0.0/24.
        #[arg(long)]
        ecs: Option<ipnet::IpNet>,
        /// Hypothetical state: MEMBER=down|up|drained|forced-up|forced-down, or
        /// MEMBER=shed:PERCENT for a weight factor load shedding would set (repeatable).
        #[arg(long)]
        assume: Vec<String>,
        /// Read the config files instead of asking the running server (no live health:
        /// members are unknown, that is usable, unless assumed otherwise).
        #[arg(long)]
        offline: bool,
        /// Server config file for --offline (default: the demo).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Control endpoint of the running server.
        #[arg(long, default_value = "127.0.0.1:5380")]
        control: SocketAddr,
        /// A file holding the endpoint's bearer token (as for `ctl`); default: the file named
        /// by $MERIDIAN_TOKEN_FILE, if set.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Build or query MaxMind-format geo databases.
    Geo {
        #[command(subcommand)]
        action: GeoAction,
    },
    /// DNSSEC keys: make them in BIND's format, print the DS records for the parent.
    Dnssec {
        #[command(subcommand)]
        action: DnssecAction,
    },
    /// Announce this node's anycast prefixes through ExaBGP or BIRD only while it answers
    /// as a client expects (see ops/anycast/). Under ExaBGP, run it as a `process`.
    Anycast {
        /// The helper's config file (prefixes, checks, timers).
        #[arg(long)]
        config: PathBuf,
        /// The BGP daemon that carries the routes.
        #[arg(long, value_enum, default_value = "exabgp")]
        driver: DriverArg,
        /// Withdraw every prefix once and exit (for the service's ExecStopPost).
        #[arg(long, conflicts_with_all = ["drain", "undrain", "status"])]
        withdraw_all: bool,
        /// Withdraw every prefix until --undrain, across restarts (writes the drain file).
        #[arg(long, conflicts_with_all = ["undrain", "status"])]
        drain: bool,
        /// Let the checks decide again.
        #[arg(long, conflicts_with = "status")]
        undrain: bool,
        /// Print the running helper's routes and last check results.
        #[arg(long)]
        status: bool,
    },
    /// Talk to a running server's control endpoint.
    Ctl {
        /// Control endpoint (default: the demo's 127.0.0.1:5380).
        #[arg(long, default_value = "127.0.0.1:5380")]
        control: SocketAddr,
        /// A file holding the endpoint's bearer token (server.control_token_file); default:
        /// the file named by $MERIDIAN_TOKEN_FILE, if set.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Print the endpoint's JSON documents instead of tables and summaries.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        action: CtlAction,
    },
}

#[derive(Subcommand)]
enum DnssecAction {
    /// Make a key pair for ZONE in BIND's format (K<zone>.+<alg>+<tag>.key and .private),
    /// created, published and active now; prints the files' stem.
    Keygen {
        zone: String,
        /// ecdsap256sha256 (13) or ed25519 (15).
        #[arg(long, default_value = "ecdsap256sha256")]
        algorithm: String,
        /// csk signs everything; ksk signs the DNSKEY set, zsk the rest.
        #[arg(long, value_enum, default_value = "csk")]
        role: RoleArg,
        /// Where the files go.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// When the key stops signing: YYYYMMDDHHMMSS (UTC), or +N with s, m, h, d or w
        /// from now.
        #[arg(long)]
        inactive: Option<String>,
        /// When the key leaves the zone, in the same forms.
        #[arg(long)]
        delete: Option<String>,
    },
    /// Print the DS records (SHA-256) of ZONE's key-signing keys found in DIR, for the parent.
    Ds {
        zone: String,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum RoleArg {
    Csk,
    Ksk,
    Zsk,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DriverArg {
    Exabgp,
    Bird,
}

#[derive(Subcommand)]
enum GeoAction {
    /// Build a City-style .mmdb from a CSV file
    /// (network,latitude,longitude,continent,country,subdivision,city).
    Build {
        csv: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Print what a database says about an address.
    Lookup {
        ip: IpAddr,
        /// The database (default: the demo's geo/demo-city.mmdb).
        #[arg(long)]
        db: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CtlAction {
    /// Show zones, names, pools and members with health, overrides and recent changes.
    Status,
    /// Take a member out of the answers: SITE/ADDRESS or POOL/SITE.
    Drain {
        member: String,
        #[command(flatten)]
        options: OverrideOptions,
    },
    /// Clear an override.
    Undrain {
        member: String,
        /// Show what would change without doing it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Answer the member whatever its probes say.
    ForceUp {
        member: String,
        #[command(flatten)]
        options: OverrideOptions,
    },
    /// Never answer the member.
    ForceDown {
        member: String,
        #[command(flatten)]
        options: OverrideOptions,
    },
    /// Reload the config files now.
    Reload,
    /// The audit log of control calls, newest first.
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// The Prometheus metrics as the endpoint serves them.
    Metrics,
}

#[derive(clap::Args)]
struct OverrideOptions {
    /// Apply it even when the pool would fall below its drain safety minimum.
    #[arg(long)]
    force: bool,
    /// Show which pools and answers would change, without doing it.
    #[arg(long)]
    dry_run: bool,
    /// Clear the override after this long (e.g. 30m, 2h).
    #[arg(long)]
    expires: Option<String>,
}

impl OverrideOptions {
    fn query(&self) -> String {
        let mut q = Vec::new();
        if self.force {
            q.push("force=true".to_string());
        }
        if self.dry_run {
            q.push("dry_run=true".to_string());
        }
        if let Some(e) = &self.expires {
            q.push(format!("expires={}", encode(e)));
        }
        if q.is_empty() {
            String::new()
        } else {
            format!("?{}", q.join("&"))
        }
    }
}

fn source(config: Option<PathBuf>) -> Source {
    match config {
        Some(p) => Source::File(p),
        None => Source::demo(),
    }
}

/// Exit status when a config is rejected: by `check`, by `serve` at start, and by
/// `ctl reload`. Any other failure exits with 2.
const EXIT_CONFIG: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meridian: {e:#}");
            let config = matches!(
                e.downcast_ref::<server::ServeError>(),
                Some(server::ServeError::Config(_) | server::ServeError::ControlUnprotected(_))
            ) || e.downcast_ref::<meridian::config::ConfigError>().is_some();
            ExitCode::from(if config { EXIT_CONFIG } else { 2 })
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let log_format = cli.log_format;
    match cli.command {
        Command::Check { config: Some(path) }
            if std::fs::read_to_string(&path)
                .is_ok_and(|t| meridian::config::looks_like_site(&t)) =>
        {
            match meridian::config::load_site(&meridian::config::SiteSource::File(path)) {
                Ok(site) => {
                    println!(
                        "ok: site with {} listener(s), {} route(s), {} pool(s), {} server(s), {} distinct probe(s)",
                        site.listeners.len(),
                        site.routes.len(),
                        site.pools.len(),
                        site.pools.iter().map(|p| p.members.len()).sum::<usize>(),
                        site.probes.len()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Ok(check_failed(&e)),
            }
        }
        Command::Proxy { config } => {
            init_logging(log_format);
            let source = match config {
                Some(path) => meridian::config::SiteSource::File(path),
                None => meridian::config::SiteSource::demo(),
            };
            // The worker count shapes the runtime, so it is read before the proxy starts
            // (which reads the file again, from then on watching it).
            let workers = meridian::config::load_site(&source)?.workers;
            // One worker runs everything on the one thread, as an nginx worker does: no
            // hand-offs between threads on the request path.
            let mut builder = if workers == 1 {
                tokio::runtime::Builder::new_current_thread()
            } else {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(workers);
                b
            };
            let rt = builder
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(async { meridian::proxy::serve(source, shutdown_signal()).await })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => {
            let src = source(config);
            match server::check(&src) {
                Ok(cfg) => {
                    for (i, zone) in cfg.zones.iter().enumerate() {
                        println!(
                            "zone {}: serial {}, {} records, {} load-balanced name(s) ({})",
                            zone.origin,
                            zone.serial(),
                            zone.record_count(),
                            cfg.bindings.iter().filter(|b| b.zone == i).count(),
                            zone.file.display()
                        );
                    }
                    for warning in &cfg.warnings {
                        eprintln!("warning: {warning}");
                    }
                    println!(
                        "ok: {} zone(s), {} load-balanced name(s), {} pool(s), {} distinct probe(s), {} warning(s)",
                        cfg.zones.len(),
                        cfg.bindings.len(),
                        cfg.pools.len(),
                        cfg.probes.len(),
                        cfg.warnings.len()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Ok(check_failed(&e)),
            }
        }
        Command::Serve {
            config,
            listen,
            admin,
            state_dir,
        } => {
            init_logging(log_format);
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
            rt.block_on(async {
                server::serve(source(config), overrides, shutdown_signal()).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ctl {
            control,
            token_file,
            json,
            action,
        } => ctl(control, token(token_file)?, action, json),
        Command::Anycast {
            config,
            driver,
            withdraw_all,
            drain,
            undrain,
            status,
        } => {
            use meridian::anycast::{self, AnycastConfig, DriverKind};
            let cfg = AnycastConfig::load(&config)?;
            let kind = match driver {
                DriverArg::Exabgp => DriverKind::ExaBgp,
                DriverArg::Bird => DriverKind::Bird,
            };
            if drain {
                anycast::drain(&cfg)?;
                println!(
                    "drained: every prefix is withdrawn within one check interval, until --undrain"
                );
            } else if undrain {
                anycast::undrain(&cfg)?;
                println!(
                    "undrained: prefixes are announced again after {} good checks",
                    cfg.rise
                );
            } else if status {
                let text = std::fs::read_to_string(&cfg.status_file).with_context(|| {
                    format!(
                        "no status at {} (is the helper running?)",
                        cfg.status_file.display()
                    )
                })?;
                println!("{}", text.trim_end());
            } else if withdraw_all {
                init_logging(log_format);
                anycast::withdraw_all(&cfg, kind)?;
            } else {
                init_logging(log_format);
                anycast::run(cfg, kind)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Geo { action } => geo(action),
        Command::Dnssec { action } => dnssec(action),
        Command::Explain {
            name,
            qtype,
            client,
            ecs,
            assume,
            offline,
            config,
            control,
            token_file,
        } => {
            let req = meridian::explain::Request {
                name,
                qtype: Some(qtype),
                client,
                ecs,
                assume,
            };
            let lines: Vec<String> = if offline {
                let cfg = meridian::config::load(&source(config))?;
                let loaded = meridian::dns::Loaded::new(cfg, 0);
                let health = meridian::health::HealthSnapshot::default();
                meridian::explain::explain(&loaded, &health, &req)?.lines
            } else {
                let body = serde_json::to_string(&req)?;
                let token = token(token_file)?;
                let (status, text) =
                    http(control, token.as_deref(), "POST", "/explain", Some(body))?;
                let v: serde_json::Value = serde_json::from_str(&text).with_context(|| {
                    format!("unexpected reply from the control endpoint: {text}")
                })?;
                if !status.is_success() {
                    bail!("{}", v["error"].as_str().unwrap_or(&text));
                }
                v["lines"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|l| l.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            for line in lines {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Installs the SIGTERM and SIGINT handlers at once, inside the runtime and before the
/// server binds and says it is listening (a signal that came between the two would otherwise
/// find the default action and kill the process), and returns what completes on either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MERIDIAN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // One JSON object per line: time, level, target, and the event's fields flattened.
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

fn ctl(
    control: SocketAddr,
    token: Option<String>,
    action: CtlAction,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let member = |m: &str, action: &str, query: String| {
        ("POST", format!("/members/{}/{action}{query}", encode(m)))
    };
    let (method, path) = match &action {
        CtlAction::Status => ("GET", "/status".to_string()),
        CtlAction::Reload => ("POST", "/reload".to_string()),
        CtlAction::Audit { limit } => ("GET", format!("/audit?limit={limit}")),
        CtlAction::Metrics => ("GET", "/metrics".to_string()),
        CtlAction::Drain { member: m, options } => member(m, "drain", options.query()),
        CtlAction::Undrain { member: m, dry_run } => member(
            m,
            "undrain",
            if *dry_run {
                "?dry_run=true".into()
            } else {
                String::new()
            },
        ),
        CtlAction::ForceUp { member: m, options } => member(m, "force-up", options.query()),
        CtlAction::ForceDown { member: m, options } => member(m, "force-down", options.query()),
    };
    let (status, body) = http(control, token.as_deref(), method, &path, None)?;
    let now = std::time::SystemTime::now();
    let doc = || -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&body)
            .with_context(|| format!("unexpected reply from the control endpoint: {body}"))
    };
    let member_call = match &action {
        CtlAction::Drain { member, .. } => Some(("drain", member)),
        CtlAction::Undrain { member, .. } => Some(("undrain", member)),
        CtlAction::ForceUp { member, .. } => Some(("force-up", member)),
        CtlAction::ForceDown { member, .. } => Some(("force-down", member)),
        _ => None,
    };
    match (&action, member_call) {
        (_, _) if json => print!("{body}"),
        (CtlAction::Status, _) if status.is_success() => {
            let doc = doc()?;
            match doc["kind"].as_str() {
                Some("proxy") => print!("{}", meridian::render::proxy_status(&doc)),
                _ => print!("{}", meridian::render::status(&doc, now)),
            }
        }
        (CtlAction::Audit { .. }, _) if status.is_success() => {
            print!("{}", meridian::render::audit(&doc()?, now))
        }
        (CtlAction::Reload, _) => println!("{}", meridian::render::reload(&doc()?)),
        (_, Some((name, target))) => {
            println!("{}", meridian::render::action(name, target, &doc()?, now));
            if !status.is_success() {
                return Ok(ExitCode::from(2));
            }
        }
        _ => print!("{body}"),
    }
    if matches!(action, CtlAction::Reload) && status == reqwest::StatusCode::UNPROCESSABLE_ENTITY {
        eprintln!("meridian: the config was rejected; the running one keeps serving");
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    if !status.is_success() {
        bail!("control endpoint answered {status}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints every error of a config that `check` rejected; the exit code says so.
fn check_failed(e: &meridian::config::ConfigError) -> ExitCode {
    let all = e.messages();
    for one in &all {
        eprintln!("{one}");
    }
    eprintln!("check failed: {} error(s)", all.len());
    ExitCode::from(EXIT_CONFIG)
}

/// The control endpoint's bearer token: from `file`, else from $MERIDIAN_TOKEN_FILE.
fn token(file: Option<PathBuf>) -> anyhow::Result<Option<String>> {
    let Some(f) = file.or_else(|| std::env::var_os("MERIDIAN_TOKEN_FILE").map(PathBuf::from))
    else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&f)
        .with_context(|| format!("cannot read the token file {}", f.display()))?;
    Ok(Some(text.trim().to_string()))
}

/// One request to the control endpoint; returns the status and body.
fn http(
    control: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<String>,
) -> anyhow::Result<(reqwest::StatusCode, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(std::time::Duration::from_secs(5))
            // A reload of a large config validates every file before it answers.
            .timeout(std::time::Duration::from_secs(if path == "/reload" {
                600
            } else {
                30
            }))
            .build()?;
        let url = format!("http://{control}{path}");
        let mut req = if method == "GET" {
            client.get(&url)
        } else {
            client.post(&url)
        };
        if method != "GET" {
            // The control endpoint takes state-changing calls only in a form no web page
            // can send cross-site.
            req = req.header("content-type", "application/json");
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.with_context(|| {
            format!("cannot reach the control endpoint at {control} (is `meridian serve` running?)")
        })?;
        let status = resp.status();
        anyhow::Ok((status, resp.text().await?))
    })
}

fn dnssec(action: DnssecAction) -> anyhow::Result<ExitCode> {
    use meridian::dnssec::{Algorithm, KeyRole, ZoneKey};
    match action {
        DnssecAction::Keygen {
            zone,
            algorithm,
            role,
            dir,
            inactive,
            delete,
        } => {
            let algorithm = Algorithm::from_name(&algorithm).with_context(|| {
                format!("algorithm {algorithm:?} is not ecdsap256sha256 (13) or ed25519 (15)")
            })?;
            let role = match role {
                RoleArg::Csk => KeyRole::Csk,
                RoleArg::Ksk => KeyRole::Ksk,
                RoleArg::Zsk => KeyRole::Zsk,
            };
            let now = meridian::clock::unix_now();
            let mut key = ZoneKey::generate(&zone, algorithm, role, now)?;
            key.times.inactive = inactive.map(|t| key_time(&t, now)).transpose()?;
            key.times.delete = delete.map(|t| key_time(&t, now)).transpose()?;
            key.write(&dir)?;
            println!("{}", key.file_stem());
        }
        DnssecAction::Ds { zone, dir } => {
            let zone = zone.trim_end_matches('.').to_ascii_lowercase();
            let prefix = format!("K{zone}.+");
            let mut found = 0;
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
                .with_context(|| format!("cannot read {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.to_ascii_lowercase()
                            .starts_with(&prefix.to_ascii_lowercase())
                            && n.ends_with(".key")
                    })
                })
                .collect();
            entries.sort();
            for path in entries {
                let key = ZoneKey::read(&path)?;
                if key.is_sep() {
                    println!("{}", key.ds_record());
                    found += 1;
                }
            }
            if found == 0 {
                anyhow::bail!(
                    "no key-signing key (DNSKEY flags 257) for {zone} in {}",
                    dir.display()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A key event's time: `YYYYMMDDHHMMSS` (UTC) or `+N` with s, m, h, d or w after `now`.
fn key_time(text: &str, now: u64) -> anyhow::Result<u64> {
    if let Some(rel) = text.strip_prefix('+') {
        let split = rel.find(|c: char| !c.is_ascii_digit()).unwrap_or(rel.len());
        let (n, unit) = rel.split_at(split);
        let n: u64 = n.parse().with_context(|| format!("bad time {text:?}"))?;
        let unit = match unit {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            _ => anyhow::bail!("bad time unit in {text:?} (s, m, h, d or w)"),
        };
        return Ok(now + n * unit);
    }
    meridian::clock::parse_stamp(text)
        .with_context(|| format!("bad time {text:?} (YYYYMMDDHHMMSS or +N[smhdw])"))
}

fn geo(action: GeoAction) -> anyhow::Result<ExitCode> {
    use meridian::geo::{GeoLocator, Mmdb};
    match action {
        GeoAction::Build { csv, output } => {
            let n = meridian::geo::build(&csv, &output)?;
            println!("wrote {} ({n} networks)", output.display());
        }
        GeoAction::Lookup { ip, db } => {
            let db = db.unwrap_or_else(meridian::config::demo_geo_database);
            let reader = Mmdb::open(&db)?;
            let hit = reader.locate(ip);
            println!("database:    {} {}", db.display(), reader.describe());
            println!("network:     {}", hit.network);
            match hit.location {
                None => println!("location:    none (no record for this address)"),
                Some(loc) => {
                    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
                    println!("continent:   {}", show(&loc.continent));
                    println!("country:     {}", show(&loc.country));
                    println!("subdivision: {}", show(&loc.subdivision));
                    println!("city:        {}", show(&loc.city));
                    match loc.coords {
                        Some(c) => println!("coordinates: {:.4}, {:.4}", c.lat, c.lon),
                        None => println!("coordinates: -"),
                    }
                }
            }
        }
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
