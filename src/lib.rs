//! acctstate: live, exact copies of Binance accounts, kept by a long-running daemon.
//!
//! Data flow, per account: shared WebSocket connections (`binance::conn`) route frames to the
//! account's stream session (`binance::stream`), which turns them and REST snapshots into
//! `account::Update`s → the account's cache actor (`account::actor`) applies them and emits
//! numbered `account::Change`s → the process's sinks (`sink::postgres`, one writer for every
//! account; `sink::redis`, one publisher per account on one client) persist and publish them.
//! `fleet` is the supervisor floor (the accounts and what they share); `app` is the process
//! floor (startup, reloads, shutdown); `http` only asks; `cli` is the command line.

pub mod account;
pub mod app;
pub mod binance;
pub mod check;
pub mod cli;
pub mod config;
pub mod demo;
pub mod fleet;
pub mod heap;
pub mod http;
pub mod sim;
pub mod sink;
pub mod telemetry;
