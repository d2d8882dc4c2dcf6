//! acctstate-client: an exact, resumable mirror of one Binance account as the acctstate daemon
//! publishes it in Redis (CONTRACT §4). Trading engines read the account here without talking
//! to Binance and without depending on the daemon's internals.
//!
//! ```no_run
//! # async fn demo() -> Result<(), acctstate_client::Error> {
//! use std::time::Duration;
//! let mut mirror = acctstate_client::Mirror::connect("redis://127.0.0.1:6379", "acctstate", "main").await?;
//! loop {
//!     for change in mirror.poll(Duration::from_secs(1)).await? {
//!         println!("{} {:?}", change.seq, change.entity);
//!     }
//! }
//! # }
//! ```
//!
//! Guarantees: every change the daemon published while the mirror follows is applied once, in
//! seq order; after its own disconnect the mirror reads on from the stream, and falls back to
//! the state keys (exact at one seq) when the stream was trimmed past it or the daemon
//! published `resync`. Not guaranteed: seeing every intermediate change across a fallback
//! (the keys hold the latest state, not history — Postgres has the history), or fills older
//! than the stream (fills have no state key).

mod mirror;
pub mod types;

pub use mirror::{Error, Mirror, Stats};
pub use types::{Balance, Change, Entity, Fill, Order, Position, Status};
