//! The spine end to end against real Postgres and Redis: cache actor → Postgres write-behind and
//! Redis publisher, including replays, snapshots, late subscribers, outages and the drain.

use std::time::Duration;

use acctstate::account::{
    AccountState, AccountView, Balance, BalancePatch, Change, Entity, Kind, Market, OrderStatus,
    Snapshot, Source, Update,
};
use acctstate::app::Core;
use fred::interfaces::{ClientLike, HashesInterface, KeysInterface};
use sqlx::PgPool;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(30);
const DRAIN: Duration = Duration::from_secs(10);

/// A Core on Postgres `pg` and/or Redis `(url, prefix)`, for USD-M account `account`.
async fn start_core(pg: Option<&str>, redis: Option<(&str, &str)>, account: &str) -> Core {
    let mut vars = vec![
        ("ACCTSTATE__ACCOUNT_ID", account),
        ("ACCTSTATE__BINANCE__MARKET", "usdm"),
    ];
    if let Some(url) = pg {
        vars.push(("DATABASE_URL", url));
    }
    if let Some((url, prefix)) = redis {
        vars.push(("REDIS_URL", url));
        vars.push(("ACCTSTATE__REDIS__PREFIX", prefix));
    }
    Core::start(&settings(&vars), false)
        .await
        .expect("core starts")
}

/// A cache model fed the same updates as the Core, to know which changes it must emit.
fn reference(core: &Core, account: &str) -> AccountState {
    AccountState::new(account, Market::Usdm, core.first_seq)
}

/// Feeds `updates` with `apply_and_wait`, checking each change count against `model`; returns
/// the changes made, in seq order.
async fn feed(core: &Core, model: &mut AccountState, updates: &[(i64, Update)]) -> Vec<Change> {
    let mut all = Vec::new();
    for (t, u) in updates {
        let expected = model.apply(*t, u.clone());
        let n = core
            .cache
            .apply_and_wait(*t, u.clone())
            .await
            .expect("cache answers");
        assert_eq!(n, expected.len(), "change count of {u:?}");
        all.extend(expected);
    }
    all
}

/// Waits until the journal holds `n` rows for `account`.
async fn wait_journal(pool: &PgPool, account: &str, n: usize) {
    eventually(WAIT, &format!("{n} journal rows"), || async {
        journal_count(pool, account).await == n as i64
    })
    .await;
}

/// Asserts that Postgres holds exactly `changes`: the journal row for row, the current state
/// at the latest seq of each key, and that this state equals the cache's `view`.
async fn assert_pg_holds(pool: &PgPool, account: &str, changes: &[Change], view: &AccountView) {
    let rows = journal(pool, account).await;
    let expected = expected_journal(changes);
    assert_eq!(rows.len(), expected.len(), "journal length");
    for (got, want) in rows.iter().zip(&expected) {
        assert_eq!(got, want, "journal row");
    }
    let state = PgState::read(pool, account).await;
    let want = PgState::expected(changes);
    assert_eq!(state.balances, want.balances, "balances (values and seq)");
    assert_eq!(
        state.positions, want.positions,
        "positions (values and seq)"
    );
    assert_eq!(state.orders, want.orders, "orders (values and seq)");
    assert_eq!(state.fills, want.fills, "fills (values and seq)");
    state.assert_matches_view(view);
}

fn count_kind(changes: &[Change], kind: Kind) -> usize {
    changes.iter().filter(|c| c.kind() == kind).count()
}

/// The updates land in every table with the fed values; the journal holds exactly the seqs
/// the cache emitted; current-state rows carry the latest seq of their key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_land_in_every_table() {
    let (url, pool) = fresh_db().await;
    let account = unique_account();
    let core = start_core(Some(&url), None, &account).await;
    let mut model = reference(&core, &account);
    let changes = feed(&core, &mut model, &trading_updates(1500)).await;
    for kind in [Kind::Balance, Kind::Position, Kind::Order, Kind::Fill] {
        assert!(count_kind(&changes, kind) >= 50, "too few {kind:?} changes");
    }
    let view = core.cache.view().await.unwrap();
    assert_eq!(view, model.view());
    assert_eq!(view.seq, changes.last().unwrap().seq);
    assert_eq!(changes[0].seq, core.first_seq);
    wait_journal(&pool, &account, changes.len()).await;
    assert_pg_holds(&pool, &account, &changes, &view).await;
    // Some orders finished: the table keeps them, the cache does not.
    let state = PgState::read(&pool, &account).await;
    assert!(
        state
            .orders
            .values()
            .any(|(o, _)| o.status == OrderStatus::Filled)
    );
    assert!(
        state
            .orders
            .values()
            .any(|(o, _)| o.status == OrderStatus::Canceled)
    );
    assert!(state.orders.len() > view.open_orders.len());
    core.shutdown(DRAIN).await.unwrap();
}

/// Replaying the whole sequence emits nothing and adds or changes no row anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_changes_nothing() {
    let (url, pool) = fresh_db().await;
    let account = unique_account();
    let core = start_core(Some(&url), None, &account).await;
    let mut model = reference(&core, &account);
    let updates = trading_updates(800);
    let changes = feed(&core, &mut model, &updates).await;
    wait_journal(&pool, &account, changes.len()).await;
    let counts = row_counts(&pool, &account).await;
    let state = PgState::read(&pool, &account).await;
    let view = core.cache.view().await.unwrap();

    for (t, u) in &updates {
        let n = core.cache.apply_and_wait(*t, u.clone()).await.unwrap();
        assert_eq!(n, 0, "a replayed update made changes: {u:?}");
    }
    assert_eq!(core.cache.view().await.unwrap(), view);

    // A marker change after the replay: once it is written, the writer has handled everything
    // queued before it.
    let t = updates.last().unwrap().0 + 1;
    let marker = Update::Balances(vec![BalancePatch {
        asset: "ZZZ".into(),
        free: Some("1".parse().unwrap()),
        locked: Some("0".parse().unwrap()),
        wallet_balance: None,
        cross_wallet_balance: None,
        updated_at: t,
    }]);
    assert_eq!(core.cache.apply_and_wait(t, marker).await.unwrap(), 1);
    wait_journal(&pool, &account, changes.len() + 1).await;
    let after = row_counts(&pool, &account).await;
    // balances +1 (the marker), journal +1, nothing else.
    assert_eq!(
        after,
        [
            counts[0] + 1,
            counts[1],
            counts[2],
            counts[3],
            counts[4] + 1
        ]
    );
    let mut state_after = PgState::read(&pool, &account).await;
    let (zzz, seq) = state_after.balances.remove("ZZZ").expect("marker row");
    assert_eq!((zzz.free, seq), ("1".parse().unwrap(), view.seq + 1));
    assert_eq!(state_after, state, "a replay changed rows");
    core.shutdown(DRAIN).await.unwrap();
}

/// Stale and unchanged updates emit nothing; a differing snapshot emits exactly the
/// differences, which land with `source = 'snapshot'`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_updates_and_snapshot_differences() {
    let (url, pool) = fresh_db().await;
    let account = unique_account();
    let core = start_core(Some(&url), None, &account).await;
    let mut model = reference(&core, &account);
    let updates = trading_updates(400);
    let mut changes = feed(&core, &mut model, &updates).await;
    let view = core.cache.view().await.unwrap();
    let last_t = updates.last().unwrap().0;

    // Stale and unchanged updates.
    let (asset, held) = view.balances.iter().next().unwrap();
    let patch = |free: &str, at: i64| {
        Update::Balances(vec![BalancePatch {
            asset: asset.clone(),
            free: Some(free.parse().unwrap()),
            locked: Some(held.locked),
            wallet_balance: None,
            cross_wallet_balance: None,
            updated_at: at,
        }])
    };
    let older_order = {
        let (_, o) = view.open_orders.iter().next().expect("an open order");
        let mut o = o.clone();
        o.updated_at -= 1;
        o.price += rust_decimal::Decimal::ONE;
        o
    };
    let finished = changes
        .iter()
        .find_map(|c| match &c.entity {
            Entity::Order(o) if o.status.is_final() => Some(o.clone()),
            _ => None,
        })
        .expect("a finished order");
    let reopened = {
        let mut o = finished.clone();
        o.status = OrderStatus::New;
        o.updated_at = last_t + 1;
        o
    };
    let old_fill = changes
        .iter()
        .find_map(|c| match &c.entity {
            Entity::Fill(f) => Some(f.clone()),
            _ => None,
        })
        .expect("a fill");
    let ignored = [
        patch("123456", held.updated_at - 1),
        patch(&held.free.to_string(), held.updated_at),
        Update::Order {
            order: older_order,
            fill: None,
        },
        Update::Order {
            order: reopened,
            fill: None,
        },
        Update::Order {
            order: finished,
            fill: None,
        },
        Update::Fill(old_fill),
    ];
    for u in ignored {
        assert_eq!(model.apply(last_t + 1, u.clone()).len(), 0, "{u:?}");
        assert_eq!(
            core.cache
                .apply_and_wait(last_t + 1, u.clone())
                .await
                .unwrap(),
            0,
            "{u:?}"
        );
    }
    assert_eq!(core.cache.view().await.unwrap(), view);

    // A snapshot that differs in exactly six places.
    let as_of = last_t + 10;
    let mut balances: Vec<Balance> = view
        .balances
        .values()
        .map(|b| Balance {
            updated_at: as_of,
            ..b.clone()
        })
        .collect();
    assert!(balances.len() >= 3, "{balances:?}");
    let zeroed = balances.pop().unwrap().asset; // missing: becomes zero
    balances[0].free += rust_decimal::Decimal::ONE; // changed
    balances[0].total += rust_decimal::Decimal::ONE;
    let changed_asset = balances[0].asset.clone();
    let mut positions: Vec<_> = view.positions.values().cloned().collect();
    let closed_at = positions
        .iter()
        .position(|p| !p.amount.is_zero())
        .expect("an open position");
    let closed = positions.remove(closed_at).key(); // missing: closed
    let mut orders: Vec<_> = view.open_orders.values().cloned().collect();
    assert!(orders.len() >= 4, "{} open orders", orders.len());
    let vanished = orders.pop().unwrap().key(); // missing: closed (EXPIRED)
    let unresolved = orders.pop().unwrap().key(); // missing but unresolved: stays
    let canceled = {
        let o = &mut orders[0]; // given final: closed
        o.status = OrderStatus::Canceled;
        o.updated_at = as_of;
        o.key()
    };
    let new_fill = {
        let mut f = old_fill_of(&changes);
        f.trade_id = 9_999_999;
        f.traded_at = as_of - 1;
        f
    };
    let snap = Snapshot {
        as_of,
        balances,
        positions: Some(positions),
        orders,
        unresolved_orders: vec![unresolved.clone()],
        checked_orders: None,
        fills: vec![old_fill_of(&changes), new_fill.clone()],
    };
    let expected = model.apply(as_of + 5, Update::Snapshot(snap.clone()));
    let n = core
        .cache
        .apply_and_wait(as_of + 5, Update::Snapshot(snap.clone()))
        .await
        .unwrap();
    assert_eq!(n, expected.len());
    let mut got: Vec<(Kind, String)> = expected.iter().map(|c| (c.kind(), c.key())).collect();
    got.sort_by_key(|(k, key)| (k.as_str(), key.clone()));
    let mut want = vec![
        (Kind::Balance, changed_asset),
        (Kind::Balance, zeroed.clone()),
        (Kind::Position, closed.clone()),
        (Kind::Order, vanished.clone()),
        (Kind::Order, canceled.clone()),
        (Kind::Fill, new_fill.key()),
    ];
    want.sort_by_key(|(k, key)| (k.as_str(), key.clone()));
    assert_eq!(got, want);
    assert!(expected.iter().all(|c| c.source == Source::Snapshot));
    // The same snapshot again: nothing.
    assert_eq!(
        core.cache
            .apply_and_wait(as_of + 6, Update::Snapshot(snap))
            .await
            .unwrap(),
        0
    );
    let view = core.cache.view().await.unwrap();
    assert_eq!(view, model.view());
    assert!(view.open_orders.contains_key(&unresolved));
    assert!(!view.open_orders.contains_key(&vanished));
    assert!(view.balances[&zeroed].total.is_zero());
    assert!(view.positions[&closed].amount.is_zero());

    changes.extend(expected.iter().cloned());
    wait_journal(&pool, &account, changes.len()).await;
    assert_pg_holds(&pool, &account, &changes, &view).await;
    let snapshot_rows: Vec<i64> = sqlx::query_scalar(
        "SELECT seq FROM account_changes WHERE account_id = $1 AND source = 'snapshot' ORDER BY seq",
    )
    .bind(&account)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        snapshot_rows,
        expected.iter().map(|c| c.seq).collect::<Vec<_>>()
    );
    core.shutdown(DRAIN).await.unwrap();
}

fn old_fill_of(changes: &[Change]) -> acctstate::account::Fill {
    changes
        .iter()
        .find_map(|c| match &c.entity {
            Entity::Fill(f) => Some(f.clone()),
            _ => None,
        })
        .expect("a fill")
}

/// Waits until the publisher has written the state keys (its first resync).
async fn wait_publisher_up(prefix: &str, account: &str) {
    let client = redis_client().await;
    eventually(WAIT, "the publisher's first resync (P:seq set)", || async {
        RedisState::read(&client, prefix, account)
            .await
            .seq
            .is_some()
    })
    .await;
    let _ = client.quit().await;
}

/// One message per change on its channel, exactly as CONTRACT §4; then the hashes and `P:seq`
/// equal the cache's view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_messages_and_state_keys() {
    let prefix = unique_prefix();
    let account = unique_account();
    let sub = Subscriber::start(&prefix, &account).await;
    let core = start_core(None, Some((&redis_url(), &prefix)), &account).await;
    wait_publisher_up(&prefix, &account).await;
    let mut model = reference(&core, &account);
    let changes = feed(&core, &mut model, &trading_updates(1000)).await;
    let last = changes.last().unwrap().seq;
    eventually(WAIT, "the last change's message", || async {
        sub.messages().iter().any(|(_, m)| m["seq"] == last)
    })
    .await;
    let received: Vec<Received> = sub
        .messages()
        .into_iter()
        .filter(|(_, m)| m["kind"] != "status")
        .collect();
    let expected: Vec<Received> = changes
        .iter()
        .map(|c| {
            (
                format!("{prefix}:{account}:{}", c.kind().as_str()),
                contract_message(&account, c),
            )
        })
        .collect();
    assert_eq!(received.len(), expected.len(), "one message per change");
    for (got, want) in received.iter().zip(&expected) {
        assert_eq!(got, want);
    }
    for kind in ["balance", "order", "fill", "position"] {
        let channel = format!("{prefix}:{account}:{kind}");
        assert!(received.iter().any(|(c, _)| *c == channel), "{channel}");
    }
    let view = core.cache.view().await.unwrap();
    let client = redis_client().await;
    assert_eq!(
        RedisState::read(&client, &prefix, &account).await,
        RedisState::of_view(&view)
    );
    core.shutdown(DRAIN).await.unwrap();
    sub.stop().await;
    redis_cleanup(&prefix, &account).await;
}

/// A subscriber starting mid-stream (SUBSCRIBE, then the keys in one MULTI/EXEC, then messages
/// with a higher seq) ends with exactly the cache's state, missing and repeating nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_subscriber_converges() {
    let prefix = unique_prefix();
    let account = unique_account();
    let core = start_core(None, Some((&redis_url(), &prefix)), &account).await;
    wait_publisher_up(&prefix, &account).await;
    let updates = trading_updates(6000);
    // The feeder runs on while the subscriber starts and reads; should the subscriber be slow
    // (a loaded machine), the feeder waits for its read at 3,000 so that 3,000 changes always
    // come after it.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (read_tx, mut read_rx) = tokio::sync::oneshot::channel::<()>();
    let feeder = {
        let cache = core.cache.clone();
        tokio::spawn(async move {
            let mut started = Some(started_tx);
            for (i, (t, u)) in updates.into_iter().enumerate() {
                if i == 1500
                    && let Some(tx) = started.take()
                {
                    let _ = tx.send(());
                }
                if i == 3000 {
                    let _ = (&mut read_rx).await;
                }
                cache.apply_and_wait(t, u).await.unwrap();
            }
        })
    };
    started_rx.await.unwrap();
    let sub = Subscriber::start(&prefix, &account).await;
    let client = redis_client().await;
    let mut local = RedisState::read(&client, &prefix, &account).await;
    let read_seq = local.seq.expect("P:seq");
    let _ = read_tx.send(());
    feeder.await.unwrap();
    let view = core.cache.view().await.unwrap();
    assert!(
        read_seq > core.first_seq && read_seq < view.seq,
        "the subscriber did not start mid-stream: read {read_seq}, first {}, last {}",
        core.first_seq,
        view.seq
    );
    eventually(WAIT, "the last change's message", || async {
        sub.messages().iter().any(|(_, m)| m["seq"] == view.seq)
    })
    .await;
    let mut next = read_seq + 1;
    for (_, m) in sub.messages() {
        let seq = m["seq"].as_i64().unwrap();
        if m["kind"] == "status" || seq <= read_seq {
            continue;
        }
        assert_eq!(seq, next, "a message was missed or repeated");
        next += 1;
        local.apply_message(&m);
    }
    assert_eq!(next, view.seq + 1);
    assert_eq!(local, RedisState::of_view(&view));
    core.shutdown(DRAIN).await.unwrap();
    sub.stop().await;
    redis_cleanup(&prefix, &account).await;
}

/// `url` with its host and port replaced by `addr`.
fn via(url: &str, addr: std::net::SocketAddr) -> String {
    let mut u = url::Url::parse(url).unwrap();
    u.set_host(Some(&addr.ip().to_string())).unwrap();
    u.set_port(Some(addr.port())).unwrap();
    u.to_string()
}

/// `host:port` of `url`.
fn target_of(url: &str) -> String {
    let u = url::Url::parse(url).unwrap();
    format!(
        "{}:{}",
        u.host_str().unwrap(),
        u.port_or_known_default().unwrap()
    )
}

/// Postgres goes away mid-stream and comes back: every change is written, the tables equal
/// the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_loses_nothing() {
    let (url, pool) = fresh_db().await;
    let proxy = TcpProxy::start(&target_of(&url)).await;
    let account = unique_account();
    let core = start_core(Some(&via(&url, proxy.addr())), None, &account).await;
    let mut model = reference(&core, &account);
    let updates = trading_updates(3000);
    let mut changes = feed(&core, &mut model, &updates[..500]).await;
    wait_journal(&pool, &account, changes.len()).await;

    proxy.cut();
    let during = feed(&core, &mut model, &updates[500..]).await;
    assert!(
        during.len() >= 2000,
        "minimum volume: {} changes",
        during.len()
    );
    changes.extend(during);
    // The writer is down: the journal does not grow.
    let stuck = journal_count(&pool, &account).await;
    assert!(stuck < changes.len() as i64);
    stays(
        Duration::from_millis(500),
        "the journal stays put",
        || async { journal_count(&pool, &account).await == stuck },
    )
    .await;

    proxy.restore();
    wait_journal(&pool, &account, changes.len()).await;
    let recorded: std::collections::BTreeSet<i64> = journal(&pool, &account)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    let missing: Vec<i64> = changes
        .iter()
        .map(|c| c.seq)
        .filter(|s| !recorded.contains(s))
        .collect();
    assert!(missing.is_empty(), "missing seqs: {missing:?}");
    let view = core.cache.view().await.unwrap();
    assert_pg_holds(&pool, &account, &changes, &view).await;
    core.shutdown(DRAIN).await.unwrap();
}

/// Redis goes away and comes back: a resync status is published and the keys equal the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_ends_with_a_resync() {
    let prefix = unique_prefix();
    let account = unique_account();
    let proxy = TcpProxy::start(&target_of(&redis_url())).await;
    let sub = Subscriber::start(&prefix, &account).await;
    let proxied = format!("redis://{}", proxy.addr());
    let core = start_core(None, Some((&proxied, &prefix)), &account).await;
    wait_publisher_up(&prefix, &account).await;
    let mut model = reference(&core, &account);
    let updates = trading_updates(1300);
    let before = feed(&core, &mut model, &updates[..300]).await;
    let last = before.last().unwrap().seq;
    eventually(WAIT, "messages before the outage", || async {
        sub.messages().iter().any(|(_, m)| m["seq"] == last)
    })
    .await;

    proxy.cut();
    let seen = sub.len();
    feed(&core, &mut model, &updates[300..]).await;
    let view = core.cache.view().await.unwrap();
    let client = redis_client().await;
    let during = RedisState::read(&client, &prefix, &account).await;
    assert!(
        during.seq < Some(view.seq),
        "Redis got changes through a cut connection"
    );

    // What a resync cut short would leave behind: its staging hash with a field the cache does
    // not hold. The next resync must start from an empty staging key.
    let staging = format!("{prefix}:{account}:open_orders:resync");
    let _: () = client.hset(&staging, ("BOGUS:1", "{}")).await.unwrap();

    proxy.restore();
    let status = format!("{prefix}:{account}:status");
    eventually(WAIT, "a resync status after the outage", || async {
        sub.messages()[seen..].iter().any(|(c, m)| {
            *c == status
                && m["kind"] == "status"
                && m["data"]["event"] == "resync"
                && m["seq"] == view.seq
        })
    })
    .await;
    assert_eq!(
        RedisState::read(&client, &prefix, &account).await,
        RedisState::of_view(&view)
    );
    for hash in ["balances", "positions", "open_orders"] {
        let left: i64 = client
            .exists(format!("{prefix}:{account}:{hash}:resync"))
            .await
            .unwrap();
        assert_eq!(left, 0, "the staging key of {hash} was renamed into place");
    }
    core.shutdown(DRAIN).await.unwrap();
    sub.stop().await;
    redis_cleanup(&prefix, &account).await;
}

/// Updates queued without waiting, then an immediate shutdown: it returns Ok and every change
/// is in Postgres.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_every_change() {
    let (url, pool) = fresh_db().await;
    let account = unique_account();
    let core = start_core(Some(&url), None, &account).await;
    let mut model = reference(&core, &account);
    let mut changes = Vec::new();
    for (t, u) in trading_updates(6000) {
        changes.extend(model.apply(t, u.clone()));
        core.cache.apply(t, u).await.unwrap();
    }
    assert!(changes.len() >= 5000, "minimum volume: {}", changes.len());
    core.shutdown(DRAIN).await.expect("drained in time");
    // No waiting: the drain promised everything is written.
    assert_eq!(journal_count(&pool, &account).await, changes.len() as i64);
    assert_pg_holds(&pool, &account, &changes, &model.view()).await;
}
