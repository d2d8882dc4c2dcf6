//! Parse + apply throughput per event type, on one core: the stream task's parse of a text frame
//! (`binance::convert`) followed by the cache's `AccountState::apply`, for distinct realistic
//! events (every iteration a new order id / trade id / amount, so nothing is dropped as a
//! duplicate). Run: `cargo bench --bench parse_apply`.

use std::hint::black_box;

use acctstate::account::{AccountState, Market};
use acctstate::binance::convert::{self, Frame};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[path = "frames/mod.rs"]
mod frames;
use frames::*;

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
