//! acctstate: a live, exact copy of one Binance account, kept by a long-running daemon.
//!
//! Data flow: the exchange stream task (`binance`) turns user-data events and REST snapshots
//! into `account::Update`s → the cache actor (`account::actor`) applies them and emits numbered
//! `account::Change`s → the sinks (`sink::postgres`, `sink::redis`) persist and publish them.
//! `app` wires the tasks together and owns startup and shutdown; `cli` is the command line.

pub mod account;
pub mod app;
pub mod binance;
pub mod cli;
pub mod config;
pub mod sink;
pub mod telemetry;
