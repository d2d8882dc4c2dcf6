//! `acctstate check`: the connectivity audit. Each check says ok / warn / fail / skip, with a
//! detail and, on failure, a hint; a table for people, `--json` for machines. Exit 0 only when
//! every required check passes. Secrets are shown only as set / unset.

use std::time::{Duration, Instant};

use fred::prelude::*;
use serde::Serialize;

use crate::binance::rest::{RestClient, RestError, budget_for, http_client};
use crate::binance::stream::{self, StreamConfig};
use crate::config::{AccountSpec, Settings, redact_url};
use crate::sink::postgres::MIGRATOR;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    Skip,
}

/// One line of the audit.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub required: bool,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// The account an exchange check is about (every account of `accounts_file` is audited).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

impl Check {
    fn new(name: &'static str, required: bool, status: Status, detail: impl Into<String>) -> Self {
        Check {
            name,
            required,
            status,
            detail: detail.into(),
            hint: None,
            latency_ms: None,
            account: None,
        }
    }
    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    fn latency(mut self, since: Instant) -> Self {
        self.latency_ms = Some((since.elapsed().as_secs_f64() * 1000.0 * 100.0).round() / 100.0);
        self
    }
}

/// The whole audit.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
}

pub async fn run(settings: &Settings) -> Report {
    let mut checks = vec![config_check(settings)];
    checks.extend(postgres_checks(settings).await);
    checks.push(redis_check(settings).await);
    match settings.accounts() {
        Ok(specs) => {
            let several = !settings.accounts_file.is_empty();
            for spec in specs {
                let mut these = binance_checks(settings, &spec).await;
                if several {
                    for c in &mut these {
                        c.account = Some(spec.id.clone());
                    }
                }
                checks.extend(these);
            }
        }
        Err(e) => checks.push(Check::new("accounts", true, Status::Fail, e.to_string())),
    }
    let ok = checks
        .iter()
        .all(|c| !c.required || matches!(c.status, Status::Ok | Status::Warn));
    Report { ok, checks }
}

fn set(b: bool) -> &'static str {
    if b { "set" } else { "unset" }
}

fn config_check(s: &Settings) -> Check {
    Check::new(
        "config",
        true,
        Status::Ok,
        format!(
            "account_id={} market={} env={} key_type={} rest_url={} api_key={} api_secret={} postgres.url={} redis.url={} http.listen={}",
            s.account_id,
            s.market().as_str(),
            s.binance.env,
            s.key_type().as_str(),
            s.rest_url(),
            set(s.binance.api_key.is_set()),
            set(s.binance.api_secret.is_set()),
            set(s.postgres.url.is_set()),
            set(s.redis.url.is_set()),
            s.http.listen
        ),
    )
}

fn pg_hint(url: &str, err: &str) -> String {
    let host = url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let e = err.to_ascii_lowercase();
    if e.contains("ssl")
        || e.contains("tls")
        || host.contains("neon")
        || host.ends_with(".rlwy.net")
        || host.ends_with(".railway.app")
    {
        "sslmode=require is needed for this host (added automatically for Railway/Neon; check the URL's sslmode)".into()
    } else if e.contains("password") || e.contains("authentication") {
        "check the user and password in DATABASE_URL / PGUSER / PGPASSWORD".into()
    } else if e.contains("does not exist") {
        "the database or role does not exist: create it or fix the URL".into()
    } else {
        format!("is Postgres running and reachable at {host}? (postgres.url / DATABASE_URL)")
    }
}

async fn postgres_checks(s: &Settings) -> Vec<Check> {
    if !s.postgres.url.is_set() {
        return vec![Check::new(
            "postgres",
            false,
            Status::Skip,
            "not configured",
        )];
    }
    let url = s.postgres.url.expose();
    let started = Instant::now();
    let connect = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url);
    let pool = match tokio::time::timeout(Duration::from_secs(6), connect).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            let err = e.to_string();
            return vec![
                Check::new(
                    "postgres",
                    true,
                    Status::Fail,
                    format!("{}: {err}", redact_url(url)),
                )
                .hint(pg_hint(url, &err)),
            ];
        }
        Err(_) => {
            return vec![
                Check::new(
                    "postgres",
                    true,
                    Status::Fail,
                    format!("{}: no answer within 6 s", redact_url(url)),
                )
                .hint(pg_hint(url, "timeout")),
            ];
        }
    };
    let _ = started;
    let ping_started = Instant::now();
    let mut out = Vec::new();
    match sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(&pool)
        .await
    {
        Ok(_) => {
            let version: String = sqlx::query_scalar("SHOW server_version")
                .fetch_one(&pool)
                .await
                .unwrap_or_default();
            let tls: Option<bool> =
                sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                    .fetch_optional(&pool)
                    .await
                    .ok()
                    .flatten();
            out.push(
                Check::new(
                    "postgres",
                    true,
                    Status::Ok,
                    format!(
                        "{} server {version}, TLS {}",
                        redact_url(url),
                        if tls == Some(true) { "on" } else { "off" }
                    ),
                )
                .latency(ping_started),
            );
        }
        Err(e) => {
            let err = e.to_string();
            out.push(
                Check::new("postgres", true, Status::Fail, err.clone()).hint(pg_hint(url, &err)),
            );
            return out;
        }
    }
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
    let pending: Vec<i64> = MIGRATOR
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect();
    out.push(if pending.is_empty() {
        Check::new(
            "migrations",
            true,
            Status::Ok,
            format!("{} applied, none pending", applied.len()),
        )
    } else {
        Check::new(
            "migrations",
            true,
            Status::Fail,
            format!("{} pending: {pending:?}", pending.len()),
        )
        .hint("run `acctstate migrate` (over the direct, non-pooler URL for Neon)")
    });
    pool.close().await;
    out
}

async fn redis_check(s: &Settings) -> Check {
    if !s.redis.url.is_set() {
        return Check::new(
            "redis",
            false,
            Status::Skip,
            "not configured (publishing disabled)",
        );
    }
    let url = s.redis.url.expose();
    let attempt = async {
        let client = Builder::from_config(Config::from_url(url)?)
            .with_connection_config(|c| c.connection_timeout = Duration::from_secs(3))
            .build()?;
        client.init().await?;
        let started = Instant::now();
        let _: String = client.ping(None).await?;
        let elapsed = started;
        let _ = client.quit().await;
        Ok::<_, fred::error::Error>(elapsed)
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(started)) => Check::new(
            "redis",
            true,
            Status::Ok,
            format!("{} PING ok", redact_url(url)),
        )
        .latency(started),
        Ok(Err(e)) => Check::new(
            "redis",
            true,
            Status::Fail,
            format!("{}: {e}", redact_url(url)),
        )
        .hint("is Redis running and reachable? (redis.url / REDIS_URL; rediss:// for TLS)"),
        Err(_) => Check::new(
            "redis",
            true,
            Status::Fail,
            format!("{}: no answer within 5 s", redact_url(url)),
        )
        .hint("is Redis running and reachable? (redis.url / REDIS_URL)"),
    }
}

async fn binance_checks(s: &Settings, spec: &AccountSpec) -> Vec<Check> {
    let mut out = Vec::new();
    let budget = std::sync::Arc::new(budget_for(s, spec.market));
    let http = match http_client(s) {
        Ok(h) => h,
        Err(e) => {
            return vec![Check::new(
                "binance_rest",
                true,
                Status::Fail,
                format!("{e:#}"),
            )];
        }
    };
    let rest = match RestClient::for_account(spec, s, http, budget) {
        Ok(r) => r,
        Err(e) => {
            return vec![Check::new(
                "binance_rest",
                true,
                Status::Fail,
                format!("{e:#}"),
            )];
        }
    };
    let rest = std::sync::Arc::new(rest);
    let started = Instant::now();
    match rest.sync_time().await {
        Ok(offset) => {
            out.push(
                Check::new(
                    "binance_rest",
                    true,
                    Status::Ok,
                    format!("{} reachable", spec.rest_url),
                )
                .latency(started),
            );
            let status = if offset.abs() > 1000 {
                Status::Warn
            } else {
                Status::Ok
            };
            let mut c = Check::new(
                "clock_offset",
                false,
                status,
                format!("{offset} ms (server − local)"),
            );
            if status == Status::Warn {
                c = c.hint("sync this host's clock (chrony/systemd-timesyncd); the daemon corrects for the offset");
            }
            out.push(c);
        }
        Err(e) => {
            out.push(
                Check::new(
                    "binance_rest",
                    true,
                    Status::Fail,
                    format!("{}: {e}", spec.rest_url),
                )
                .hint("check network egress to Binance and binance.rest_url"),
            );
            return out;
        }
    }
    if !(spec.api_key.is_set() && spec.api_secret.is_set()) {
        out.push(
            Check::new(
                "api_key",
                true,
                Status::Fail,
                "binance.api_key / binance.api_secret not set",
            )
            .hint("set BINANCE_API_KEY and BINANCE_API_SECRET"),
        );
        return out;
    }
    let path = match spec.market {
        crate::account::Market::Spot => "/api/v3/account",
        crate::account::Market::Usdm => "/fapi/v3/account",
    };
    let started = Instant::now();
    match rest.signed_get(path, &[]).await {
        Ok(_) => out.push(
            Check::new(
                "api_key",
                true,
                Status::Ok,
                format!("accepted (signed GET {path})"),
            )
            .latency(started),
        ),
        Err(e) => {
            let hint = match &e {
                RestError::Credentials(_) => {
                    "the key or secret is wrong, or the key lacks read permission / IP whitelist"
                }
                _ => "see the error",
            };
            out.push(Check::new("api_key", true, Status::Fail, e.to_string()).hint(hint));
            return out;
        }
    }
    out.push(key_permissions(&rest).await);
    let started = Instant::now();
    match stream::probe(rest.clone(), &StreamConfig::for_url(s, spec.ws_url.clone())).await {
        Ok(url) => out.push(
            Check::new(
                "user_data_stream",
                true,
                Status::Ok,
                match spec.market {
                    crate::account::Market::Spot => {
                        format!("userDataStream.subscribe.signature opened and closed on {url}")
                    }
                    crate::account::Market::Usdm => format!(
                        "opened and closed {url} (ws mode, listenKey in the query, events = {})",
                        s.binance.usdm_events.len()
                    ),
                },
            )
            .latency(started),
        ),
        Err(e) => out.push(
            Check::new("user_data_stream", true, Status::Fail, e)
                .hint("check binance.ws_url and that the key may open a user-data stream"),
        ),
    }
    out
}

/// Spot API keys' restrictions (`/sapi/v1/account/apiRestrictions`): warn if it can withdraw.
async fn key_permissions(rest: &RestClient) -> Check {
    if rest.market() != crate::account::Market::Spot {
        return Check::new(
            "api_key_permissions",
            false,
            Status::Skip,
            "not queried for usdm",
        );
    }
    match rest
        .signed_get("/sapi/v1/account/apiRestrictions", &[])
        .await
    {
        Ok(body) => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let flag = |k: &str| {
                v.get(k)
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false)
            };
            let detail = format!(
                "reading={} spot_trading={} futures={} withdrawals={}",
                flag("enableReading"),
                flag("enableSpotAndMarginTrading"),
                flag("enableFutures"),
                flag("enableWithdrawals")
            );
            if flag("enableWithdrawals") {
                Check::new("api_key_permissions", false, Status::Warn, detail)
                    .hint("this key can WITHDRAW: a read-only key is enough for acctstate")
            } else {
                Check::new("api_key_permissions", false, Status::Ok, detail)
            }
        }
        Err(e) => Check::new(
            "api_key_permissions",
            false,
            Status::Skip,
            format!("unknown ({e})"),
        ),
    }
}

/// The report as a table for people.
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<20} {:<5} {:>10}  {}\n",
        "CHECK", "", "LATENCY", "DETAIL"
    ));
    for c in &r.checks {
        let status = match c.status {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        let latency = c
            .latency_ms
            .map(|l| format!("{l:.2} ms"))
            .unwrap_or_default();
        let name = match &c.account {
            Some(a) => format!("{} [{a}]", c.name),
            None => c.name.to_owned(),
        };
        out.push_str(&format!(
            "{:<20} {:<5} {:>10}  {}\n",
            name, status, latency, c.detail
        ));
        if let Some(h) = &c.hint {
            out.push_str(&format!("{:<20} {:<5} {:>10}  hint: {h}\n", "", "", ""));
        }
    }
    out.push_str(if r.ok {
        "\nall required checks passed\n"
    } else {
        "\nsome required checks FAILED\n"
    });
    out
}
