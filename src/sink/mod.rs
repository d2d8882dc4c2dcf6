//! Where changes go after the cache: Postgres (write-behind, the source of truth) and Redis
//! (latest state + pub/sub for trading engines). Each sink is one task with its own queue.

pub mod postgres;
pub mod redis;
pub mod resume;
