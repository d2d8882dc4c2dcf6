//! The account: domain model, the updates that enter the cache, the changes that leave it, the
//! pure state and the actor that owns it.

pub mod actor;
pub mod change;
pub mod model;
pub mod state;
pub mod update;

pub use actor::{AccountBatch, CacheHandle, ChangeBatch, Counts};
pub use change::{Change, Entity, Kind, Source};
pub use model::{Balance, Fill, Market, Millis, Order, OrderStatus, Position};
pub use state::{AccountState, AccountView, ViewRef};
pub use update::{BalancePatch, Snapshot, Update};
