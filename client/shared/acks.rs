//! Acknowledgements on their way from a channel's handles to the driver, in batches.
//!
//! A consumer that acknowledges each delivery would otherwise send the driver one command per
//! message: a slot in the bounded command queue, and a wake-up of the driver whenever it had
//! caught up. When the application runs on another thread than the driver (`#[tokio::main]`
//! runs `main` in `block_on`, not on a worker), each of those is a cross-thread hand-over.
//! Instead, acknowledgements are appended to the channel's open [`AckBatch`]; only the one
//! that opens a batch sends a command ([`Command::Acks`](super::command::Command::Acks)),
//! and the driver takes the whole batch when it reaches that command. The acknowledgements
//! made while the driver was busy elsewhere go out together, with one command and at most one
//! wake-up.
//!
//! Order: a batch is taken where its command stands in the queue, so an acknowledgement
//! appended later moves ahead of the commands queued in between. That is harmless for
//! publishes (which the application does not order against acknowledgements), but not for
//! methods whose meaning depends on which acknowledgements came first (`tx.commit`,
//! `basic.recover`, `channel.close`): every other command of the channel
//! [seals](AckOutbox::seal) the open batch first, so the next acknowledgement opens a new one
//! behind it.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BytesMut;
use tracing::warn;

use super::stats::Counters;
use crate::frame::{FRAME_END, FRAME_METHOD};
use crate::protocol::{BasicAck, BasicNack, BasicReject, Method};
use crate::wire::AmqpMethod;

/// One acknowledgement, as the application gave it (its delivery tag as the application saw it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acknowledgement {
    /// `basic.ack`.
    Ack { delivery_tag: u64, multiple: bool },
    /// `basic.nack`.
    Nack {
        delivery_tag: u64,
        multiple: bool,
        requeue: bool,
    },
    /// `basic.reject`.
    Reject { delivery_tag: u64, requeue: bool },
}

impl From<Acknowledgement> for Method {
    fn from(ack: Acknowledgement) -> Self {
        match ack {
            Acknowledgement::Ack {
                delivery_tag,
                multiple,
            } => BasicAck {
                delivery_tag,
                multiple,
            }
            .into(),
            Acknowledgement::Nack {
                delivery_tag,
                multiple,
                requeue,
            } => BasicNack {
                delivery_tag,
                multiple,
                requeue,
            }
            .into(),
            Acknowledgement::Reject {
                delivery_tag,
                requeue,
            } => BasicReject {
                delivery_tag,
                requeue,
            }
            .into(),
        }
    }
}

impl Acknowledgement {
    /// The acknowledgement `method` is, if it is `basic.ack`, `basic.nack` or `basic.reject`.
    pub(crate) fn of(method: &Method) -> Option<Self> {
        Some(match *method {
            Method::BasicAck(BasicAck {
                delivery_tag,
                multiple,
            }) => Self::Ack {
                delivery_tag,
                multiple,
            },
            Method::BasicNack(BasicNack {
                delivery_tag,
                multiple,
                requeue,
            }) => Self::Nack {
                delivery_tag,
                multiple,
                requeue,
            },
            Method::BasicReject(BasicReject {
                delivery_tag,
                requeue,
            }) => Self::Reject {
                delivery_tag,
                requeue,
            },
            _ => return None,
        })
    }

    /// The broker's delivery tag for it on `channel`, whose tags are offset by `tag_offset`
    /// since the last recovery; `None`, said in a warning, for a delivery from before it
    /// (such an acknowledgement is not sent).
    pub(crate) fn wire_tag(self, channel: u16, tag_offset: u64) -> Option<u64> {
        let wire_tag = super::channel::wire_tag(self.delivery_tag(), tag_offset);
        if wire_tag.is_none() {
            warn!(
                channel,
                delivery_tag = self.delivery_tag(),
                "not sending an acknowledgement of a delivery from before the connection was recovered"
            );
        }
        wire_tag
    }

    /// Counts it as sent in the connection's `counters`.
    pub(crate) fn count(self, counters: &Counters) {
        counters.frames_sent.incr();
        match self {
            Self::Ack { .. } => counters.acked.incr(),
            Self::Nack { .. } | Self::Reject { .. } => counters.rejected.incr(),
        }
    }

    /// The delivery tag it names.
    pub(crate) fn delivery_tag(self) -> u64 {
        match self {
            Self::Ack { delivery_tag, .. }
            | Self::Nack { delivery_tag, .. }
            | Self::Reject { delivery_tag, .. } => delivery_tag,
        }
    }

    /// Appends its method frame on `channel`, naming `delivery_tag` (the broker's tag for the
    /// delivery), as [`encode_method_frame`](crate::frame::encode_method_frame) of its
    /// [`Method`] would, in one write of 21 bytes: the general encoder, through the `Method`
    /// enum and a write per field, took 190 instructions per acknowledgement.
    pub(crate) fn encode_frame(self, out: &mut BytesMut, channel: u16, delivery_tag: u64) {
        let (id, bits) = match self {
            Self::Ack { multiple, .. } => (BasicAck::ID, u8::from(multiple)),
            Self::Nack {
                multiple, requeue, ..
            } => (BasicNack::ID, u8::from(multiple) | u8::from(requeue) << 1),
            Self::Reject { requeue, .. } => (BasicReject::ID, u8::from(requeue)),
        };
        // class, method, delivery tag, one octet of bits
        const PAYLOAD: u32 = 2 + 2 + 8 + 1;
        let mut frame = [0u8; 7 + PAYLOAD as usize + 1];
        frame[0] = FRAME_METHOD;
        frame[1..3].copy_from_slice(&channel.to_be_bytes());
        frame[3..7].copy_from_slice(&PAYLOAD.to_be_bytes());
        frame[7..9].copy_from_slice(&id.class.to_be_bytes());
        frame[9..11].copy_from_slice(&id.method.to_be_bytes());
        frame[11..19].copy_from_slice(&delivery_tag.to_be_bytes());
        frame[19] = bits;
        frame[20] = FRAME_END;
        out.extend_from_slice(&frame);
    }
}

/// Acknowledgements that one command carries to the driver.
#[derive(Debug, Default)]
pub(crate) struct AckBatch {
    /// `None` once the driver has taken them: the batch is closed.
    acks: Mutex<Option<Vec<Acknowledgement>>>,
}

impl AckBatch {
    /// Takes the acknowledgements and closes the batch (the driver, at the batch's command).
    pub(crate) fn take(&self) -> Vec<Acknowledgement> {
        lock(&self.acks).take().unwrap_or_default()
    }
}

/// A channel's open batch, if any.
#[derive(Debug, Default)]
pub(crate) struct AckOutbox {
    open: Mutex<Option<Arc<AckBatch>>>,
}

impl AckOutbox {
    /// Appends `ack` to the open batch. Returns the new batch when there was none (or the
    /// driver had taken it): the caller must then send the driver its command, or
    /// [`abandon`](Self::abandon) it.
    pub(crate) fn push(&self, ack: Acknowledgement) -> Option<Arc<AckBatch>> {
        self.push_unless_written(ack, |_| false)
    }

    /// [`push`](Self::push), except that when no batch is open, `write` may take `ack` to
    /// write it without the driver (returning `true`: see `direct_writes.rs`). It runs
    /// under this outbox's lock, so that no acknowledgement of the channel made meanwhile
    /// opens a batch that the driver could write first.
    pub(crate) fn push_unless_written(
        &self,
        ack: Acknowledgement,
        write: impl FnOnce(Acknowledgement) -> bool,
    ) -> Option<Arc<AckBatch>> {
        let mut open = lock(&self.open);
        if let Some(batch) = open.as_ref()
            && let Some(acks) = lock(&batch.acks).as_mut()
        {
            acks.push(ack);
            return None;
        }
        if write(ack) {
            return None;
        }
        let batch = Arc::new(AckBatch {
            acks: Mutex::new(Some(vec![ack])),
        });
        *open = Some(batch.clone());
        Some(batch)
    }

    /// Closes the open batch to further acknowledgements: a command of the channel is about
    /// to be queued behind it, and what is acknowledged after must follow that command.
    pub(crate) fn seal(&self) {
        lock(&self.open).take();
    }

    /// Forgets `batch`, whose command could not be queued (the connection is gone): what was
    /// appended to it is dropped with it, as a command that cannot be sent is.
    pub(crate) fn abandon(&self, batch: &Arc<AckBatch>) {
        let mut open = lock(&self.open);
        if open.as_ref().is_some_and(|b| Arc::ptr_eq(b, batch)) {
            *open = None;
        }
        lock(&batch.acks).take();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here panics while holding a lock.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(delivery_tag: u64) -> Acknowledgement {
        Acknowledgement::Ack {
            delivery_tag,
            multiple: false,
        }
    }

    #[test]
    fn only_the_first_acknowledgement_of_a_batch_needs_a_command() {
        let outbox = AckOutbox::default();
        let batch = outbox.push(ack(1)).expect("the first opens a batch");
        assert!(outbox.push(ack(2)).is_none());
        assert!(outbox.push(ack(3)).is_none());
        assert_eq!(batch.take(), [ack(1), ack(2), ack(3)]);
        // Taken: the next acknowledgement opens a new batch, with a command of its own.
        let next = outbox.push(ack(4)).expect("a taken batch is closed");
        assert!(!Arc::ptr_eq(&batch, &next));
        assert_eq!(batch.take(), []);
        assert_eq!(next.take(), [ack(4)]);
    }

    #[test]
    fn sealing_starts_a_new_batch_behind_the_next_command() {
        let outbox = AckOutbox::default();
        let first = outbox.push(ack(1)).unwrap();
        outbox.seal();
        let second = outbox
            .push(ack(2))
            .expect("after a seal, a new batch and command");
        assert_eq!(first.take(), [ack(1)]);
        assert_eq!(second.take(), [ack(2)]);
    }

    #[test]
    fn an_abandoned_batch_takes_nothing_more() {
        let outbox = AckOutbox::default();
        let batch = outbox.push(ack(1)).unwrap();
        outbox.abandon(&batch);
        assert_eq!(batch.take(), []);
        assert!(outbox.push(ack(2)).is_some());
    }

    #[test]
    fn an_acknowledgements_frame_is_what_the_general_encoder_writes() {
        let mut all = Vec::new();
        for flag in [false, true] {
            for other in [false, true] {
                all.push(Acknowledgement::Ack {
                    delivery_tag: 0x0102_0304_0506_0708,
                    multiple: flag,
                });
                all.push(Acknowledgement::Nack {
                    delivery_tag: u64::MAX,
                    multiple: flag,
                    requeue: other,
                });
                all.push(Acknowledgement::Reject {
                    delivery_tag: 1,
                    requeue: flag,
                });
            }
        }
        for ack in all {
            assert_eq!(Acknowledgement::of(&ack.into()), Some(ack));
            for channel in [1, 0x1234, u16::MAX] {
                let mut general = BytesMut::new();
                crate::frame::encode_method_frame(&mut general, channel, &ack.into(), 4096)
                    .unwrap();
                let mut direct = BytesMut::new();
                ack.encode_frame(&mut direct, channel, ack.delivery_tag());
                assert_eq!(direct, general, "{ack:?} on channel {channel}");
            }
        }
        // The tag written is the one given (the broker's), not the application's.
        let mut written = BytesMut::new();
        ack(9).encode_frame(&mut written, 1, 4);
        let mut expected = BytesMut::new();
        crate::frame::encode_method_frame(&mut expected, 1, &ack(4).into(), 4096).unwrap();
        assert_eq!(written, expected);
    }

    #[test]
    fn acknowledgements_become_their_methods() {
        let nack: Method = Acknowledgement::Nack {
            delivery_tag: 7,
            multiple: true,
            requeue: false,
        }
        .into();
        assert_eq!(
            nack,
            Method::BasicNack(BasicNack {
                delivery_tag: 7,
                multiple: true,
                requeue: false
            })
        );
        assert_eq!(
            Acknowledgement::of(&nack),
            Some(Acknowledgement::Nack {
                delivery_tag: 7,
                multiple: true,
                requeue: false
            })
        );
        assert_eq!(
            Acknowledgement::of(&crate::protocol::BasicQos::default().into()),
            None
        );
    }
}
