//! The stream's long timers under paused time: the USD-M listenKey keepalive (every 30 min)
//! and the rotation before Binance's 24-hour cut, with the default settings, over a simulated
//! day. The daemon and the simulated exchange share one current-thread runtime on loopback, and
//! there is no Postgres or Redis, so the clock only jumps when every socket is quiet.

use std::time::Duration;

use acctstate::sim::{DEMO_API_KEY, DEMO_API_SECRET, Sim, SimConfig, SimMarket};
use tokio_util::sync::CancellationToken;

use crate::common::settings;

#[tokio::test(start_paused = true)]
async fn usdm_keepalive_and_rotation_over_a_paused_day() {
    let sim = Sim::start(SimConfig::new(SimMarket::Usdm)).await.unwrap();
    let (rest_url, ws_url) = (sim.rest_url(), sim.ws_url());
    let settings = settings(&[
        ("ACCTSTATE__BINANCE__MARKET", "usdm"),
        ("ACCTSTATE__BINANCE__REST_URL", &rest_url),
        ("ACCTSTATE__BINANCE__WS_URL", &ws_url),
        ("BINANCE_API_KEY", DEMO_API_KEY),
        ("BINANCE_API_SECRET", DEMO_API_SECRET),
        ("ACCTSTATE__HTTP__LISTEN", "127.0.0.1:0"),
        // Only the periodic REST reconciliation is switched off, to keep the day quiet.
        ("ACCTSTATE__BINANCE__RECONCILE_INTERVAL_SECS", "0"),
    ]);
    let cancel = CancellationToken::new();
    let daemon = tokio::spawn(acctstate::app::run_daemon(settings, cancel.clone(), None));
    sim.wait_for_subscriber(Duration::from_secs(30))
        .await
        .unwrap();
    let connects_at_start = sim.connections_opened();

    // 25 hours pass: 50 keepalives are due (one every 30 min), and one rotation (after 23 h).
    for _ in 0..25 * 6 {
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
    let keepalives = sim.listen_key_keepalives();
    assert!(
        (45..=55).contains(&keepalives),
        "expected ~50 keepalives in 25 h, got {keepalives}"
    );
    let connects = sim.connections_opened() - connects_at_start;
    assert_eq!(
        connects, 1,
        "exactly one rotation in 25 h, got {connects} new connections"
    );

    cancel.cancel();
    daemon.await.unwrap().unwrap();
}
