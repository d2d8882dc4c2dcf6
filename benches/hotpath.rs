//! The hot path's instruction count, for `valgrind --tool=callgrind` (instructions, unlike wall
//! time, do not move with this shared machine's load). One Spot account's trading session
//! (`frames::spot_session`: NEW, lock, fill, settle per order) goes through what the daemon does
//! per event in user space: the connection's route by `subscriptionId`, the session's parse,
//! the cache's `apply`, the Redis publisher's script arguments (entity JSON, message, keys) and
//! the Postgres writer's journal JSON — everything but the sockets and the servers, whose cost
//! the `cost` bench measures.
//!
//! ```sh
//! cargo bench --bench hotpath --no-run
//! scripts/callgrind-hotpath          # valgrind, only inside `measured`; prints Ir per event
//! ```
//! Run without valgrind it prints the events and changes it processed (a smoke test).

#[path = "frames/mod.rs"]
mod frames;

use std::hint::black_box;

use acctstate::account::{AccountState, Change, Market};
use acctstate::binance::convert::{self, Frame, SpotRoute};
use acctstate::sink::redis::{Keys, publish_args};

/// Orders in the session (4 events each).
const ORDERS: usize = 2_500;

fn main() {
    let frames = frames::spot_session(ORDERS);
    let keys = Keys::new("acctstate", "bench");
    let mut state = AccountState::new("bench", Market::Spot, 1);
    let (events, changes, bytes) = measured(&frames, &mut state, &keys);
    println!("events {events} changes {changes} redis+journal bytes {bytes}");
    if changes < events / 2 {
        eprintln!("hotpath: too few changes ({changes} of {events} events): the frames are stale");
        std::process::exit(1);
    }
}

/// Everything counted; callgrind collects only inside this function (`--toggle-collect`).
#[inline(never)]
fn measured(frames: &[String], state: &mut AccountState, keys: &Keys) -> (usize, usize, usize) {
    let (mut changes, mut bytes) = (0, 0);
    for text in frames {
        if !matches!(
            convert::spot_route(black_box(text)),
            SpotRoute::Subscription(_)
        ) {
            continue;
        }
        let Ok(frame) = convert::parse_spot_frame(text) else {
            continue;
        };
        let out: Vec<Change> = match frame {
            Frame::Update {
                event_time, update, ..
            } => state.apply(event_time, update),
            Frame::Updates {
                event_time,
                updates,
                ..
            } => updates
                .into_iter()
                .flat_map(|u| state.apply(event_time, u))
                .collect(),
            _ => Vec::new(),
        };
        changes += out.len();
        let refs: Vec<&Change> = out.iter().collect();
        if let Ok(args) = publish_args(keys, 10_000, Some(1), &refs) {
            bytes += black_box(args).len();
        }
        // The journal's `data` (the Postgres writer's columns).
        for c in &out {
            if let Ok(json) = c.json() {
                bytes += black_box(json).len();
            }
        }
    }
    (frames.len(), changes, bytes)
}
