//! `duokey-server`: the AS, GMS and CS of Duokey (SPEC §8).

use clap::{Parser, Subcommand, ValueEnum};
use duokey_crypto::UserId;
use duokey_pki::Ca;
use duokey_server::config::ServerConfig;
use duokey_server::{Error, Node, dev};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Duokey servers: the Account Server (enrolment), the Group Management
/// Server (membership and RN2) and the Communication Server (ciphertext relay).
#[derive(Parser, Debug)]
#[command(name = "duokey-server", version, about, long_about = None)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One process with AS+GMS+CS on SQLite in DIR, created with a CA and
    /// server certificates if missing; writes DIR/client.toml for terminals.
    Dev {
        /// Data directory.
        #[arg(long, default_value = "duokey-dev")]
        dir: PathBuf,
        /// CS listen address.
        #[arg(long, default_value = "127.0.0.1:7444")]
        cs_addr: String,
        /// GMS (and AS) listen address.
        #[arg(long, default_value = "127.0.0.1:7443")]
        gms_addr: String,
    },
    /// Print a one-time enrolment token for USER (valid 24 h unless --ttl; the token is the
    /// last word printed).
    Enroll {
        /// Data directory of `dev`.
        #[arg(long, conflicts_with = "config")]
        dir: Option<PathBuf>,
        /// Server configuration file (uses its AS database).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The user id to enrol (SPEC §2: a-z 0-9 . _ @ -).
        user: String,
        /// The user already holds a valid certificate and gets a new one (a
        /// lost or replaced device): the old certificate is revoked now, and
        /// the user's contacts are asked to confirm the new key.
        #[arg(long)]
        replace: bool,
        /// How long the token stays usable, e.g. 2h or 7d (default 24h).
        #[arg(long, value_parser = duokey_pki::clock::parse_duration, default_value = "24h")]
        ttl: u64,
        /// A password account: the user chooses a password with this token
        /// (`duokey init --password`; OPAQUE, the server never sees it) and
        /// logs in with it for 30-day certificates.
        #[arg(long)]
        password_setup: bool,
    },
    /// Write the client.toml terminals need to reach the servers of a
    /// configuration (`duokey init --config`), under the name they reach
    /// it by. For a cluster, give every node's configuration: terminals
    /// get each role's URLs as a list and fail over between them.
    ClientConfig {
        /// Server configuration file; repeat it for each node of a cluster.
        #[arg(long, required = true)]
        config: Vec<PathBuf>,
        /// The host name or address terminals use (one the server
        /// certificate names: `ca issue-server --name`); once for all
        /// nodes, or once per `--config`, in the same order.
        #[arg(long, required = true)]
        host: Vec<String>,
        /// Where to write it.
        #[arg(long, default_value = "client.toml")]
        out: PathBuf,
    },
    /// Enrolment tokens not used yet: list them, or cancel a user's.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Print a commented example configuration (`--example`), or check a
    /// configuration file without starting anything (`--check FILE`).
    /// Every setting is described in docs/CONFIG.md.
    Config {
        /// Print the example (`duokey-server config --example > duokey.toml`).
        #[arg(long, required_unless_present = "check", conflicts_with = "check")]
        example: bool,
        /// Check this file: syntax, settings, and that the files it names exist.
        #[arg(long)]
        check: Option<PathBuf>,
    },
    /// Run the roles of a configuration file (production).
    Run {
        /// Server configuration file (`duokey-server config --example`).
        #[arg(long)]
        config: PathBuf,
    },
    /// CA administration.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Revoke one certificate by its serial (with --list), or every
    /// unexpired certificate the AS issued to a user (with --user and
    /// --dir or --config); servers refuse them within 10 s.
    Revoke {
        /// Revocation list file (the `tls.revocation_list` of the configuration).
        #[arg(long, conflicts_with = "user")]
        list: Option<PathBuf>,
        /// Certificate serial in hex.
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        serial: Option<String>,
        /// Revoke all of this user's certificates (a lost laptop, a leaver).
        #[arg(long)]
        user: Option<String>,
        /// Data directory of `duokey-server dev` (with --user).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Server configuration file (with --user).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum TokensCommand {
    /// Tokens neither used nor expired: user, issued, expires (the tokens
    /// themselves are stored hashed and cannot be shown again).
    List {
        /// Data directory of `dev`.
        #[arg(long, conflicts_with = "config")]
        dir: Option<PathBuf>,
        /// Server configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Make every unused token of USER unusable now.
    Cancel {
        /// Data directory of `dev`.
        #[arg(long, conflicts_with = "config")]
        dir: Option<PathBuf>,
        /// Server configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The user whose tokens end.
        user: String,
    },
}

#[derive(Subcommand, Debug)]
enum CaCommand {
    /// Create a CA (key file mode 0600) in DIR.
    Init {
        /// Where to write ca.pem and ca.key.
        #[arg(long)]
        dir: PathBuf,
        /// Organisation name in the CA certificate.
        #[arg(long, default_value = "Duokey")]
        org: String,
    },
    /// Issue a server certificate with DNS and IP SANs.
    IssueServer {
        /// Directory of the CA.
        #[arg(long)]
        ca_dir: PathBuf,
        /// Host names or IP addresses (repeat).
        #[arg(long = "name", required = true)]
        names: Vec<String>,
        /// Roles this server runs (as, gms, cs).
        #[arg(long, value_delimiter = ',', default_value = "as,gms,cs", value_parser = duokey_server::config::server_role)]
        roles: Vec<duokey_pki::Role>,
        /// Where to write NAME.pem and NAME.key.
        #[arg(long)]
        out: PathBuf,
        /// File stem.
        #[arg(long, default_value = "server")]
        stem: String,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // PostgreSQL's notices ("relation … already exists, skipping" at
        // every start) are not news for an operator.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx::postgres::notice=warn"));
    // Colours only for a person at a terminal who did not ask for none
    // (NO_COLOR), never in files or journals.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Prometheus on `addr`; latencies as histograms (seconds), batch sizes
/// as histograms of counts. The series are listed in docs/CONFIG.md.
fn install_metrics(addr: std::net::SocketAddr) -> Result<(), Error> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    const SECONDS: [f64; 14] = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    const COUNTS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
    let wrong = |e: metrics_exporter_prometheus::BuildError| Error::Config(format!("metrics: {e}"));
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(&SECONDS)
        .map_err(wrong)?
        .set_buckets_for_metric(Matcher::Full("duokey_cs_post_batch".into()), &COUNTS)
        .map_err(wrong)?
        .install()
        .map_err(wrong)
}

async fn serve(cfg: &ServerConfig, dev_dir: Option<&Path>) -> Result<(), Error> {
    if let Some(addr) = &cfg.metrics_addr {
        let addr: std::net::SocketAddr = addr
            .parse()
            .map_err(|_| Error::Config(format!("invalid metrics_addr {addr}")))?;
        install_metrics(addr)?;
    }
    let node = Node::start(cfg).await?;
    // Standard output may be closed by whoever started us (a script that read
    // the first line): printing must never stop the server.
    let out = |line: String| {
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "{line}");
    };
    let show = |a: Option<std::net::SocketAddr>| a.map_or("-".to_owned(), |a| a.to_string());
    // client.toml exists before the first line says the server is up.
    let client = match (dev_dir, node.gms_addr, node.cs_addr) {
        (Some(dir), Some(gms), Some(cs)) => Some(dev::write_client_file(dir, &[gms], &[cs])?),
        _ => None,
    };
    // Scripts and tests read the bound addresses from this first line.
    out(format!(
        "Duokey server: GMS+AS on {}, CS on {}, data in {}",
        show(node.gms_addr),
        show(node.cs_addr),
        cfg.data_dir.display()
    ));
    if let (Some(dir), Some(client)) = (dev_dir, client) {
        let d = dir.display();
        out(format!("Terminals use {}", client.display()));
        out(String::new());
        out("Next steps:".to_owned());
        out(format!(
            "  duokey-server enroll --dir {d} alice          # prints a one-time token"
        ));
        out(format!(
            "  duokey --home alice init --user alice --token TOKEN --config {}",
            client.display()
        ));
        out("  duokey --home alice group create proj".to_owned());
        out(String::new());
        out("Stop with Ctrl-C.".to_owned());
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    let started = std::time::Instant::now();
    node.shutdown().await;
    tracing::info!(took_ms = started.elapsed().as_millis(), "stopped");
    Ok(())
}

/// Makes SIGHUP harmless from now on (tokio keeps its handler for the
/// life of the process): a `revoke` may send it as soon as the lock names
/// this process, before the node listens for it.
fn hangup_reloads() -> Result<(), Error> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map(drop)
        .map_err(|e| Error::Config(format!("cannot handle SIGHUP: {e}")))
}

async fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Dev {
            dir,
            cs_addr,
            gms_addr,
        } => run_dev(&dir, &gms_addr, &cs_addr).await,
        Command::Run { config } => run_config(&config).await,
        Command::Config { example: true, .. } => {
            print!("{}", duokey_server::config::EXAMPLE);
            Ok(())
        }
        Command::Config { check, .. } => check_config(check),
        Command::Enroll {
            dir,
            config,
            user,
            replace,
            ttl,
            password_setup,
        } => {
            let cfg = server_config(dir, config)?;
            enroll(cfg, user, replace, ttl, password_setup).await
        }
        Command::ClientConfig { config, host, out } => client_config(&config, &host, &out),
        Command::Tokens { command } => tokens(command).await,
        Command::Ca { command } => ca(command),
        Command::Revoke {
            list,
            serial,
            user,
            dir,
            config,
        } => revoke(list, serial, user, dir, config).await,
    }
}

/// `duokey-server run`: the roles of a configuration, until stopped.
async fn run_config(config: &Path) -> Result<(), Error> {
    let cfg = ServerConfig::load(config)?;
    hangup_reloads()?;
    let _only_one = dev::lock_dir(&cfg.data_dir)?;
    serve(&cfg, None).await
}

/// `duokey-server tokens …`.
async fn tokens(command: TokensCommand) -> Result<(), Error> {
    match command {
        TokensCommand::List { dir, config } => list_tokens(&server_config(dir, config)?).await,
        TokensCommand::Cancel { dir, config, user } => {
            cancel_tokens(&server_config(dir, config)?, &user).await
        }
    }
}

/// `duokey-server ca …`: the organisation's CA and server certificates.
fn ca(command: CaCommand) -> Result<(), Error> {
    match command {
        CaCommand::Init { dir, org } => ca_init(&dir, &org),
        CaCommand::IssueServer {
            ca_dir,
            names,
            roles,
            out,
            stem,
        } => {
            let ca = Ca::load(&ca_dir)?;
            std::fs::create_dir_all(&out)?;
            ca.issue_server(&names, &roles, 825)?.save(&out, &stem)?;
            println!(
                "Issued {}/{stem}.pem and {stem}.key for {}",
                out.display(),
                names.join(", ")
            );
            Ok(())
        }
    }
}

/// `duokey-server revoke`: one serial in a list file, or a user's
/// certificates through the AS's database.
async fn revoke(
    list: Option<PathBuf>,
    serial: Option<String>,
    user: Option<String>,
    dir: Option<PathBuf>,
    config: Option<PathBuf>,
) -> Result<(), Error> {
    match (list, serial, user) {
        (Some(list), Some(serial), _) => {
            let bytes = serial_bytes(&serial)?;
            duokey_pki::RevocationList::revoke_in_file(&list, &bytes)?;
            println!("Revoked serial {serial}; servers refuse it within 10 s.");
            Ok(())
        }
        (_, _, Some(user)) => revoke_user(dir, config, user).await,
        _ => Err(Error::Usage(
            "give --list FILE SERIAL, or --user USER with --dir DIR or --config FILE".into(),
        )),
    }
}

/// `duokey-server dev`: AS+GMS+CS in one process on `dir`.
async fn run_dev(dir: &Path, gms_addr: &str, cs_addr: &str) -> Result<(), Error> {
    hangup_reloads()?;
    let _only_one = dev::lock_dir(dir)?;
    let cfg = dev::prepare(dir, gms_addr, cs_addr)?;
    serve(&cfg, Some(dir)).await
}

/// `duokey-server config --check FILE`.
fn check_config(check: Option<PathBuf>) -> Result<(), Error> {
    let path = check.ok_or_else(|| Error::Usage("give --example or --check FILE".into()))?;
    let cfg = ServerConfig::load(&path)?;
    Node::check(&cfg)?;
    println!(
        "{}: valid; roles {}, data in {}",
        path.display(),
        cfg.roles.join(", "),
        cfg.data_dir.display()
    );
    Ok(())
}

/// `duokey-server client-config --config … --host … --out FILE`.
fn client_config(config: &[PathBuf], host: &[String], out: &Path) -> Result<(), Error> {
    let configs = config
        .iter()
        .map(|c| ServerConfig::load(c))
        .collect::<Result<Vec<_>, _>>()?;
    let file = dev::ClientFile::for_nodes(&configs, host)?;
    file.write(out, "duokey-server client-config")?;
    println!(
        "Wrote {}: give it to your users for `duokey init --config`.",
        out.display()
    );
    Ok(())
}

/// `duokey-server tokens cancel USER`.
async fn cancel_tokens(cfg: &ServerConfig, user: &str) -> Result<(), Error> {
    let db = as_store(cfg).await?;
    let n = db
        .cancel_tokens(user, duokey_pki::clock::now_ms_i64())
        .await?;
    println!("Cancelled {n} unused token(s) of {user}.");
    Ok(())
}

/// `duokey-server ca init`: a new CA in `dir`, never over an existing one.
fn ca_init(dir: &Path, org: &str) -> Result<(), Error> {
    if dir.join("ca.pem").exists() {
        return Err(Error::Usage(format!(
            "{} already holds a CA; refusing to overwrite it",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir)?;
    Ca::generate(org)?.save(dir)?;
    println!(
        "CA created in {} (ca.pem, ca.key with mode 0600)",
        dir.display()
    );
    Ok(())
}

/// `duokey-server enroll`: a one-time token for `user`, usable for
/// `ttl_secs`; with `replace`, the user's earlier certificates are revoked
/// (re-enrolment).
async fn enroll(
    cfg: ServerConfig,
    user: String,
    replace: bool,
    ttl_secs: u64,
    password_setup: bool,
) -> Result<(), Error> {
    let user = UserId::new(user.clone())
        .map_err(|e| Error::Usage(format!("{user:?} is not a user id: {e}")))?;
    let ttl_ms = i64::try_from(ttl_secs.saturating_mul(1000))
        .map_err(|_| Error::Usage("--ttl is too long".into()))?;
    let db = as_store(&cfg).await?;
    let list = cfg.tls.revocation_list.as_ref().map(|p| cfg.path(p));
    let revoked = match &list {
        Some(p) => duokey_pki::RevocationList::load(p)?,
        None => duokey_pki::RevocationList::empty(),
    };
    let issued = if password_setup {
        duokey_accounts::issue_password_token(&db, &user, replace, &revoked, ttl_ms).await?
    } else {
        duokey_accounts::issue_token_for(&db, &user, replace, &revoked, ttl_ms).await?
    };
    for serial in &issued.replaced {
        match &list {
            Some(p) => {
                duokey_pki::RevocationList::revoke_in_file(p, serial)?;
                eprintln!(
                    "Revoked {user}'s replaced certificate {}.",
                    hex::encode(serial)
                );
            }
            None => eprintln!(
                "warning: no tls.revocation_list in the configuration: {user}'s replaced \
                 certificate {} is NOT revoked; set tls.revocation_list and run \
                 `duokey-server revoke --user {user}`",
                hex::encode(serial)
            ),
        }
    }
    if list.is_some() && !issued.replaced.is_empty() {
        eprintln!("{}", when_refused(&cfg));
    }
    // The token stays the last word (scripts read it).
    println!(
        "One-time {} token for {user} (valid until {} UTC{}): {}",
        if password_setup {
            "password-setup"
        } else {
            "enrolment"
        },
        when(duokey_pki::clock::now_ms_i64().saturating_add(ttl_ms)),
        if password_setup {
            format!("; they run `duokey init --user {user} --password --token TOKEN`")
        } else {
            String::new()
        },
        issued.token.as_str()
    );
    Ok(())
}

/// The configuration `--dir` (of `duokey-server dev`) or `--config` names.
fn server_config(dir: Option<PathBuf>, config: Option<PathBuf>) -> Result<ServerConfig, Error> {
    match (dir, config) {
        (_, Some(c)) => ServerConfig::load(&c),
        (Some(d), None) => ServerConfig::load(&d.join("server.toml")).map_err(|e| {
            Error::Config(format!(
                "{e} (run `duokey-server dev --dir {}` first)",
                d.display()
            ))
        }),
        (None, None) => Err(Error::Usage(
            "give --dir DIR (of `duokey-server dev`) or --config FILE".into(),
        )),
    }
}

/// `duokey-server tokens list`.
async fn list_tokens(cfg: &ServerConfig) -> Result<(), Error> {
    let db = as_store(cfg).await?;
    let tokens = db.waiting_tokens(duokey_pki::clock::now_ms_i64()).await?;
    if tokens.is_empty() {
        println!("No enrolment token is waiting to be used.");
    }
    for (user, created, expires) in tokens {
        println!(
            "{user:<24} issued {}  expires {}",
            when(created),
            when(expires)
        );
    }
    Ok(())
}

/// A Unix time in milliseconds as `YYYY-MM-DD HH:MM` (UTC).
fn when(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms / 1000).map_or_else(
        |_| format!("@{ms}"),
        |t| format!("{} {:02}:{:02}", t.date(), t.hour(), t.minute()),
    )
}

/// The AS's database of a configuration.
async fn as_store(cfg: &ServerConfig) -> Result<duokey_storage::AsStore, Error> {
    let url = cfg
        .database
        .as_url
        .as_deref()
        .ok_or_else(|| Error::Config("no [database] as".into()))?;
    Ok(duokey_storage::AsStore::open(&cfg.db_url(url)).await?)
}

/// `duokey-server revoke --user USER`: every unexpired certificate the AS
/// issued to the user goes on the revocation list.
async fn revoke_user(
    dir: Option<PathBuf>,
    config: Option<PathBuf>,
    user: String,
) -> Result<(), Error> {
    let user = UserId::new(user.clone())
        .map_err(|e| Error::Usage(format!("{user:?} is not a user id: {e}")))?;
    let cfg = server_config(dir, config)?;
    let list = cfg.tls.revocation_list.as_ref().map(|p| cfg.path(p)).ok_or_else(|| {
        Error::Config("no tls.revocation_list in the configuration: servers could not learn the revocation".into())
    })?;
    let db = as_store(&cfg).await?;
    let serials = db
        .unexpired_certs(user.as_str(), duokey_pki::clock::now_ms_i64())
        .await?;
    if serials.is_empty() {
        return Err(Error::Usage(format!(
            "{user} holds no unexpired certificate issued by this AS"
        )));
    }
    for serial in &serials {
        duokey_pki::RevocationList::revoke_in_file(&list, serial)?;
        println!("Revoked {user}'s certificate {}", hex::encode(serial));
    }
    println!("{}", when_refused(&cfg));
    Ok(())
}

/// Tells the server running on this configuration's data directory (if
/// any) to reload its revocation list now; says when servers refuse.
fn when_refused(cfg: &ServerConfig) -> String {
    match dev::reload_running(&cfg.data_dir) {
        Some(pid) => format!(
            "The server running on {} (pid {pid}) refuses them now; other servers within 10 s.",
            cfg.data_dir.display()
        ),
        None => "Servers refuse them within 10 s.".to_owned(),
    }
}

fn serial_bytes(s: &str) -> Result<Vec<u8>, Error> {
    let s = s.trim().trim_start_matches("0x").replace(':', "");
    hex::decode(&s)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            Error::Usage(format!(
                "{s:?} is not a certificate serial: give it in hex, as the CA log or `duokey whoami` shows it"
            ))
        })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
