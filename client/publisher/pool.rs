//! The confirm-mode channels of a [`Publisher`](super::Publisher): a fixed number of slots,
//! each holding an open channel, or getting a new one when the broker closed the last.

use std::hash::{BuildHasher, BuildHasherDefault, Hash};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::channel::{Channel, ConfirmSelectOptions};
use crate::connection::Connection;
use crate::error::Result;
use crate::shared::word_hash::WordHasher;

/// The channels publishes take turns on.
#[derive(Debug)]
pub(super) struct ChannelPool {
    connection: Connection,
    slots: Box<[Slot]>,
    /// The slot the next publish takes, modulo their number.
    next: AtomicUsize,
}

/// One channel of the pool.
#[derive(Debug, Default)]
struct Slot {
    /// The channel, once opened; a closed one is replaced by the next publish that takes it.
    current: Mutex<Option<Channel>>,
    /// Held while a new channel is opened, so that the publishes that find the old one
    /// closed open one channel between them, not one each.
    replacing: tokio::sync::Mutex<()>,
}

impl ChannelPool {
    /// Opens `size` confirm-mode channels on `connection`.
    pub(super) async fn open(connection: &Connection, size: usize) -> Result<Self> {
        let slots: Box<[Slot]> = (0..size).map(|_| Slot::default()).collect();
        for slot in &slots {
            *lock(&slot.current) = Some(open_confirm_channel(connection).await?);
        }
        Ok(Self {
            connection: connection.clone(),
            slots,
            next: AtomicUsize::new(0),
        })
    }

    /// The slot of a publish, with its channel if that is open.
    ///
    /// A tokio task always publishes on the same slot (its task id picks it), so that its
    /// messages keep their order and a confirmation wakes only the few tasks of its channel,
    /// not every publishing task; outside a task, slots take turns.
    pub(super) fn next(&self) -> (usize, Option<Channel>) {
        let index = match tokio::task::try_id() {
            Some(id) => slot_of(id, self.slots.len()),
            None => self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len(),
        };
        (index, self.slots[index].open_channel())
    }

    /// The channel of slot `index`, after opening a new one if it is closed: the broker
    /// closed the last one.
    pub(super) async fn replace(&self, index: usize) -> Result<Channel> {
        let slot = &self.slots[index];
        let _replacing = slot.replacing.lock().await;
        if let Some(channel) = slot.open_channel() {
            return Ok(channel);
        }
        let channel = open_confirm_channel(&self.connection).await?;
        tracing::debug!(
            channel = channel.id(),
            slot = index,
            "the publisher replaced a closed channel"
        );
        *lock(&slot.current) = Some(channel.clone());
        Ok(channel)
    }

    /// Closes every channel.
    pub(super) async fn close(&self) -> Result<()> {
        for slot in &self.slots {
            let channel = lock(&slot.current).take();
            if let Some(channel) = channel {
                channel.close().await?;
            }
        }
        Ok(())
    }

    /// The number of channels.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The connection the channels belong to.
    pub(super) fn connection(&self) -> &Connection {
        &self.connection
    }
}

impl Slot {
    fn open_channel(&self) -> Option<Channel> {
        lock(&self.current)
            .as_ref()
            .filter(|channel| channel.is_open())
            .cloned()
    }
}

/// The slot of the task (or other key) `key`, of `slots`. Task ids are numbered in turn: their
/// hashes (a multiple of the number) step evenly around the 64-bit range, and scaling the hash
/// onto the slots (its high bits, not a remainder) keeps that evenness.
fn slot_of(key: impl Hash, slots: usize) -> usize {
    let hash = BuildHasherDefault::<WordHasher>::default().hash_one(key);
    ((u128::from(hash) * slots as u128) >> 64) as usize
}

async fn open_confirm_channel(connection: &Connection) -> Result<Channel> {
    let channel = connection.open_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::slot_of;

    #[test]
    fn tasks_numbered_in_turn_spread_evenly_over_the_slots() {
        for slots in 1..=8 {
            let mut tasks = vec![0; slots];
            // As tokio numbers its tasks (a `task::Id` hashes as its number).
            for id in 1..=(100 * slots as u64) {
                tasks[slot_of(id, slots)] += 1;
            }
            assert!(
                tasks.iter().all(|&n| (95..=105).contains(&n)),
                "{slots} slots: {tasks:?}"
            );
        }
    }
}
