//! Property tests (the fuzz smoke run by the test command): the frame parsers never panic on
//! arbitrary or mutated input, and the cache's `apply` never panics, keeps its invariants and is
//! idempotent under replay, whatever sequence of updates it is given.

use std::path::Path;

use acctstate::account::{
    AccountState, BalancePatch, Fill, Market, Order, OrderStatus, Position, Update,
};
use acctstate::binance::convert;
use proptest::prelude::*;
use rust_decimal::Decimal;

fn fixtures() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/binance");
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .expect("fixtures directory")
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect();
    out.sort();
    out
}

fn parse_all(text: &str) {
    let _ = convert::parse_spot_frame(text);
    let _ = convert::parse_usdm_frame(text);
    let _ = convert::spot_account(text);
    let _ = convert::spot_orders(text);
    let _ = convert::usdm_account(text);
    let _ = convert::usdm_positions(text);
    let _ = convert::usdm_orders(text);
    let _ = convert::usdm_algo_orders(text);
    let _ = convert::spot_trades(text);
    let _ = convert::usdm_trades(text);
    let _ = convert::api_error(text);
}

/// Replaces the value of the `n`-th string or number in `text` with `replacement`.
fn mutate(text: &str, n: usize, replacement: &str) -> String {
    let mut v: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => return text.to_owned(),
    };
    let mut seen = 0;
    fn walk(v: &mut serde_json::Value, n: usize, seen: &mut usize, r: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Object(m) => m.values_mut().any(|x| walk(x, n, seen, r)),
            serde_json::Value::Array(a) => a.iter_mut().any(|x| walk(x, n, seen, r)),
            leaf => {
                if *seen == n {
                    *leaf = r.clone();
                    return true;
                }
                *seen += 1;
                false
            }
        }
    }
    let r: serde_json::Value =
        serde_json::from_str(replacement).unwrap_or(serde_json::Value::String(replacement.into()));
    walk(&mut v, n, &mut seen, &r);
    v.to_string()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parsers_survive_arbitrary_text(s in "\\PC{0,300}") {
        parse_all(&s);
    }

    #[test]
    fn parsers_survive_mutated_fixtures(
        which in 0usize..64,
        at in 0usize..80,
        replacement in prop_oneof![
            Just("null".to_owned()), Just("\"\"".to_owned()), Just("-1".to_owned()),
            Just("\"abc\"".to_owned()), Just("1e400".to_owned()), Just("99999999999999999999999".to_owned()),
            Just("\"79228162514264337593543950335\"".to_owned()), Just("\"-79228162514264337593543950335\"".to_owned()),
            Just("[[[[[[[[[[]]]]]]]]]]".to_owned()), Just("{}".to_owned()), Just("true".to_owned()),
            "\\PC{0,20}".prop_map(|s| serde_json::Value::String(s).to_string()),
        ],
        cut in 0usize..2000,
    ) {
        let all = fixtures();
        let text = &all[which % all.len()];
        let mutated = mutate(text, at, &replacement);
        parse_all(&mutated);
        // Truncated frames too.
        let cut = cut.min(mutated.len());
        if mutated.is_char_boundary(cut) {
            parse_all(&mutated[..cut]);
        }
    }
}

fn decimal() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        (0i64..1_000_000, 0u32..9).prop_map(|(m, s)| Decimal::new(m, s)),
        Just(Decimal::ZERO),
        Just(Decimal::MAX),
        Just(Decimal::MIN),
        (-1_000i64..0).prop_map(|m| Decimal::new(m, 2)),
    ]
}

fn status() -> impl Strategy<Value = OrderStatus> {
    prop_oneof![
        Just(OrderStatus::New),
        Just(OrderStatus::PartiallyFilled),
        Just(OrderStatus::Filled),
        Just(OrderStatus::Canceled),
        Just(OrderStatus::Expired),
        Just(OrderStatus::Triggered),
    ]
}

fn update() -> impl Strategy<Value = (i64, Update)> {
    let asset = prop_oneof![Just("BTC"), Just("USDT"), Just("ETH")];
    let symbol = prop_oneof![Just("BTCUSDT"), Just("ETHUSDT")];
    let t = 0i64..50;
    prop_oneof![
        (
            asset,
            decimal(),
            decimal(),
            proptest::option::of(decimal()),
            t.clone()
        )
            .prop_map(|(a, f, l, w, t)| (
                t,
                Update::Balances(vec![BalancePatch {
                    asset: a.into(),
                    free: Some(f),
                    locked: Some(l),
                    wallet_balance: w,
                    cross_wallet_balance: w,
                    updated_at: t,
                }])
            )),
        (
            symbol.clone(),
            1i64..6,
            status(),
            decimal(),
            t.clone(),
            proptest::option::of(1i64..20)
        )
            .prop_map(|(s, id, st, exec, t, trade)| {
                let order = Order {
                    symbol: s.into(),
                    order_id: id,
                    client_order_id: format!("c{id}"),
                    side: "BUY".into(),
                    order_type: "LIMIT".into(),
                    time_in_force: "GTC".into(),
                    status: st,
                    price: Decimal::ONE,
                    stop_price: Decimal::ZERO,
                    orig_qty: Decimal::TEN,
                    executed_qty: exec,
                    cum_quote_qty: Decimal::ZERO,
                    created_at: 0,
                    updated_at: t,
                };
                let fill = trade.map(|tid| Fill {
                    symbol: s.into(),
                    trade_id: tid,
                    order_id: id,
                    side: "BUY".into(),
                    price: Decimal::ONE,
                    qty: Decimal::ONE,
                    quote_qty: Decimal::ONE,
                    commission: Decimal::ZERO,
                    commission_asset: None,
                    is_maker: false,
                    realized_pnl: None,
                    traded_at: t,
                });
                (t, Update::Order { order, fill })
            }),
        (symbol, decimal(), t).prop_map(|(s, a, t)| (
            t,
            Update::Positions(vec![Position {
                symbol: s.into(),
                position_side: "BOTH".into(),
                amount: a,
                entry_price: Decimal::ONE,
                breakeven_price: Decimal::ONE,
                unrealized_pnl: Decimal::ZERO,
                realized_pnl: Decimal::ZERO,
                margin_type: "cross".into(),
                isolated_wallet: Decimal::ZERO,
                updated_at: t,
            }])
        )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn apply_keeps_invariants_and_replays_change_nothing(updates in proptest::collection::vec(update(), 0..80)) {
        // Exchange times in any order, but distinct: two different values of one entity at the
        // same millisecond cannot be ordered by anyone (the later arrival wins).
        let updates: Vec<(i64, Update)> = updates
            .into_iter()
            .enumerate()
            .map(|(i, (t, u))| {
                let t = t * 1000 + i as i64;
                let u = match u {
                    Update::Balances(mut v) => { v.iter_mut().for_each(|b| b.updated_at = t); Update::Balances(v) }
                    Update::Positions(mut v) => { v.iter_mut().for_each(|p| p.updated_at = t); Update::Positions(v) }
                    Update::Order { mut order, fill } => { order.updated_at = t; Update::Order { order, fill } }
                    other => other,
                };
                (t, u)
            })
            .collect();
        let mut state = AccountState::new("p", Market::Spot, 1);
        let mut last = 0;
        for (t, u) in updates.clone() {
            for c in state.apply(t, u) {
                prop_assert!(c.seq > last, "seq must rise strictly");
                last = c.seq;
            }
        }
        let view = state.view();
        prop_assert!(view.open_orders.values().all(|o| !o.status.is_final()));
        // Replaying everything changes nothing.
        for (t, u) in updates {
            prop_assert!(state.apply(t, u).is_empty(), "a replay emitted a change");
        }
        prop_assert_eq!(state.view(), view);
    }
}

// ------------------------------------------------------- the payloads production sends (§5a)

/// The state-bearing event fixtures, whether they are Spot's, and the fields SPEC §5a has
/// seen missing from real payloads of that event.
const EVENTS: [(&str, bool, &[&str]); 6] = [
    ("spot_executionReport.json", true, &["W", "V"]),
    ("spot_outboundAccountPosition.json", true, &[]),
    (
        "usdm_ORDER_TRADE_UPDATE.json",
        false,
        &["N", "n", "V", "pm", "gtd", "er"],
    ),
    ("usdm_ACCOUNT_UPDATE.json", false, &["bc", "bep", "ma"]),
    (
        "usdm_ALGO_UPDATE.json",
        false,
        &["ap", "aq", "act", "V", "pm", "gtd"],
    ),
    ("usdm_MARGIN_CALL.json", false, &["cw"]),
];

/// The event fixtures the daemon turns into state, by market.
fn event_fixture(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/binance")
        .join(name);
    let text = std::fs::read_to_string(path).expect("fixture");
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// Rewrites every object of `v` (depth first): optional fields dropped where `drop` says, `E`
/// as a string, ids above 2^53, decimals huge or tiny.
fn production_variant(
    v: &mut serde_json::Value,
    optional: &[&str],
    drop: &[bool],
    e_as_string: bool,
    big_ids: bool,
    decimal: Option<&str>,
) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            for (i, k) in optional.iter().enumerate() {
                if drop.get(i).copied().unwrap_or(false) {
                    m.remove(*k);
                }
            }
            if e_as_string && let Some(Value::Number(n)) = m.get("E").cloned() {
                m.insert("E".into(), Value::String(n.to_string()));
            }
            for id in ["i", "t", "aid"] {
                if big_ids && m.get(id).is_some_and(|x| x.as_i64().is_some_and(|n| n > 0)) {
                    m.insert(id.into(), Value::from(9_007_199_254_740_993_i64));
                }
            }
            if let Some(d) = decimal {
                for key in ["q", "p", "l", "z", "L", "f", "wb", "cw", "pa", "ep"] {
                    if m.get(key)
                        .is_some_and(|x| x.as_str().is_some_and(|s| s.parse::<Decimal>().is_ok()))
                    {
                        m.insert(key.into(), Value::String(d.to_owned()));
                    }
                }
            }
            for x in m.values_mut() {
                production_variant(x, optional, drop, e_as_string, big_ids, decimal);
            }
        }
        Value::Array(a) => a
            .iter_mut()
            .for_each(|x| production_variant(x, optional, drop, e_as_string, big_ids, decimal)),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    /// Whatever subset of the optional fields is missing, with `E` as a string, ids above 2^53,
    /// huge or tiny decimals and any of the envelopes production uses, every state-bearing event
    /// parses (never malformed), and a trade keeps its exact ids.
    #[test]
    fn production_variants_of_every_event_parse(
        which in 0usize..6,
        drop in proptest::collection::vec(any::<bool>(), 6),
        e_as_string in any::<bool>(),
        big_ids in any::<bool>(),
        decimal in prop_oneof![
            Just(None),
            Just(Some("79228162514264337593543950335")),
            Just(Some("0.0000000000000000000000000001")),
        ],
        envelope in 0usize..3,
    ) {
        let (name, spot, optional) = EVENTS[which];
        let mut v = event_fixture(name);
        // The Spot fixtures come wrapped by the WS API: vary the inner event.
        let inner = if spot { v["event"].take() } else { v };
        let mut event = inner;
        production_variant(&mut event, optional, &drop, e_as_string, big_ids, decimal);
        let text = match (spot, envelope) {
            (true, 0) => serde_json::json!({"subscriptionId": 3, "event": event}).to_string(),
            (true, 1) => serde_json::json!({"event": event}).to_string(),
            (_, 2) => serde_json::json!({"stream": "k", "data": event}).to_string(),
            _ => event.to_string(),
        };
        let parsed = if spot {
            convert::parse_spot_frame(&text)
        } else {
            convert::parse_usdm_frame(&text)
        };
        let frame = match parsed {
            Ok(f) => f,
            Err(e) => return Err(TestCaseError::fail(format!("{name}: {e}"))),
        };
        if big_ids
            && let convert::Frame::Update { update: Update::Order { order, fill }, .. } = &frame
            && order.order_id > 0
        {
            prop_assert_eq!(order.order_id, 9_007_199_254_740_993);
            if let Some(f) = fill {
                prop_assert_eq!(f.trade_id, 9_007_199_254_740_993);
            }
        }
    }
}
