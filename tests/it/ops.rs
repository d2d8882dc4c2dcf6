//! The daemon as operators see it: the `acctstate` binary run as its own process against the
//! simulated exchange (in this test process) and the real Postgres and Redis — its HTTP
//! endpoints, Prometheus metrics, readiness, bearer token, `check`, configuration errors, exit
//! codes, SIGTERM drain and JSON logs.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use acctstate::sim::{DEMO_API_KEY, DEMO_API_SECRET, Sim};
use fred::interfaces::{ClientLike, KeysInterface};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::common::*;
use crate::procs::*;

#[test]
fn the_prometheus_parser_is_strict() {
    let good = "# HELP a_b help text\n# TYPE a_b counter\na_b{x=\"1\",y=\"q\\\"\"} 3\n\
                # TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n";
    let e = parse_prometheus(good).unwrap();
    assert_eq!(e.value_with("a_b", "y", "q\""), Some(3.0));
    assert_eq!(e.sum("h_count"), 2.0);
    for bad in [
        "a 1\n",                            // no TYPE
        "# TYPE a counter\na -1\n",         // negative counter
        "# TYPE a gauge\na{x=1} 1\n",       // unquoted label
        "# TYPE a gauge\na{1x=\"1\"} 1\n",  // bad label name
        "# TYPE a gauge\na one\n",          // bad value
        "# TYPE 1a gauge\n",                // bad name
        "# TYPE a gauges\n",                // bad type
        "# TYPE a gauge\na 1\na 2\n",       // duplicate series
        "# TYPE a gauge\na{x=\"1\" 1\n",    // unterminated labels
        "# TYPE h histogram\nh_bucket 1\n", // bucket without le
        "# TYPE a gauge\na  1\n",           // double space
    ] {
        assert!(parse_prometheus(bad).is_err(), "accepted: {bad:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Tests.

/// Balances of `/v1/account` as (asset → (free, locked)), checking decimals are JSON strings.
fn view_balances(account: &Value) -> BTreeMap<String, (Decimal, Decimal)> {
    let mut out = BTreeMap::new();
    for (asset, b) in account["balances"].as_object().expect("balances object") {
        let dec = |k: &str| -> Decimal {
            b[k].as_str()
                .unwrap_or_else(|| panic!("balances.{asset}.{k} is not a JSON string: {b}"))
                .parse()
                .expect("a decimal")
        };
        let _ = dec("total");
        out.insert(asset.clone(), (dec("free"), dec("locked")));
    }
    out
}

fn sim_balances(sim: &Sim) -> BTreeMap<String, (Decimal, Decimal)> {
    sim.state()
        .balances
        .into_iter()
        .map(|(a, b)| (a, (b.free.normalize(), b.locked.normalize())))
        .collect()
}

fn normalized(m: BTreeMap<String, (Decimal, Decimal)>) -> BTreeMap<String, (Decimal, Decimal)> {
    m.into_iter()
        .map(|(a, (f, l))| (a, (f.normalize(), l.normalize())))
        .collect()
}

/// Sends raw bytes to the server and reads whatever comes back (until close or 2 s).
fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// /healthz, /readyz, /v1/account (matching the sim after trading), 404, 405, and garbage
/// requests that do not take the server down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoints_through_a_real_client() {
    let env = Env::new().await;
    let vars = env.vars();
    let d = DaemonProcess::run(&borrow(&vars)).await;

    let (status, _) = get(&d.url("/healthz")).await;
    assert_eq!(status, 200);
    let body = wait_status(&d.url("/readyz"), 200, "/readyz 200").await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body, serde_json::json!({"ready": true}));

    env.sim.run(300, None).await;
    let deadline = Instant::now() + WAIT;
    let account = loop {
        let (status, body) = get(&d.url("/v1/account")).await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("/v1/account is JSON");
        let state = env.sim.state();
        let orders: BTreeSet<String> = state.open_orders.keys().cloned().collect();
        let view_orders: BTreeSet<String> = v["open_orders"]
            .as_object()
            .expect("open_orders object")
            .keys()
            .cloned()
            .collect();
        if normalized(view_balances(&v)) == sim_balances(&env.sim) && orders == view_orders {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "/v1/account never matched the sim:\n{v:#}\nsim: {:?}",
            sim_balances(&env.sim)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(account["account_id"], env.account.as_str());
    assert_eq!(account["market"], "spot");
    assert!(account["seq"].as_i64().unwrap() > 0);
    assert!(account["positions"].is_object());
    assert!(account["stream"].is_object());
    assert_eq!(account["stream"]["subscribed"], true);
    assert!(
        !account["balances"].as_object().unwrap().is_empty(),
        "the sim has balances"
    );
    for (key, o) in account["open_orders"].as_object().unwrap() {
        for k in ["price", "orig_qty", "executed_qty"] {
            assert!(
                o[k].is_string(),
                "open_orders.{key}.{k} is not a string: {o}"
            );
        }
    }

    let (status, _) = get(&d.url("/nope")).await;
    assert_eq!(status, 404);
    let r = http().post(d.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);

    // Garbage: a 1 MB path, a header line without a colon, binary noise, a half request.
    let addr = d.http.unwrap();
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(1 << 20));
    let answer = raw_exchange(addr, long.as_bytes());
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "long path: {answer:.200}"
    );
    let answer = raw_exchange(addr, b"GET /healthz HTTP/1.1\r\nthis is no header\r\n\r\n");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "bad header: {answer:.200}"
    );
    raw_exchange(addr, &[0xff, 0x00, 0x13, 0x37, b'\r', b'\n', b'\r', b'\n']);
    raw_exchange(addr, b"GET /healthz HTTP/1.1\r\nHost:");
    let (status, _) = get(&d.url("/healthz")).await;
    assert_eq!(status, 200, "the server survives garbage");
    let (status, _) = get(&d.url("/v1/account")).await;
    assert_eq!(status, 200);
    env.cleanup().await;
}

/// /metrics parses strictly, every name is `acctstate_*`, counters move with traffic, and
/// every metric an operator alerts on is exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_and_move_with_traffic() {
    let env = Env::new().await;
    let vars = env.vars();
    let d = DaemonProcess::run(&borrow(&vars)).await;
    wait_status(&d.url("/readyz"), 200, "/readyz 200").await;

    let before = scrape(&d).await;
    for s in &before.samples {
        assert!(s.name.starts_with("acctstate_"), "metric `{}`", s.name);
    }
    for name in before.types.keys() {
        assert!(name.starts_with("acctstate_"), "family `{name}`");
    }
    let events_before = before.sum("acctstate_events_total");
    let changes_before = before.sum("acctstate_changes_total");

    let produced = env.sim.run(500, None).await as f64;
    env.sim.send_raw_text("{not json".into());
    let deadline = Instant::now() + WAIT;
    let after = loop {
        let m = scrape(&d).await;
        if m.sum("acctstate_events_total") >= events_before + produced
            && m.sum("acctstate_changes_total") > changes_before
            && m.sum("acctstate_parse_errors_total") >= 1.0
            && m.sum("acctstate_pg_rows_written_total") > 0.0
            && m.sum("acctstate_redis_published_total") > 0.0
        {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "counters did not move: events {} → {}, changes {} → {}, parse errors {}",
            events_before,
            m.sum("acctstate_events_total"),
            changes_before,
            m.sum("acctstate_changes_total"),
            m.sum("acctstate_parse_errors_total")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for s in &after.samples {
        assert!(s.name.starts_with("acctstate_"), "metric `{}`", s.name);
    }
    // Events by type, changes by kind.
    for t in ["executionReport", "outboundAccountPosition"] {
        assert!(
            after
                .value_with("acctstate_events_total", "type", t)
                .unwrap_or(0.0)
                > 0.0,
            "events of type {t}"
        );
    }
    for k in ["balance", "order", "fill"] {
        assert!(
            after
                .value_with("acctstate_changes_total", "kind", k)
                .unwrap_or(0.0)
                > 0.0,
            "changes of kind {k}"
        );
    }
    assert_eq!(after.sum("acctstate_parse_errors_total"), 1.0);
    let family = |name: &str, kinds: &[&str]| {
        let kind = after
            .types
            .get(name)
            .unwrap_or_else(|| panic!("`{name}` is not exported; exported: {:?}", after.types));
        assert!(kinds.contains(&kind.as_str()), "`{name}` is a {kind}");
    };
    family("acctstate_events_total", &["counter"]);
    family("acctstate_changes_total", &["counter"]);
    family("acctstate_dropped_updates_total", &["counter"]);
    family("acctstate_parse_errors_total", &["counter"]);
    family("acctstate_reconnects_total", &["counter"]);
    family("acctstate_stream_connected", &["gauge"]);
    family("acctstate_postgres_up", &["gauge"]);
    family("acctstate_redis_up", &["gauge"]);
    family("acctstate_pg_queue_depth", &["gauge"]);
    family("acctstate_pg_write_seconds", &["histogram"]);
    family("acctstate_redis_publish_seconds", &["histogram"]);
    family("acctstate_event_lag_seconds", &["histogram"]);
    family("acctstate_build_info", &["gauge"]);
    assert_eq!(after.sum("acctstate_stream_connected"), 1.0);
    assert_eq!(after.sum("acctstate_postgres_up"), 1.0);
    assert_eq!(after.sum("acctstate_redis_up"), 1.0);
    assert_eq!(after.sum("acctstate_reconnects_total"), 0.0);
    // Lag is measured on every event that updates the cache (spot `balanceUpdate` is
    // informational: the `outboundAccountPosition` after it carries the balance).
    let applied_events = after.sum("acctstate_events_total")
        - after
            .value_with("acctstate_events_total", "type", "balanceUpdate")
            .unwrap_or(0.0);
    assert_eq!(
        after.sum("acctstate_events_total"),
        events_before + produced
    );
    assert_eq!(
        after.sum("acctstate_event_lag_seconds_count"),
        applied_events,
        "one lag sample per applied event"
    );
    assert!(
        after.samples("acctstate_event_lag_seconds_bucket").len() >= 2,
        "lag buckets"
    );
    assert!(after.sum("acctstate_pg_write_seconds_count") >= 1.0);
    assert!(after.sum("acctstate_redis_publish_seconds_count") >= 1.0);
    assert_eq!(
        after.value_with("acctstate_build_info", "version", env!("CARGO_PKG_VERSION")),
        Some(1.0)
    );
    env.cleanup().await;
}

/// Postgres cut behind a proxy: /readyz goes 503 naming Postgres, and 200 again after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_postgres() {
    let env = Env::new().await;
    let target = {
        let u = url::Url::parse(&env.db_url).unwrap();
        format!(
            "{}:{}",
            u.host_str().unwrap(),
            u.port_or_known_default().unwrap()
        )
    };
    let proxy = TcpProxy::start(&target).await;
    let mut via = url::Url::parse(&env.db_url).unwrap();
    via.set_port(Some(proxy.addr().port())).unwrap();
    via.set_host(Some("127.0.0.1")).unwrap();
    let via = via.to_string();
    let vars = env.vars_with_db(&via);
    let d = DaemonProcess::run(&borrow(&vars)).await;
    wait_status(&d.url("/readyz"), 200, "ready").await;

    proxy.cut();
    let body = wait_status(&d.url("/readyz"), 503, "not ready while Postgres is cut").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], false);
    let reasons = v["reasons"].as_array().expect("reasons");
    assert!(
        reasons.iter().any(|r| r
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
            .contains("postgres")),
        "{v}"
    );
    let (status, _) = get(&d.url("/healthz")).await;
    assert_eq!(status, 200, "alive while not ready");

    proxy.restore();
    let body = wait_status(&d.url("/readyz"), 200, "ready again after the restore").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        serde_json::json!({"ready": true})
    );
    env.cleanup().await;
}

/// `http.token` guards /v1/*, not the health endpoints, and is never logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_guards_v1_only() {
    const TOKEN: &str = "s3cret-token-7781";
    let env = Env::new().await;
    let mut vars = env.vars();
    set_var(&mut vars, "ACCTSTATE__HTTP__TOKEN", TOKEN);
    let d = DaemonProcess::run(&borrow(&vars)).await;
    wait_status(&d.url("/readyz"), 200, "ready").await;

    let c = http();
    let account = d.url("/v1/account");
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(c.get(&account).send().await.unwrap()), 401);
    assert_eq!(
        status(c.get(&account).bearer_auth("wrong").send().await.unwrap()),
        401
    );
    assert_eq!(
        status(
            c.get(&account)
                .header("authorization", TOKEN)
                .send()
                .await
                .unwrap()
        ),
        401,
        "the token without `Bearer`"
    );
    assert_eq!(
        status(
            c.get(&account)
                .header("authorization", format!("Bearer {TOKEN}x"))
                .send()
                .await
                .unwrap()
        ),
        401
    );
    let r = c
        .get(&account)
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["account_id"], env.account.as_str());
    assert_eq!(status(c.get(d.url("/healthz")).send().await.unwrap()), 200);
    assert_eq!(status(c.get(d.url("/readyz")).send().await.unwrap()), 200);
    assert_eq!(status(c.get(d.url("/metrics")).send().await.unwrap()), 200);

    d.sigterm();
    let mut d = d;
    let exit = d.wait_with_deadline(Duration::from_secs(15)).await;
    assert!(exit.success(), "{exit}");
    assert_json_logs(&d.stdout(), &[TOKEN, DEMO_API_SECRET]);
    env.cleanup().await;
}

/// The parsed `check --json` report; asserts the process answered 0 or 1 with JSON.
/// `acctstate check`: 0 with every required check ok; 1 with a hint for each failure; never
/// a secret in its output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_and_fails_with_hints() {
    const PG_PASSWORD: &str = "pgPassw0rd-4242";
    const REDIS_PASSWORD: &str = "redisPassw0rd-4242";
    let env = Env::new().await;
    // Trust auth ignores the password: the URL works and its password must never be shown.
    let mut with_pw = url::Url::parse(&env.db_url).unwrap();
    with_pw.set_password(Some(PG_PASSWORD)).unwrap();
    let with_pw = with_pw.to_string();
    // `check` audits migrations: apply them first.
    let migrate = run_to_end(&["migrate"], &[("DATABASE_URL", with_pw.as_str())], WAIT).await;
    assert_eq!(migrate.code, Some(0), "{}", migrate.stderr);
    let base = env.vars_with_db(&with_pw);
    let secrets = [DEMO_API_SECRET, DEMO_API_KEY, PG_PASSWORD, REDIS_PASSWORD];
    let no_secret = |out: &Output| {
        for s in secrets {
            assert!(
                !out.stdout.contains(s) && !out.stderr.contains(s),
                "a secret in check's output:\n{}\n{}",
                out.stdout,
                out.stderr
            );
        }
    };

    let ok = run_to_end(&["check", "--json"], &borrow(&base), WAIT).await;
    no_secret(&ok);
    let report = check_report(&ok);
    assert_eq!(ok.code, Some(0), "{report:#}");
    assert_eq!(report["ok"], true);
    for c in report["checks"].as_array().unwrap() {
        if c["required"] == true {
            assert_eq!(c["status"], "ok", "required check not ok: {c}");
        }
    }
    for name in [
        "config",
        "postgres",
        "migrations",
        "redis",
        "binance_rest",
        "api_key",
        "user_data_stream",
    ] {
        assert_eq!(check_named(&report, name)["status"], "ok", "{name}");
    }
    // The table for people says the same.
    let table = run_to_end(&["check"], &borrow(&base), WAIT).await;
    assert_eq!(table.code, Some(0), "{}", table.stdout);
    assert!(table.stdout.contains("all required checks passed"));
    no_secret(&table);

    let closed = free_port();
    let cases: Vec<(&str, &str, String)> = vec![
        (
            "postgres",
            "DATABASE_URL",
            format!("postgres://postgres:{PG_PASSWORD}@127.0.0.1:{closed}/x"),
        ),
        (
            "redis",
            "REDIS_URL",
            format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{closed}"),
        ),
        (
            "binance_rest",
            "ACCTSTATE__BINANCE__REST_URL",
            format!("http://127.0.0.1:{closed}"),
        ),
        (
            "api_key",
            "BINANCE_API_SECRET",
            "0000wrongSecret0000000000000000000000000000000000000000000000000".to_owned(),
        ),
    ];
    for (failing, var, value) in cases {
        let mut vars = base.clone();
        set_var(&mut vars, var, &value);
        let out = run_to_end(&["check", "--json"], &borrow(&vars), WAIT).await;
        no_secret(&out);
        assert!(
            !out.stdout.contains("0000wrongSecret"),
            "the wrong secret is shown"
        );
        let report = check_report(&out);
        assert_eq!(out.code, Some(1), "{failing}: {report:#}");
        assert_eq!(report["ok"], false);
        let c = check_named(&report, failing);
        assert_eq!(c["status"], "fail", "{failing}: {c}");
        assert!(
            c["hint"].as_str().is_some_and(|h| !h.is_empty()),
            "{failing} has no hint: {c}"
        );
        if failing == "api_key" {
            assert!(
                c["detail"].as_str().unwrap_or_default().contains("-1022"),
                "the sim's -1022 is reported: {c}"
            );
        }
    }
}

/// Bad configuration: exit 2, one stderr line naming the key, before anything connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_exits_2_naming_the_key() {
    // Anything the process would connect to is this listener: it must see no connection.
    let tripwire = TcpListener::bind("127.0.0.1:0").unwrap();
    tripwire.set_nonblocking(true).unwrap();
    let port = tripwire.local_addr().unwrap().port();
    let rest = format!("http://127.0.0.1:{port}");
    let ws = format!("ws://127.0.0.1:{port}/ws-api/v3");
    let pg = format!("postgres://postgres@127.0.0.1:{port}/x");
    let redis = format!("redis://127.0.0.1:{port}");
    let base: Vec<(&str, &str)> = vec![
        ("ACCTSTATE__BINANCE__REST_URL", &rest),
        ("ACCTSTATE__BINANCE__WS_URL", &ws),
        ("BINANCE_API_KEY", DEMO_API_KEY),
        ("BINANCE_API_SECRET", DEMO_API_SECRET),
        ("DATABASE_URL", &pg),
        ("REDIS_URL", &redis),
        ("ACCTSTATE__HTTP__LISTEN", "127.0.0.1:0"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let wrong_type = dir.path().join("wrong_type.toml");
    std::fs::write(&wrong_type, "[postgres]\nmax_connections = \"many\"\n").unwrap();
    let wrong_type = wrong_type.to_str().unwrap().to_owned();

    // (extra args, variable, value, words the message must hold)
    let cases: Vec<(Vec<&str>, &str, &str, Vec<&str>)> = vec![
        (
            vec![],
            "ACCTSTATE__ACCOUNT_ID",
            "bad id",
            vec!["account_id"],
        ),
        (
            vec![],
            "ACCTSTATE__BINANCE__MARKET",
            "coinm",
            vec!["binance.market"],
        ),
        (
            vec![],
            "ACCTSTATE__BINANCE__REST_URL",
            "ftp://x",
            vec!["binance.rest_url"],
        ),
        (
            vec![],
            "ACCTSTATE__BINANCE__RECV_WINDOW_MS",
            "70000",
            vec!["binance.recv_window_ms"],
        ),
        (
            vec![],
            "ACCTSTATE__BINANCE__USDM_EVENTS",
            "ORDER_TRADE_UPDATE/ACCOUNT_UPDATE",
            vec!["binance.usdm_events", "listenKeyExpired"],
        ),
        (
            vec![],
            "ACCTSTATE__BINANCE__USDM_EVENTS",
            "ORDER_TRADE_UPDATE/listenKeyExpired/ORDER_UPDATE",
            vec!["binance.usdm_events", "ORDER_UPDATE"],
        ),
        (vec![], "DATABASE_URL", "mysql://x", vec!["postgres.url"]),
        (
            vec![],
            "ACCTSTATE__POSTGRES__MAX_CONNECTIONS",
            "0",
            vec!["postgres.max_connections"],
        ),
        (vec![], "REDIS_URL", "http://x", vec!["redis.url"]),
        (vec![], "PORT", "notaport", vec!["http.listen"]),
        (vec![], "ACCTSTATE__LOG__FORMAT", "xml", vec!["log.format"]),
        (
            vec![],
            "ACCTSTATE__SHUTDOWN__DRAIN_TIMEOUT_SECS",
            "0",
            vec!["shutdown.drain_timeout_secs"],
        ),
        (
            vec!["--config", "/nonexistent.toml"],
            "",
            "",
            vec!["--config", "/nonexistent.toml"],
        ),
        (
            vec!["--config", &wrong_type],
            "",
            "",
            vec!["postgres.max_connections"],
        ),
        (
            vec![],
            "BINANCE_API_KEY",
            "",
            vec!["binance.api_key", "BINANCE_API_KEY"],
        ),
    ];
    let expect_exit_2 = |what: String, out: &Output, words: &[&str]| {
        assert_eq!(
            out.code,
            Some(2),
            "{what}: exit code\nstdout: {}\nstderr: {}",
            out.stdout,
            out.stderr
        );
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{what}: one stderr line: {:?}", out.stderr);
        for w in words {
            assert!(
                lines[0].contains(w),
                "{what}: `{w}` not named: {}",
                lines[0]
            );
        }
        assert!(
            !out.stderr.contains(DEMO_API_SECRET) && !out.stdout.contains(DEMO_API_SECRET),
            "{what}: the secret is shown"
        );
        assert!(
            out.elapsed < Duration::from_secs(5),
            "{what}: took {:?}",
            out.elapsed
        );
    };
    for (args, var, value, words) in &cases {
        let mut vars = base.clone();
        if !var.is_empty() {
            vars.retain(|(k, _)| k != var);
            if !value.is_empty() {
                vars.push((var, value));
            }
        }
        let mut argv = args.clone();
        argv.push("run");
        let out = run_to_end(&argv, &vars, WAIT).await;
        expect_exit_2(format!("{argv:?} {var}={value}"), &out, words);
    }
    // Both credentials missing: both named in the one line.
    let vars: Vec<(&str, &str)> = base
        .iter()
        .filter(|(k, _)| !k.starts_with("BINANCE_"))
        .cloned()
        .collect();
    let out = run_to_end(&["run"], &vars, WAIT).await;
    expect_exit_2(
        "run without credentials".into(),
        &out,
        &[
            "binance.api_key",
            "BINANCE_API_KEY",
            "binance.api_secret",
            "BINANCE_API_SECRET",
        ],
    );
    // Other commands validate the same way.
    for cmd in ["check", "migrate"] {
        let mut vars = base.clone();
        vars.push(("ACCTSTATE__LOG__FORMAT", "xml"));
        let out = run_to_end(&[cmd], &vars, WAIT).await;
        expect_exit_2(
            format!("{cmd} with a bad log.format"),
            &out,
            &["log.format"],
        );
    }
    // Usage errors.
    let out = run_to_end(&["frobnicate"], &base, WAIT).await;
    assert_eq!(out.code, Some(2), "unknown subcommand: {}", out.stderr);
    let out = run_to_end(&[], &base, WAIT).await;
    assert_eq!(out.code, Some(2), "no subcommand: {}", out.stderr);
    let out = run_to_end(&["run", "--bogus-flag"], &base, WAIT).await;
    assert_eq!(out.code, Some(2), "unknown flag: {}", out.stderr);

    match tripwire.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("something connected before the configuration was valid: {other:?}"),
    }
}

/// SIGTERM in the middle of a fast burst: exit 0 within the drain timeout, and Postgres holds
/// every change the daemon made, without a gap, up to the last seq it published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_burst_drains_every_change() {
    let env = Env::new().await;
    let vars = env.vars();
    let mut d = DaemonProcess::run(&borrow(&vars)).await;
    wait_status(&d.url("/readyz"), 200, "ready").await;

    let trader = {
        let sim = env.sim.clone();
        tokio::spawn(async move { sim.run(50_000, None).await })
    };
    // Mid-burst: once the journal holds 2,000 rows, with the sim still trading.
    eventually(WAIT, "2,000 journal rows", || async {
        journal_count(&env.pool, &env.account).await >= 2_000
    })
    .await;
    assert!(!trader.is_finished(), "the burst is still going on");
    let metrics = scrape(&d).await;
    let changes_at_signal = metrics.sum("acctstate_changes_total");
    let rows_at_signal = journal_count(&env.pool, &env.account).await;
    eprintln!(
        "at SIGTERM: {changes_at_signal} changes made, {rows_at_signal} journal rows, pg queue {}",
        metrics.sum("acctstate_pg_queue_depth")
    );
    let signalled = Instant::now();
    d.sigterm();
    let exit = d.wait_with_deadline(Duration::from_secs(20)).await;
    let took = signalled.elapsed();
    env.sim.shutdown();
    let _ = trader.await;
    assert!(
        exit.success(),
        "exit {exit}; last lines: {:#?}",
        d.stdout().iter().rev().take(10).collect::<Vec<_>>()
    );
    assert!(took < Duration::from_secs(10), "drain took {took:?}");
    eprintln!("exited after {took:?}");

    let stopped = d
        .log_line("cache actor stopped")
        .expect("`cache actor stopped` logged");
    let last_seq = stopped["seq"].as_i64().expect("its seq");
    assert!(d.log_line("drained").is_some(), "`drained` logged");

    let (min, max, count): (Option<i64>, Option<i64>, i64) = sqlx::query_as(
        "SELECT min(seq), max(seq), count(*) FROM account_changes WHERE account_id = $1",
    )
    .bind(&env.account)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    let (min, max) = (min.unwrap(), max.unwrap());
    assert!(
        count as f64 >= changes_at_signal && count >= 2_000,
        "{count} journal rows, {changes_at_signal} changes at the signal"
    );
    assert_eq!(max, last_seq, "the journal ends at the cache's last seq");
    assert_eq!(count, max - min + 1, "no gap in account_changes.seq");

    let redis = redis_client().await;
    let published: Option<i64> = redis
        .get(format!("{}:{}:seq", env.prefix, env.account))
        .await
        .unwrap();
    let _ = redis.quit().await;
    assert_eq!(published, Some(last_seq), "Redis P:seq is the last seq");
    assert_json_logs(&d.stdout(), &[DEMO_API_SECRET]);
    env.cleanup().await;
}

/// Every stdout line of a run (start, trading, a malformed frame, a reconnect, the drain) is
/// one JSON object with timestamp, level, target and message, and none holds a secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_json_lines_without_secrets() {
    let env = Env::new().await;
    let vars = env.vars();
    let mut d = DaemonProcess::run(&borrow(&vars)).await;
    wait_status(&d.url("/readyz"), 200, "ready").await;
    env.sim.run(200, None).await;
    env.sim.send_raw_text("{not json".into());
    eventually(WAIT, "the malformed frame is logged", || async {
        d.log_line("stream: malformed frame skipped").is_some()
    })
    .await;
    env.sim.drop_connections();
    eventually(WAIT, "the reconnect is logged", || async {
        d.log_line("stream: disconnected, reconnecting").is_some()
    })
    .await;
    wait_status(&d.url("/readyz"), 200, "ready again").await;
    d.sigterm();
    let exit = d.wait_with_deadline(Duration::from_secs(15)).await;
    assert!(exit.success(), "{exit}");
    let lines = d.stdout();
    assert_json_logs(&lines, &[DEMO_API_SECRET, DEMO_API_KEY]);
    let levels: BTreeSet<String> = d
        .logs()
        .iter()
        .map(|v| v["level"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        levels.contains("INFO") && levels.contains("WARN"),
        "{levels:?}"
    );
    assert!(d.stderr().is_empty(), "stderr: {:?}", d.stderr());
    env.cleanup().await;
}

/// A daemon whose Postgres goes through a proxy the test can cut.
async fn daemon_behind_proxy(
    env: &Env,
    extra: &[(&'static str, &str)],
) -> (DaemonProcess, TcpProxy) {
    let u = url::Url::parse(&env.db_url).unwrap();
    let proxy = TcpProxy::start(&format!(
        "{}:{}",
        u.host_str().unwrap(),
        u.port_or_known_default().unwrap()
    ))
    .await;
    let mut via = u.clone();
    via.set_host(Some("127.0.0.1")).unwrap();
    via.set_port(Some(proxy.addr().port())).unwrap();
    let via = via.to_string();
    let mut vars = env.vars_with_db(&via);
    for (k, v) in extra {
        set_var(&mut vars, k, v);
    }
    let d = DaemonProcess::run(&borrow(&vars)).await;
    wait_status(&d.url("/readyz"), 200, "ready").await;
    (d, proxy)
}

/// Changes the daemon made that the journal does not hold yet.
async fn backlog(d: &DaemonProcess, env: &Env) -> f64 {
    let made = scrape(d).await.sum("acctstate_changes_total");
    made - journal_count(&env.pool, &env.account).await as f64
}

/// Thousands of changes queued behind a Postgres outage, Postgres back, SIGTERM at once while
/// the sim still trades: every change is written, without a gap, within the drain timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_thousands_queued_behind_an_outage() {
    let env = Env::new().await;
    let (mut d, proxy) = daemon_behind_proxy(&env, &[]).await;
    let trader = {
        let sim = env.sim.clone();
        tokio::spawn(async move { sim.run(100_000, Some(20_000)).await })
    };
    eventually(WAIT, "500 journal rows", || async {
        journal_count(&env.pool, &env.account).await >= 500
    })
    .await;
    proxy.cut();
    eventually(WAIT, "3,000 changes queued", || async {
        backlog(&d, &env).await >= 3_000.0
    })
    .await;
    proxy.restore();
    assert!(!trader.is_finished(), "the burst is still going on");
    let queued = backlog(&d, &env).await;
    let signalled = Instant::now();
    d.sigterm();
    let exit = d.wait_with_deadline(Duration::from_secs(20)).await;
    let took = signalled.elapsed();
    env.sim.shutdown();
    let _ = trader.await;
    assert!(
        exit.success(),
        "exit {exit}; last lines: {:#?}",
        d.stdout().iter().rev().take(10).collect::<Vec<_>>()
    );
    assert!(took < Duration::from_secs(10), "drain took {took:?}");
    eprintln!("{queued} changes queued at SIGTERM; exited after {took:?}");
    let last_seq = d.log_line("cache actor stopped").expect("logged")["seq"]
        .as_i64()
        .unwrap();
    let (min, max, count): (i64, i64, i64) = sqlx::query_as(
        "SELECT min(seq), max(seq), count(*) FROM account_changes WHERE account_id = $1",
    )
    .bind(&env.account)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(max, last_seq, "the journal ends at the cache's last seq");
    assert_eq!(count, max - min + 1, "no gap in account_changes.seq");
    env.cleanup().await;
}

/// Postgres stays down: SIGTERM waits for the drain timeout, then exits 1 saying what was not
/// written; a second signal during the drain exits at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_and_second_signal() {
    let env = Env::new().await;
    // Two daemons on the same sim, journal and prefix would mix: give each its own account.
    let env2 = Env {
        sim: env.sim.clone(),
        db_url: env.db_url.clone(),
        pool: env.pool.clone(),
        prefix: env.prefix.clone(),
        account: unique_account(),
    };
    let (mut timed, proxy1) =
        daemon_behind_proxy(&env, &[("ACCTSTATE__SHUTDOWN__DRAIN_TIMEOUT_SECS", "2")]).await;
    let (mut twice, proxy2) = daemon_behind_proxy(&env2, &[]).await;
    env.sim.run(200, None).await;
    for (d, e) in [(&timed, &env), (&twice, &env2)] {
        eventually(WAIT, "journal caught up", || async {
            backlog(d, e).await == 0.0 && journal_count(&e.pool, &e.account).await > 0
        })
        .await;
    }
    proxy1.cut();
    proxy2.cut();
    env.sim.run(200, None).await;
    for (d, e) in [(&timed, &env), (&twice, &env2)] {
        eventually(WAIT, "changes queued", || async {
            let m = scrape(d).await;
            m.sum("acctstate_postgres_up") == 0.0 && backlog(d, e).await > 0.0
        })
        .await;
    }

    let signalled = Instant::now();
    timed.sigterm();
    twice.sigterm();
    eventually(WAIT, "the second daemon drains", || async {
        twice
            .log_line("draining: writing every queued change")
            .is_some()
    })
    .await;
    twice.sigterm();
    let exit = twice.wait_with_deadline(Duration::from_secs(5)).await;
    assert_eq!(exit.code(), Some(1), "second signal: {exit}");
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "the second signal exits at once, not after the drain timeout: {:?}",
        signalled.elapsed()
    );
    assert!(twice.log_line("second signal: exiting at once").is_some());

    let exit = timed.wait_with_deadline(Duration::from_secs(10)).await;
    let took = signalled.elapsed();
    assert_eq!(exit.code(), Some(1), "drain timed out: {exit}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "exit after the 2 s drain timeout, took {took:?}"
    );
    let stderr = timed.stderr().join("\n");
    assert!(stderr.contains("drain timed out"), "stderr: {stderr}");
    assert_json_logs(&timed.stdout(), &[DEMO_API_SECRET]);
    env.cleanup().await;
    env2.cleanup().await;
}
