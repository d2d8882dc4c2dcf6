//! Parse + apply throughput per event type, on one core: the stream task's parse of a text frame
//! (`binance::convert`) followed by the cache's `AccountState::apply`, for distinct realistic
//! events (every iteration a new order id / trade id / amount, so nothing is dropped as a
//! duplicate). Run: `cargo bench --bench parse_apply`.

use std::hint::black_box;

use acctstate::account::{AccountState, Market};
use acctstate::binance::convert::{self, Frame};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const N: usize = 10_000;

fn apply(state: &mut AccountState, frame: Frame) -> usize {
    match frame {
        Frame::Update {
            event_time, update, ..
        } => state.apply(event_time, update).len(),
        Frame::Updates {
            event_time,
            updates,
            ..
        } => updates
            .into_iter()
            .map(|u| state.apply(event_time, u).len())
            .sum(),
        _ => 0,
    }
}

fn spot_execution_reports() -> Vec<String> {
    (0..N)
        .map(|i| {
            let id = 1_000_000 + i as i64;
            let t = 1_700_000_000_000i64 + i as i64;
            // NEW then TRADE (filled) for every order: two events per order.
            let (x, st, z, trade) = if i % 2 == 0 { ("NEW", "NEW", "0.00000000", -1) } else { ("TRADE", "FILLED", "1.00000000", id) };
            let oid = id - (i as i64 % 2);
            format!(
                r#"{{"subscriptionId":0,"event":{{"e":"executionReport","E":{t},"s":"ETHBTC","c":"c{oid}","S":"BUY","o":"LIMIT","f":"GTC","q":"1.00000000","p":"0.10264410","P":"0.00000000","F":"0.00000000","g":-1,"C":"","x":"{x}","X":"{st}","r":"NONE","i":{oid},"l":"{z}","z":"{z}","L":"0.10264410","n":"0.00010000","N":"BNB","T":{t},"t":{trade},"I":{id},"w":true,"m":false,"M":false,"O":{t},"Z":"0.10264410","Y":"0.10264410","Q":"0.00000000","W":{t},"V":"NONE"}}}}"#
            )
        })
        .collect()
}

fn spot_account_positions() -> Vec<String> {
    (0..N)
        .map(|i| {
            let t = 1_700_000_000_000i64 + i as i64;
            format!(
                r#"{{"subscriptionId":0,"event":{{"e":"outboundAccountPosition","E":{t},"u":{t},"B":[{{"a":"ETH","f":"{}.000000","l":"0.000000"}},{{"a":"BTC","f":"1.{i:06}","l":"0.500000"}}]}}}}"#,
                10_000 + i
            )
        })
        .collect()
}

fn usdm_order_trade_updates() -> Vec<String> {
    (0..N)
        .map(|i| {
            let id = 8_000_000 + i as i64;
            let t = 1_700_000_000_000i64 + i as i64;
            let (x, st, z, trade) = if i % 2 == 0 { ("NEW", "NEW", "0", 0) } else { ("TRADE", "FILLED", "0.001", id) };
            let oid = id - (i as i64 % 2);
            format!(
                r#"{{"e":"ORDER_TRADE_UPDATE","E":{t},"T":{t},"o":{{"s":"BTCUSDT","c":"c{oid}","S":"SELL","o":"LIMIT","f":"GTC","q":"0.001","p":"7103.04","ap":"7103.04","sp":"0","x":"{x}","X":"{st}","i":{oid},"l":"{z}","z":"{z}","L":"7103.04","N":"USDT","n":"0.0028","T":{t},"t":{trade},"b":"0","a":"9.91","m":false,"R":false,"wt":"CONTRACT_PRICE","ot":"LIMIT","ps":"BOTH","cp":false,"pP":false,"si":0,"ss":0,"rp":"0","V":"EXPIRE_TAKER","pm":"NONE","gtd":0,"er":"0"}}}}"#
            )
        })
        .collect()
}

fn usdm_account_updates() -> Vec<String> {
    (0..N)
        .map(|i| {
            let t = 1_700_000_000_000i64 + i as i64;
            format!(
                r#"{{"e":"ACCOUNT_UPDATE","E":{t},"T":{t},"a":{{"m":"ORDER","B":[{{"a":"USDT","wb":"{}.12345678","cw":"100.12345678","bc":"0"}}],"P":[{{"s":"BTCUSDT","pa":"0.{i:04}","ep":"6563.66500","bep":"6563.7","cr":"0","up":"2.5","mt":"cross","iw":"0","ps":"BOTH"}}]}}}}"#,
                120_000 + i
            )
        })
        .collect()
}

/// A benchmark case: name, market, frame generator, parser.
type Case = (
    &'static str,
    Market,
    fn() -> Vec<String>,
    fn(&str) -> Result<Frame, convert::ParseError>,
);

fn bench(c: &mut Criterion) {
    let cases: [Case; 4] = [
        (
            "spot_executionReport",
            Market::Spot,
            spot_execution_reports,
            convert::parse_spot_frame,
        ),
        (
            "spot_outboundAccountPosition",
            Market::Spot,
            spot_account_positions,
            convert::parse_spot_frame,
        ),
        (
            "usdm_ORDER_TRADE_UPDATE",
            Market::Usdm,
            usdm_order_trade_updates,
            convert::parse_usdm_frame,
        ),
        (
            "usdm_ACCOUNT_UPDATE",
            Market::Usdm,
            usdm_account_updates,
            convert::parse_usdm_frame,
        ),
    ];
    let mut group = c.benchmark_group("parse_apply");
    group.throughput(Throughput::Elements(N as u64));
    group.sample_size(20);
    for (name, market, frames, parse) in cases.iter().copied() {
        let frames = frames();
        group.bench_function(name, |b| {
            b.iter_batched(
                || AccountState::new("bench", market, 1),
                |mut state| {
                    let mut changes = 0;
                    for f in &frames {
                        if let Ok(frame) = parse(black_box(f)) {
                            changes += apply(&mut state, frame);
                        }
                    }
                    assert!(changes >= N / 2, "{name}: only {changes} changes");
                    changes
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    group.finish();

    // The parse alone, to see where the time goes.
    let mut group = c.benchmark_group("parse_only");
    group.throughput(Throughput::Elements(N as u64));
    group.sample_size(20);
    for (name, _, frames, parse) in cases {
        let frames = frames();
        group.bench_function(name, |b| {
            b.iter(|| {
                frames
                    .iter()
                    .filter(|f| parse(black_box(f.as_str())).is_ok())
                    .count()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
