//! Helpers for tests that run the `acctstate` binary as its own process: a short command to
//! its end, the environment of one daemon (its sim, database, Redis prefix and account), HTTP
//! polling and the JSON-log checks.

use std::time::{Duration, Instant};

use acctstate::sim::{DEMO_API_KEY, DEMO_API_SECRET, Sim, SimConfig, SimMarket};
use serde_json::Value;

use crate::common::*;

/// A short-lived command's outcome.
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs `acctstate ARGS` to completion (off the runtime's threads), within `timeout`.
pub async fn run_to_end(args: &[&str], vars: &[(&str, &str)], timeout: Duration) -> Output {
    let mut cmd = command(args, vars);
    let started = Instant::now();
    let out = tokio::time::timeout(
        timeout,
        tokio::task::spawn_blocking(move || cmd.output().expect("run acctstate")),
    )
    .await
    .unwrap_or_else(|_| panic!("acctstate {args:?} did not finish within {timeout:?}"))
    .unwrap();
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// The owned pieces of one daemon's environment: its sim, database, prefix and account.
pub struct Env {
    pub sim: Sim,
    pub db_url: String,
    pub pool: sqlx::PgPool,
    pub prefix: String,
    pub account: String,
}

impl Env {
    /// A Spot environment.
    pub async fn new() -> Env {
        Env::of(SimMarket::Spot).await
    }

    pub async fn of(market: SimMarket) -> Env {
        let sim = Sim::start(SimConfig::new(market))
            .await
            .expect("sim starts");
        let (db_url, pool) = fresh_db().await;
        Env {
            sim,
            db_url,
            pool,
            prefix: unique_prefix(),
            account: unique_account(),
        }
    }

    /// The variables of a daemon on this sim, Postgres `db_url`, Redis, JSON logs, port 0.
    pub fn vars_with_db<'a>(&'a self, db_url: &'a str) -> Vec<(&'a str, String)> {
        let market = match self.sim.market() {
            SimMarket::Spot => "spot",
            SimMarket::Usdm => "usdm",
        };
        vec![
            ("ACCTSTATE__BINANCE__MARKET", market.to_owned()),
            ("ACCTSTATE__BINANCE__REST_URL", self.sim.rest_url()),
            ("ACCTSTATE__BINANCE__WS_URL", self.sim.ws_url()),
            ("BINANCE_API_KEY", DEMO_API_KEY.to_owned()),
            ("BINANCE_API_SECRET", DEMO_API_SECRET.to_owned()),
            ("DATABASE_URL", db_url.to_owned()),
            ("REDIS_URL", redis_url()),
            ("ACCTSTATE__REDIS__PREFIX", self.prefix.clone()),
            ("ACCTSTATE__ACCOUNT_ID", self.account.clone()),
            ("ACCTSTATE__HTTP__LISTEN", "127.0.0.1:0".to_owned()),
            ("ACCTSTATE__LOG__FORMAT", "json".to_owned()),
        ]
    }

    pub fn vars(&self) -> Vec<(&str, String)> {
        self.vars_with_db(&self.db_url)
    }

    pub async fn cleanup(&self) {
        redis_cleanup(&self.prefix, &self.account).await;
    }
}

/// `[(k, String)]` → `[(k, &str)]`.
pub fn borrow<'a>(vars: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    vars.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Replaces (or adds) `key` in `vars`.
pub fn set_var<'a>(vars: &mut Vec<(&'a str, String)>, key: &'a str, value: &str) {
    vars.retain(|(k, _)| *k != key);
    vars.push((key, value.to_owned()));
}

pub async fn get(url: &str) -> (u16, String) {
    let r = http().get(url).send().await.expect("GET");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// Polls `url` until it answers `status`; returns the body.
pub async fn wait_status(url: &str, status: u16, what: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let last = http().get(url).send().await;
        if let Ok(r) = last
            && r.status().as_u16() == status
        {
            return r.text().await.unwrap_or_default();
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every stdout line is one JSON object with the contract's fields, and none holds a secret.
pub fn assert_json_logs(lines: &[String], secrets: &[&str]) {
    assert!(!lines.is_empty(), "no log lines at all");
    for line in lines {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {line}"));
        for field in ["timestamp", "level", "target", "message"] {
            assert!(
                obj.get(field).is_some_and(Value::is_string),
                "log line without a string `{field}`: {line}"
            );
        }
        for s in secrets {
            assert!(!line.contains(s), "a secret appears in the log: {line}");
        }
    }
}

/// `check --json`, parsed.
pub fn check_report(out: &Output) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json is not JSON ({e})\nstdout: {}\nstderr: {}",
            out.stdout, out.stderr
        )
    })
}

/// One named check of a `check --json` report.
pub fn check_named<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no `{name}` check: {report:#}"))
}
