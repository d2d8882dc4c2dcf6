//! The command line: `run`, `demo`, `sim`, `check`, `migrate`; exit codes 0, 1, 2 (contract §1).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{ConfigError, Settings};

#[derive(Parser, Debug)]
#[command(name = "acctstate", version, about = "Binance account-state daemon")]
pub struct Cli {
    /// An extra config file layered over the defaults.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The daemon: stream -> cache -> Postgres + Redis, until SIGTERM/SIGINT.
    Run,
    /// The simulated exchange on loopback and the daemon against it; no credentials needed.
    Demo {
        /// Market to simulate: `spot` or `usdm`.
        #[arg(long, default_value = "spot")]
        market: crate::sim::SimMarket,
        /// Trading events per second the simulated exchange produces.
        #[arg(long, default_value_t = 20)]
        rate: u32,
        /// Stop after this many events (default: run until Ctrl-C).
        #[arg(long)]
        events: Option<usize>,
        /// Accounts the simulated exchange serves; the daemon follows every one (a fleet; `--rate`
        /// is per account).
        #[arg(long, default_value_t = 1, value_name = "N")]
        accounts: usize,
    },
    /// Only the simulated exchange (REST + WebSocket), for testing other programs.
    Sim {
        /// `spot` or `usdm`.
        #[arg(long, default_value = "spot")]
        market: crate::sim::SimMarket,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9100")]
        listen: std::net::SocketAddr,
        /// Trading events per second.
        #[arg(long, default_value_t = 10)]
        rate: u32,
        /// Seed of the trading session.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How requests are signed: `hmac`, `ed25519` or `rsa` (the last two need --public-key).
        #[arg(long, default_value = "hmac")]
        key_type: crate::sim::SimKeyType,
        /// The client's public key (PEM SPKI, `-----BEGIN PUBLIC KEY-----`) for ed25519 / rsa.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        /// The API key the sim accepts (default: the demo key).
        #[arg(long)]
        api_key: Option<String>,
        /// The HMAC secret the sim accepts (default: the demo secret).
        #[arg(long)]
        api_secret: Option<String>,
        /// REQUEST_WEIGHT budget per minute (default: Binance's, 6000 spot / 2400 usdm).
        #[arg(long, value_name = "N")]
        weight_limit: Option<u32>,
        /// Accounts to serve: account 0 has the key above, accounts 1.. generated HMAC keys;
        /// `--rate` is per account.
        #[arg(long, default_value_t = 1, value_name = "N")]
        accounts: usize,
        /// Write the accounts as the daemon's fleet file (`accounts_file`) here instead of
        /// printing one line per account.
        #[arg(long, value_name = "PATH")]
        accounts_file: Option<PathBuf>,
        /// Spot: active user-data subscriptions one WS API connection may carry.
        #[arg(long, default_value_t = 1000, value_name = "N")]
        max_subscriptions_per_connection: usize,
    },
    /// The connectivity audit: config, Postgres, migrations, Redis, Binance REST, key, stream.
    Check {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Applies the embedded migrations and exits.
    Migrate,
}

/// Why a command failed; decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
    /// Already reported on stdout (a failed `check`): exit 1 without another message.
    #[error("failed")]
    Quiet,
}

pub fn main() -> ExitCode {
    // One rustls crypto provider for every TLS client (WebSocket, REST, Redis, Postgres).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("acctstate: {e}");
            return ExitCode::from(2);
        }
    };
    // One thread by default: an event then crosses the connection, session, actor and sink
    // tasks without waking another thread (`runtime.worker_threads`, BENCHMARKS.md).
    let threads = settings.runtime.worker_threads;
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("acctstate: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli.command, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(e)) => {
            eprintln!("acctstate: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Quiet) => ExitCode::from(1),
        Err(Failure::Other(e)) => {
            tracing::error!(error = %format!("{e:#}"), "acctstate failed");
            eprintln!("acctstate: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// SIGTERM/SIGINT cancel the returned token; a second signal exits at once.
fn shutdown_on_signals() -> anyhow::Result<tokio_util::sync::CancellationToken> {
    use futures_util::StreamExt;
    use signal_hook::consts::{SIGINT, SIGTERM};
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT])
        .map_err(|e| anyhow::anyhow!("cannot install signal handlers: {e}"))?;
    let token = cancel.clone();
    tokio::spawn(async move {
        let mut seen = 0;
        while let Some(sig) = signals.next().await {
            seen += 1;
            if seen == 1 {
                tracing::info!(
                    event = "shutdown_requested",
                    signal = sig,
                    "shutdown requested: stopping intake and draining"
                );
                token.cancel();
            } else {
                tracing::warn!(
                    event = "shutdown_forced",
                    signal = sig,
                    "second signal: exiting at once"
                );
                std::process::exit(1);
            }
        }
    });
    Ok(cancel)
}

/// Every SIGHUP sends one message: re-read `accounts_file`.
fn reload_on_sighup() -> anyhow::Result<tokio::sync::mpsc::UnboundedReceiver<()>> {
    use futures_util::StreamExt;
    let mut signals = signal_hook_tokio::Signals::new([signal_hook::consts::SIGHUP])
        .map_err(|e| anyhow::anyhow!("cannot install the SIGHUP handler: {e}"))?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while signals.next().await.is_some() {
            tracing::info!(
                event = "reload_requested",
                "SIGHUP: re-reading accounts_file"
            );
            if tx.send(()).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

async fn dispatch(command: Command, settings: Settings) -> Result<(), Failure> {
    match command {
        Command::Run => {
            settings.require_credentials()?;
            crate::telemetry::init_logging(&settings.log);
            let cancel = shutdown_on_signals()?;
            let reload = reload_on_sighup()?;
            crate::app::run_fleet(settings, cancel, None, Some(reload)).await?;
            Ok(())
        }
        Command::Demo {
            market,
            rate,
            events,
            accounts,
        } => {
            crate::telemetry::init_logging(&settings.log);
            let cancel = shutdown_on_signals()?;
            crate::demo::run(settings, market, rate, events, accounts.max(1), cancel).await?;
            Ok(())
        }
        Command::Sim {
            market,
            listen,
            rate,
            seed,
            key_type,
            public_key,
            api_key,
            api_secret,
            weight_limit,
            accounts,
            accounts_file,
            max_subscriptions_per_connection,
        } => {
            crate::telemetry::init_logging(&settings.log);
            let cancel = shutdown_on_signals()?;
            let mut cfg = crate::sim::SimConfig::new(market).with_accounts(accounts);
            cfg.listen = listen;
            cfg.seed = seed;
            cfg.max_subscriptions_per_connection = max_subscriptions_per_connection;
            if let Some(n) = weight_limit {
                cfg.weight_limit = n;
            }
            let key = api_key.unwrap_or_else(|| cfg.api_key.clone());
            cfg = match (key_type, public_key) {
                (crate::sim::SimKeyType::Hmac, None) => {
                    let secret = api_secret.unwrap_or_else(|| cfg.api_secret.clone());
                    cfg.with_hmac(key, secret)
                }
                (crate::sim::SimKeyType::Hmac, Some(_)) => {
                    return Err(anyhow::anyhow!(
                        "--public-key goes with --key-type ed25519 or rsa"
                    )
                    .into());
                }
                (_, None) => {
                    return Err(anyhow::anyhow!(
                        "--key-type {key_type} needs --public-key FILE (PEM)"
                    )
                    .into());
                }
                (kt, Some(file)) => {
                    let pem = std::fs::read_to_string(&file)
                        .map_err(|e| anyhow::anyhow!("--public-key {}: {e}", file.display()))?;
                    if kt == crate::sim::SimKeyType::Ed25519 {
                        cfg.with_ed25519(key, pem)
                    } else {
                        cfg.with_rsa(key, pem)
                    }
                }
            };
            crate::sim::serve(
                cfg,
                rate,
                accounts_file,
                async move { cancel.cancelled().await },
            )
            .await?;
            Ok(())
        }
        Command::Check { json } => {
            let report = crate::check::run(&settings).await;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).map_err(anyhow::Error::from)?
                );
            } else {
                print!("{}", crate::check::table(&report));
            }
            if report.ok {
                Ok(())
            } else {
                Err(Failure::Quiet)
            }
        }
        Command::Migrate => {
            crate::telemetry::init_logging(&settings.log);
            if !settings.postgres.url.is_set() {
                return Err(ConfigError::new(
                    "postgres.url (DATABASE_URL)",
                    "required by `migrate` but not set",
                )
                .into());
            }
            let pool = crate::sink::postgres::lazy_pool(&settings.postgres)?;
            tokio::time::timeout(
                Duration::from_secs(30),
                crate::sink::postgres::MIGRATOR.run(&pool),
            )
            .await
            .map_err(|_| anyhow::anyhow!("postgres did not answer within 30 s"))?
            .map_err(|e| anyhow::anyhow!("applying migrations: {e}"))?;
            tracing::info!("migrations applied");
            Ok(())
        }
    }
}
