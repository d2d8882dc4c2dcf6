//! What the load tools share: the release daemon as its own process (`Daemon`), `/proc`
//! readings (RSS, CPU seconds, load), the result table and percentiles.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::prelude::*;
use serde_json::Value;

use acctstate::sim::{DEMO_API_KEY, DEMO_API_SECRET, Sim, SimConfig, SimMarket};

use crate::common::{fresh_db, redis_client, redis_url, unique_account, unique_prefix};

/// The daemon binary: this build's, or `BENCH_BIN` (another build, for a before/after pair in
/// one run; or a wrapper script such as `exec heaptrack -o FILE acctstate "$@"`).
pub fn bin() -> String {
    std::env::var("BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_acctstate").to_owned())
}
pub const WAIT: Duration = Duration::from_secs(60);

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The 1-minute load average.
pub fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// `VmRSS` of `pid` in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// `VmHWM` of `pid` in MiB: its peak RSS so far.
pub fn peak_rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmHWM:")
}

fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// User + system CPU seconds of `pid` (`self` for this process), in 10 ms ticks (this kernel
/// has no schedstat): over `COST_SECS` = 30 at 20 ev/s that is ±17 µs per event.
pub fn cpu_secs(pid: &str) -> f64 {
    let (user, kernel) = cpu_user_kernel_secs(pid);
    user + kernel
}

/// `cpu_secs` split: user-space and kernel (system) CPU seconds.
pub fn cpu_user_kernel_secs(pid: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state is field 3; utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) / 100.0, ticks(12) / 100.0)
}

/// CPU seconds of every Postgres backend serving `db` (its command line names the database).
// The cost and fleet benches use it, the e2e bench does not.
#[allow(dead_code)]
pub fn pg_backends_cpu(db: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return f64::NAN;
    };
    dir.flatten()
        .filter_map(|e| {
            let pid = e.file_name().into_string().ok()?;
            let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).ok()?;
            (cmd.starts_with("postgres:") && cmd.contains(db)).then(|| cpu_secs(&pid))
        })
        .sum()
}

/// A row of CPU per event in µs, `total (user + kernel)`, from seconds over `events`.
// The cost and fleet benches use it, the e2e bench does not.
#[allow(dead_code)]
pub fn cpu_per_event_row(name: &str, user: f64, kernel: f64, events: f64) {
    let us = |secs: f64| secs * 1e6 / events;
    row(
        name,
        format!(
            "{:.1} ({:.1} + {:.1})",
            us(user + kernel),
            us(user),
            us(kernel)
        ),
    );
}

/// The pid of the local `redis-server`, if one runs on this machine.
pub fn redis_server_pid() -> Option<String> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid = e.file_name().into_string().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "redis-server").then_some(pid)
    })
}

pub fn row(name: &str, value: impl std::fmt::Display) {
    println!("| {name:<52} | {value:>22} |");
}

pub fn header(title: &str) {
    println!();
    println!("## {title}  (load1 {:.2}, nproc 2)", load1());
    println!("| {:<52} | {:>22} |", "measure", "value");
    println!("|{}|{}|", "-".repeat(54), "-".repeat(24));
}

/// The daemon as its own process: `acctstate run`, configured by variables only.
pub struct Daemon {
    pub child: Child,
    pub http: SocketAddr,
    pub client: reqwest::Client,
}

impl Daemon {
    /// Spawns `acctstate run` and waits for its HTTP address (not for readiness).
    pub async fn spawn(vars: &[(&str, String)]) -> Daemon {
        let mut cmd = Command::new(bin());
        cmd.arg("run");
        for (k, _) in std::env::vars() {
            if k.starts_with("ACCTSTATE__")
                || k.starts_with("PG")
                || k.starts_with("BINANCE_")
                || matches!(
                    k.as_str(),
                    "DATABASE_URL" | "REDIS_URL" | "PORT" | "RUST_LOG"
                )
            {
                cmd.env_remove(k);
            }
        }
        for (k, v) in vars {
            cmd.env(k, v);
        }
        // `BENCH_DAEMON_ENV="K=V K=V"`: settings for the daemon under test (the bench's own
        // ACCTSTATE__* are removed above), e.g. ACCTSTATE__POSTGRES__LINGER_MS=20 for a pair.
        for kv in std::env::var("BENCH_DAEMON_ENV")
            .unwrap_or_default()
            .split_whitespace()
        {
            if let Some((k, v)) = kv.split_once('=') {
                cmd.env(k, v);
            }
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn acctstate");
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        {
            let lines = lines.clone();
            let out = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                // Read to the end whatever comes: a reader that stops leaves the daemon writing
                // into a closed pipe (EPIPE on every log line).
                let mut out = BufReader::new(out);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match out.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let l = String::from_utf8_lossy(&buf).trim_end().to_owned();
                    let mut v = lines.lock().unwrap_or_else(|e| e.into_inner());
                    // Keep the first lines (the address) and a bounded tail.
                    if v.len() > 10_000 {
                        v.drain(100..5_000);
                    }
                    v.push(l);
                }
            });
        }
        let deadline = Instant::now() + WAIT;
        let http = loop {
            let found = lines.lock().unwrap().iter().find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                (v["message"] == "http listening").then(|| v["addr"].as_str()?.parse().ok())?
            });
            if let Some(a) = found {
                break a;
            }
            if let Ok(Some(s)) = child.try_wait() {
                panic!("daemon exited ({s}): {:#?}", lines.lock().unwrap());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("daemon did not listen within {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Daemon {
            child,
            http,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    /// `spawn`, then waits (up to `WAIT`) until `/readyz` answers 200.
    pub async fn start(vars: &[(&str, String)]) -> Daemon {
        let d = Daemon::spawn(vars).await;
        let deadline = Instant::now() + WAIT;
        while !d.ready().await {
            assert!(Instant::now() < deadline, "daemon not ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn ready(&self) -> bool {
        matches!(
            self.client.get(format!("http://{}/readyz", self.http)).send().await,
            Ok(r) if r.status().is_success()
        )
    }

    pub async fn view(&self) -> Value {
        self.client
            .get(format!("http://{}/v1/account", self.http))
            .send()
            .await
            .expect("GET /v1/account")
            .json()
            .await
            .expect("account JSON")
    }

    /// The sum of every sample of `name` in `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .client
            .get(format!("http://{}/metrics", self.http))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .unwrap_or_default();
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits (up to `E2E_SETTLE_SECS`, default 60) for the 1-minute load to drop below 1.0.
pub async fn settle() {
    let wait = env_usize("E2E_SETTLE_SECS", 60) as u64;
    let deadline = Instant::now() + Duration::from_secs(wait);
    while load1() >= 1.0 && Instant::now() < deadline {
        eprintln!("load1 {:.2} >= 1.0: waiting", load1());
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// Stops recording `sim`'s send times and matches them with what `got` (of
/// `latency_subscriber`) received: the latencies, sorted.
// The cost and fleet benches use it, the e2e bench does not.
#[allow(dead_code)]
pub fn matched_latencies(
    sim: &acctstate::sim::Sim,
    got: &Mutex<Vec<(Instant, i64)>>,
) -> Vec<Duration> {
    let sent = sim.take_send_times();
    sim.record_send_times(false);
    let received = std::mem::take(&mut *got.lock().unwrap());
    if let Ok(path) = std::env::var("BENCH_LATENCY_DUMP") {
        dump_latencies(&path, &sent, &received);
    }
    latencies(&sent, received)
}

/// `BENCH_LATENCY_DUMP=FILE`: appends "ms since the first send, latency µs" per matched event
/// (to see when the slow ones happen: periodic work, a neighbour, a burst).
fn dump_latencies(path: &str, sent: &[(i64, Instant)], received: &[(Instant, i64)]) {
    use std::io::Write;
    let first: std::collections::HashMap<i64, Instant> =
        received.iter().rev().map(|(at, e)| (*e, *at)).collect();
    let Some(t0) = sent.first().map(|s| s.1) else {
        return;
    };
    let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    else {
        return;
    };
    for (e, at) in sent {
        if let Some(r) = first.get(e) {
            let _ = writeln!(
                f,
                "{:.3} {}",
                at.duration_since(t0).as_secs_f64() * 1e3,
                r.saturating_duration_since(*at).as_micros()
            );
        }
    }
    let _ = writeln!(f);
}

/// Send → receipt of each sent event (`Sim::take_send_times`) that a message carried (its first
/// receipt, from `latency_subscriber`), sorted.
pub fn latencies(sent: &[(i64, Instant)], received: Vec<(Instant, i64)>) -> Vec<Duration> {
    let mut first: std::collections::HashMap<i64, Instant> = Default::default();
    for (at, e) in received {
        first.entry(e).or_insert(at);
    }
    let mut lat: Vec<Duration> = sent
        .iter()
        .filter_map(|(e, at)| first.get(e).map(|r| r.saturating_duration_since(*at)))
        .collect();
    lat.sort();
    lat
}

pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

pub fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// Collects (receipt instant, event_time) of every message on `P:*` except status. The
/// subscriber runs on its own thread and runtime, so the sim's work in this process does not
/// delay its receipt stamps. Send on the returned sender to stop it.
pub async fn latency_subscriber(
    prefix: &str,
    account: &str,
) -> (
    tokio::sync::oneshot::Sender<()>,
    Arc<Mutex<Vec<(Instant, i64)>>>,
) {
    let got = Arc::new(Mutex::new(Vec::with_capacity(100_000)));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let pattern = format!("{prefix}:{account}:*");
    let sink = got.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("subscriber runtime");
        rt.block_on(async move {
            let config = Config::from_url(&redis_url()).expect("redis URL");
            let client = Builder::from_config(config)
                .with_performance_config(|p| p.broadcast_channel_capacity = 1_000_000)
                .build_subscriber_client()
                .expect("build subscriber");
            client.init().await.expect("subscriber connects");
            let mut rx = client.message_rx();
            client.psubscribe(pattern).await.expect("psubscribe");
            let _ = ready_tx.send(());
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    m = rx.recv() => {
                        let Ok(m) = m else { break };
                        let at = Instant::now();
                        let text: String = m.value.convert().unwrap_or_default();
                        let v: Value = serde_json::from_str(&text).unwrap_or_default();
                        if v["kind"] != "status"
                            && let Some(e) = v["event_time"].as_i64()
                        {
                            sink.lock().unwrap().push((at, e));
                        }
                    }
                }
            }
            let _ = client.quit().await;
        });
    });
    ready_rx.await.expect("subscriber ready");
    (stop_tx, got)
}

/// One run's sim, database, Redis prefix and account.
pub struct Env {
    pub sim: Sim,
    pub db_url: String,
    pub pool: sqlx::PgPool,
    pub redis: Client,
    pub prefix: String,
    pub account: String,
}

impl Env {
    pub async fn new() -> Env {
        let sim = Sim::start(SimConfig::new(SimMarket::Spot))
            .await
            .expect("sim starts");
        let (db_url, pool) = fresh_db().await;
        Env {
            sim,
            db_url,
            pool,
            redis: redis_client().await,
            prefix: unique_prefix(),
            account: unique_account(),
        }
    }

    pub fn vars(&self, db_url: &str) -> Vec<(&'static str, String)> {
        vec![
            ("ACCTSTATE__BINANCE__MARKET", "spot".to_owned()),
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

    pub async fn daemon(&self) -> Daemon {
        self.daemon_with(&[]).await
    }

    /// `daemon` with `extra` variables after the usual ones.
    pub async fn daemon_with(&self, extra: &[(&'static str, String)]) -> Daemon {
        let mut vars = self.vars(&self.db_url);
        vars.extend_from_slice(extra);
        let d = Daemon::start(&vars).await;
        self.sim
            .wait_for_subscriber(WAIT)
            .await
            .expect("daemon subscribes");
        d
    }

    pub async fn pg_max_seq(&self) -> i64 {
        sqlx::query_scalar::<_, Option<i64>>(
            "SELECT max(seq) FROM account_changes WHERE account_id = $1",
        )
        .bind(&self.account)
        .fetch_one(&self.pool)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
    }

    pub async fn redis_seq(&self) -> i64 {
        let v: Option<i64> = self
            .redis
            .get(format!("{}:{}:seq", self.prefix, self.account))
            .await
            .unwrap_or(None);
        v.unwrap_or(0)
    }

    /// Waits until the daemon has received every event the sim sent, then until the journal
    /// and Redis `P:seq` both hold the cache's seq; returns that seq.
    pub async fn wait_complete(&self, d: &Daemon, timeout: Duration) -> i64 {
        let deadline = Instant::now() + timeout;
        let sent = self.sim.events_sent() as f64;
        loop {
            assert!(Instant::now() < deadline, "not complete within {timeout:?}");
            if d.metric("acctstate_events_total").await >= sent {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.wait_sinks(d, timeout).await.0
    }

    /// After every event is in the cache: the cache's seq, and when the journal and Redis
    /// `P:seq` each reached it.
    pub async fn wait_sinks(&self, d: &Daemon, timeout: Duration) -> (i64, Instant, Instant) {
        let deadline = Instant::now() + timeout;
        let seq = d.view().await["seq"].as_i64().expect("seq");
        let (mut pg_at, mut redis_at) = (None, None);
        loop {
            assert!(Instant::now() < deadline, "not complete within {timeout:?}");
            if pg_at.is_none() && self.pg_max_seq().await >= seq {
                pg_at = Some(Instant::now());
            }
            if redis_at.is_none() && self.redis_seq().await >= seq {
                redis_at = Some(Instant::now());
            }
            if let (Some(p), Some(r)) = (pg_at, redis_at) {
                return (seq, p, r);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn journal_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM account_changes WHERE account_id = $1")
            .bind(&self.account)
            .fetch_one(&self.pool)
            .await
            .unwrap_or(0)
    }

    pub async fn cleanup(&self) {
        crate::common::redis_cleanup(&self.prefix, &self.account).await;
        self.sim.shutdown();
    }
}
