//! Binance: wire types and their conversion to the domain (`wire`, `convert`), request signing
//! (`sign`), the REST client (`rest`), account snapshots (`snapshot`) and the stream task
//! (`stream`). Nothing outside this module sees a Binance field name.

mod connect;
pub mod convert;
#[cfg(test)]
mod production_payloads;
pub mod rest;
pub mod sign;
pub mod snapshot;
pub mod stream;
mod wire;
