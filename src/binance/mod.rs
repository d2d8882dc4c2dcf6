//! Binance: the wire format of the user-data streams and REST snapshots (`wire`), and its
//! conversion into the exchange-neutral domain (`convert`): what the stream task parses every
//! frame and REST body with. Spot (WS API subscription) and USD-M (listenKey stream).

pub mod convert;
pub mod wire;
