//! `acctstate demo`: the simulated exchange on loopback and the daemon against it, with
//! Postgres and Redis used when they answer at the configured (or default local) URLs.

use std::time::Duration;

use fred::prelude::*;
use tokio_util::sync::CancellationToken;

use crate::account::Market;
use crate::config::{Secret, Settings, redact_url};
use crate::sim::{self, Sim, SimConfig, SimMarket};

const LOCAL_PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const LOCAL_PG_DEMO_DB: &str = "acctstate_demo";
const LOCAL_REDIS: &str = "redis://127.0.0.1:6379";

/// Runs the demo until `cancel` (or until `events` events were traded per account). With
/// `accounts` > 1 the daemon runs them as a fleet (an accounts file the sim writes).
pub async fn run(
    mut settings: Settings,
    market: SimMarket,
    rate: u32,
    events: Option<usize>,
    accounts: usize,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let sim = Sim::start(SimConfig::new(market).with_accounts(accounts)).await?;
    let fleet_file = if accounts > 1 {
        // The sim's demo keys only; removed when the demo ends.
        let file = std::env::temp_dir().join(format!(
            "acctstate-demo-accounts-{}.toml",
            std::process::id()
        ));
        std::fs::write(&file, sim::fleet_toml(&sim, "demo"))?;
        settings.accounts_file = file.display().to_string();
        tracing::info!(accounts, file = %file.display(), "demo: a fleet of simulated accounts; see /v1/accounts");
        Some(file)
    } else {
        None
    };
    settings.binance.market = match market {
        SimMarket::Spot => Market::Spot.as_str().into(),
        SimMarket::Usdm => Market::Usdm.as_str().into(),
    };
    settings.binance.rest_url = sim.rest_url();
    settings.binance.ws_url = sim.ws_url();
    settings.binance.api_key = Secret::new(sim::DEMO_API_KEY);
    settings.binance.api_secret = Secret::new(sim::DEMO_API_SECRET);
    settings.postgres.url = Secret::new(pick_postgres(settings.postgres.url.expose()).await);
    settings.redis.url = Secret::new(pick_redis(settings.redis.url.expose()).await);
    tracing::info!(
        rest_url = %sim.rest_url(),
        ws_url = %sim.ws_url(),
        http = %settings.http.listen,
        postgres = %if settings.postgres.url.is_set() { redact_url(settings.postgres.url.expose()) } else { "not used".into() },
        redis = %if settings.redis.url.is_set() { redact_url(settings.redis.url.expose()) } else { "not used".into() },
        "demo: simulated exchange started; the daemon follows it. Try: curl http://{}/v1/account",
        settings.http.listen
    );

    let trader = {
        let sim = sim.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            for i in 0..sim.account_count() {
                let subscribed = match sim.account(i) {
                    Some(a) => a
                        .wait_for_subscriber(Duration::from_secs(120))
                        .await
                        .is_ok(),
                    None => false,
                };
                if !subscribed {
                    tracing::error!(
                        account = i,
                        "demo: the daemon did not subscribe within 120 s"
                    );
                    return;
                }
            }
            match events {
                Some(n) => {
                    let sent = sim.run_all(n, Some(rate.max(1))).await;
                    tracing::info!(events = sent, "demo: trading session finished; stopping");
                    // Give the daemon a moment to apply the last events, then stop.
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    cancel.cancel();
                }
                None => loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = sim.run_all(rate.max(1) as usize, Some(rate.max(1))) => {}
                    }
                },
            }
        })
    };
    let result = crate::app::run_daemon(settings, cancel.clone(), None).await;
    trader.abort();
    sim.shutdown();
    if let Some(f) = fleet_file {
        let _ = std::fs::remove_file(f);
    }
    result
}

/// The configured Postgres URL, else the local one (creating the demo database) if it answers.
async fn pick_postgres(configured: &str) -> String {
    if !configured.is_empty() {
        return configured.to_owned();
    }
    let attempt = async {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(2))
            .connect(LOCAL_PG_ADMIN)
            .await?;
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(LOCAL_PG_DEMO_DB)
                .fetch_optional(&pool)
                .await?;
        if exists.is_none() {
            sqlx::query("CREATE DATABASE acctstate_demo")
                .execute(&pool)
                .await?;
        }
        Ok::<_, sqlx::Error>(())
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(())) => format!("postgres://postgres@127.0.0.1:5432/{LOCAL_PG_DEMO_DB}"),
        _ => {
            tracing::warn!(
                "demo: no Postgres at 127.0.0.1:5432 (and none configured): running WITHOUT Postgres"
            );
            String::new()
        }
    }
}

/// The configured Redis URL, else the local one if it answers PING.
async fn pick_redis(configured: &str) -> String {
    if !configured.is_empty() {
        return configured.to_owned();
    }
    let attempt = async {
        let client = Builder::from_config(Config::from_url(LOCAL_REDIS)?).build()?;
        client.init().await?;
        let _: String = client.ping(None).await?;
        let _ = client.quit().await;
        Ok::<_, fred::error::Error>(())
    };
    match tokio::time::timeout(Duration::from_secs(3), attempt).await {
        Ok(Ok(())) => LOCAL_REDIS.to_owned(),
        _ => {
            tracing::warn!(
                "demo: no Redis at 127.0.0.1:6379 (and none configured): running WITHOUT Redis"
            );
            String::new()
        }
    }
}
