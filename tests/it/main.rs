//! Integration tests of acctstate against real Postgres and Redis.
//!
//! One test crate (one link, one binary); each area is a module. `common` holds the shared
//! helpers.

mod bounce;
mod clients;
mod common;
mod exchange;
mod faults;
mod fleet;
mod fuzz;
mod keys;
mod ops;
mod paused;
mod procs;
mod spine;
mod storm;
mod usdm;
