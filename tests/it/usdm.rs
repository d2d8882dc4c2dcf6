//! The USD-M user-data stream as production serves it (SPEC §1.2), through the daemon as a
//! process: the query form with the `events` allow list, every event type the sim emits heard by
//! the default list and a left-out type never heard, the listenKey absent from every log line at
//! debug and from `check`, and the deaf-stream signal — fired against production's deaf path
//! form, silent on a quiet or a healthy account.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use acctstate::sim::{Sim, SimMarket};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;
use crate::procs::*;

/// A proxy in front of the sim that rewrites the daemon's WebSocket upgrade from
/// `/private/ws?listenKey=K&events=…` to the path form `/private/ws/K`, so the daemon meets
/// exactly what production does with that form (the sim accepts it and delivers nothing).
async fn path_form_proxy(sim: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match client.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let key = text
                    .split_once("listenKey=")
                    .and_then(|(_, rest)| rest.split(['&', ' ']).next())
                    .unwrap_or("")
                    .to_owned();
                let first = text.lines().next().unwrap_or("");
                let rewritten = text.replacen(first, &format!("GET /private/ws/{key} HTTP/1.1"), 1);
                let Ok(mut upstream) = TcpStream::connect(sim).await else {
                    return;
                };
                if upstream.write_all(rewritten.as_bytes()).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    addr
}

/// Every event type a client that asks for all of them receives while the sim trades `n`
/// events, read on its own stream-mode socket for the sim's current listenKey.
async fn trade_and_observe(sim: &Sim, n: usize) -> BTreeSet<String> {
    let key = sim.listen_key().expect("a listenKey");
    let url = format!("{}/private/stream?streams={key}", sim.ws_url());
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("observer connects");
    sim.run(n, Some(2_000)).await;
    let mut types = BTreeSet::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_millis(500), ws.next()).await
    {
        if let Ok(v) = serde_json::from_str::<Value>(msg.to_text().unwrap_or(""))
            && let Some(t) = v["data"]["e"].as_str()
        {
            types.insert(t.to_owned());
        }
    }
    types
}

fn heard(m: &Exposition) -> BTreeSet<String> {
    m.samples("acctstate_events_total")
        .into_iter()
        .filter(|s| s.value > 0.0)
        .filter_map(|s| s.labels.get("type").cloned())
        .collect()
}

/// The default list hears every event type the sim emits; a list without `TRADE_LITE` never
/// hears one (Binance's allow list, served by the sim); the listenKey appears in no log line of
/// a run at debug, nor in `check`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_list_is_an_allow_list_and_the_listen_key_stays_secret() {
    let env = Env::of(SimMarket::Usdm).await;
    let mut vars = env.vars();
    set_var(&mut vars, "RUST_LOG", "debug");
    let mut all = DaemonProcess::run(&borrow(&vars)).await;
    wait_status(&all.url("/readyz"), 200, "ready").await;

    let (db2, _pool2) = fresh_db().await;
    let other = unique_account();
    let mut vars2 = env.vars_with_db(&db2);
    set_var(&mut vars2, "ACCTSTATE__ACCOUNT_ID", &other);
    set_var(
        &mut vars2,
        "ACCTSTATE__BINANCE__USDM_EVENTS",
        "ACCOUNT_UPDATE/ORDER_TRADE_UPDATE/ALGO_UPDATE/listenKeyExpired",
    );
    let mut some = DaemonProcess::run(&borrow(&vars2)).await;
    wait_status(&some.url("/readyz"), 200, "ready").await;

    let emitted = trade_and_observe(&env.sim, 1_500).await;
    assert!(
        emitted.contains("TRADE_LITE") && emitted.contains("ORDER_TRADE_UPDATE"),
        "the sim emits these: {emitted:?}"
    );
    eventually(
        WAIT,
        "the default list hears every type the sim emits",
        || async { emitted.is_subset(&heard(&scrape(&all).await)) },
    )
    .await;
    eventually(WAIT, "the short list hears its own types", || async {
        let h = heard(&scrape(&some).await);
        h.contains("ORDER_TRADE_UPDATE") && h.contains("ACCOUNT_UPDATE")
    })
    .await;
    assert!(
        !heard(&scrape(&some).await).contains("TRADE_LITE"),
        "a type left out of the list is never delivered"
    );
    let key = env.sim.listen_key().expect("a listenKey");
    let connected = all
        .logs()
        .into_iter()
        .find(|l| l["event"] == "stream_connected")
        .expect("stream_connected logged");
    assert_eq!(
        connected["url"]
            .as_str()
            .map(|u| u.contains("/private/ws?listenKey=<listenKey>&events=ACCOUNT_UPDATE/")),
        Some(true),
        "{connected}"
    );

    // Expiry on a connected stream: noticed through `listenKeyExpired`, a new key, heard again.
    env.sim.expire_listen_key();
    eventually(WAIT, "a new listenKey after expiry", || async {
        env.sim.listen_key().is_some_and(|k| k != key)
    })
    .await;
    wait_status(&all.url("/readyz"), 200, "ready again").await;

    let out = run_to_end(
        &["check", "--json"],
        &borrow(&vars),
        Duration::from_secs(60),
    )
    .await;
    let report = check_report(&out);
    let stream = check_named(&report, "user_data_stream");
    assert_eq!(stream["status"], "ok", "{report:#}");
    let detail = stream["detail"].as_str().unwrap_or_default().to_owned();
    assert!(
        detail.contains("/private/ws?listenKey=<listenKey>&events=")
            && detail.contains("listenKeyExpired"),
        "{detail}"
    );

    for d in [&mut all, &mut some] {
        d.sigterm();
        let exit = d.wait_with_deadline(Duration::from_secs(15)).await;
        assert!(exit.success(), "{exit}");
    }
    let new_key = env.sim.listen_key();
    let lines = all.stdout();
    assert!(
        lines.iter().any(|l| l.contains("\"level\":\"DEBUG\"")),
        "the run logged at debug"
    );
    let mut secrets = vec![key.as_str()];
    secrets.extend(new_key.as_deref());
    assert_json_logs(&lines, &secrets);
    assert_json_logs(&some.stdout(), &secrets);
    assert!(!out.stdout.contains(&key) && !out.stderr.contains(&key));
    env.cleanup().await;
}

/// What the deaf-stream signal looks at, from a daemon's metrics.
async fn reconciliations(d: &DaemonProcess) -> f64 {
    scrape(d).await.sum("acctstate_reconciliations_total")
}

/// Production's deaf form: the daemon connects, is ready, hears nothing; reconciliations keep
/// correcting orders and fills; the signal fires (error line, counter) and the daemon reconnects
/// with a fresh listenKey.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deaf_stream_is_found_and_reconnected_with_a_fresh_key() {
    let env = Env::of(SimMarket::Usdm).await;
    let proxy = path_form_proxy(env.sim.addr()).await;
    let mut vars = env.vars();
    set_var(
        &mut vars,
        "ACCTSTATE__BINANCE__WS_URL",
        &format!("ws://{proxy}"),
    );
    set_var(
        &mut vars,
        "ACCTSTATE__BINANCE__RECONCILE_INTERVAL_SECS",
        "1",
    );
    let mut d = DaemonProcess::run(&borrow(&vars)).await;
    wait_status(
        &d.url("/readyz"),
        200,
        "ready (a deaf stream looks healthy)",
    )
    .await;
    let first_key = env.sim.listen_key().expect("a listenKey");
    let trader = env.sim.clone();
    let trading = tokio::spawn(async move { trader.run(usize::MAX, Some(200)).await });
    eventually(Duration::from_secs(60), "stream_deaf logged", || async {
        d.logs()
            .iter()
            .any(|l| l["event"] == "stream_deaf" && l["level"] == "ERROR")
    })
    .await;
    assert!(scrape(&d).await.sum("acctstate_stream_deaf_total") >= 1.0);
    eventually(WAIT, "a fresh listenKey", || async {
        env.sim.listen_key().is_some_and(|k| k != first_key)
    })
    .await;
    trading.abort();
    assert_eq!(env.sim.subscriber_count(), 0, "the sim delivered to nobody");
    d.sigterm();
    let _ = d.wait_with_deadline(Duration::from_secs(15)).await;
    env.cleanup().await;
}

/// A quiet account, a single silent change and a busy healthy account are not deaf.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_or_healthy_stream_is_not_called_deaf() {
    let env = Env::of(SimMarket::Usdm).await;
    let mut vars = env.vars();
    set_var(
        &mut vars,
        "ACCTSTATE__BINANCE__RECONCILE_INTERVAL_SECS",
        "1",
    );
    let mut d = DaemonProcess::run(&borrow(&vars)).await;
    wait_status(&d.url("/readyz"), 200, "ready").await;
    let after = |n: f64| {
        let d = &d;
        async move {
            let start = reconciliations(d).await;
            eventually(WAIT, "reconciliations ran", || async {
                reconciliations(d).await >= start + n
            })
            .await;
        }
    };
    // Quiet: nothing happens, nothing is heard, nothing is corrected.
    after(3.0).await;
    // One change the stream never announced: one reconciliation corrects it, the next finds
    // nothing to correct.
    env.sim.silent_change();
    after(3.0).await;
    assert!(
        scrape(&d).await.sum("acctstate_resync_corrections_total") >= 1.0,
        "the silent change was corrected"
    );
    // Busy and healthy.
    let trader = env.sim.clone();
    let trading = tokio::spawn(async move { trader.run(usize::MAX, Some(300)).await });
    after(3.0).await;
    trading.abort();
    assert_eq!(scrape(&d).await.sum("acctstate_stream_deaf_total"), 0.0);
    assert!(!d.logs().iter().any(|l| l["event"] == "stream_deaf"));
    d.sigterm();
    let _ = d.wait_with_deadline(Duration::from_secs(15)).await;
    env.cleanup().await;
}
