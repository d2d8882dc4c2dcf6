//! Binance: wire types and their conversion to the domain (`wire`, `convert`), request signing
//! (`sign`), the per-market weight budget (`weight`), the REST client (`rest`), account
//! snapshots (`snapshot`), WebSocket connections shared by accounts (`conn`, `pool`, opened by
//! `connect`), the inbox a connection fills for each session (`inbox`) and each account's stream
//! session on them (`stream`). Nothing outside this module sees a Binance field name.

pub mod conn;
mod connect;
pub mod convert;
mod inbox;
pub mod pool;
#[cfg(test)]
mod production_payloads;
pub mod rest;
pub mod sign;
pub mod snapshot;
pub mod stream;
pub mod weight;
mod wire;
