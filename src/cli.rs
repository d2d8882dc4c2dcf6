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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
        Err(Failure::Other(e)) => {
            tracing::error!(error = %format!("{e:#}"), "acctstate failed");
            eprintln!("acctstate: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn dispatch(command: Command, settings: Settings) -> Result<(), Failure> {
    match command {
        Command::Run => {
            settings.require_credentials()?;
            crate::telemetry::init_logging(&settings.log);
            Err(anyhow::anyhow!("the exchange side is not built yet").into())
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
