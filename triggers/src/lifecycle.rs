//! What applying or deleting a trigger does to the dispatcher's state: the protocol between the
//! control plane and the dispatchers, kept beside the dispatcher that relies on it.
//!
//! A new trigger's cursor is created at its broker's head by the control plane, under an owner
//! that is no dispatcher and with a lease already over, so any dispatcher claims it at its next
//! pass. A trigger moved to another broker starts over the same way; a deleted one leaves
//! nothing behind but its dead letters.

use kinetic_store::{Millis, Store, TriggerRef};

use crate::kafka::checkpoint_prefix;

/// The owner of the cursors the control plane creates.
pub const CONTROL_PLANE: &str = "control-plane";

/// A trigger was created, or `moved` to another broker: its events start at the broker's head
/// now. A moved trigger's cursor and pending deliveries belonged to the old broker's log and go
/// first.
pub async fn bound(
    store: &dyn Store,
    trigger: &TriggerRef,
    moved: bool,
    now: Millis,
) -> kinetic_store::Result<()> {
    if moved {
        store.drop_trigger(&trigger.uid).await?;
    }
    store
        .claim_cursors(CONTROL_PLANE, std::slice::from_ref(trigger), now, 0)
        .await?;
    Ok(())
}

/// A trigger was deleted: its cursor, its pending deliveries and where a Kafka-class trigger's
/// consumption began go; its dead letters stay.
pub async fn deleted(
    store: &dyn Store,
    uid: &str,
    namespace: &str,
    name: &str,
) -> kinetic_store::Result<()> {
    store.drop_trigger(uid).await?;
    store
        .delete_checkpoints(&checkpoint_prefix(namespace, name))
        .await?;
    Ok(())
}
