//! What resources exist, as every component reads them: one [`Snapshot`] of every resource at a
//! moment, each body parsed once into its typed form, handed out through a [`Watch`] that wakes its
//! readers when something changed.
//!
//! - [`Snapshot`]: every stored resource of every kind, and for each the typed resource
//!   ([`Typed`]) when this kinetic can read its body. One policy for a body it cannot read (stored
//!   by a newer kinetic, or by hand): the resource still *exists* (its key and uid are listed, so
//!   nothing that belongs to it, such as a trigger's cursor, is taken for an orphan and dropped),
//!   but no component acts on it, and it is listed in [`Snapshot::unreadable`] and logged once.
//! - [`Watch`] and [`Feed`]: the latest snapshot and its writer, a `tokio::sync::watch` pair. The
//!   broker's directory, the dispatcher's planner, the serving controller and the sources
//!   controller read the same snapshot instead of each listing the store.
//! - [`poll`]: feeds a watch from the store, with one read of every resource per period (sooner
//!   when a reader asks, [`Watch::refresh`]), publishing only what changed. A feed from the
//!   Kubernetes API publishes the same snapshots.

mod poll;
mod snapshot;
mod watch;

pub use poll::poll;
pub use snapshot::{Snapshot, Typed, Unreadable};
pub use watch::{Feed, Watch, channel};
