//! A session's inbox: what a connection task hands one account's session.
//!
//! Frames take room: at most `ROOM_BYTES` of an account's frames wait for its session. A
//! connection that finds no room keeps the frame and stops reading its socket until the session
//! has caught up (its commands and timers go on), so a burst waits in the kernel's socket buffer
//! and the exchange's send window — TCP back-pressure — instead of in this process's memory (a
//! 100k-event burst held 38 MB of frames here, BENCHMARKS.md). Control messages (`Moved`, `Down`)
//! take no room and never wait.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Bytes of frames one session may have waiting.
pub const ROOM_BYTES: usize = 1 << 20;
/// Room is counted in units of this many bytes.
const UNIT: usize = 1024;
const UNITS: usize = ROOM_BYTES / UNIT;

/// What a connection tells a session.
#[derive(Debug)]
pub enum Inbound {
    /// A text frame of this session's account, and the room it holds until dropped.
    Frame(Utf8Bytes, Room),
    /// The connection is going away (`serverShutdown`): move to a new one now.
    Moved(String),
    /// The connection ended: what follows needs a new connection and a resync.
    Down(String),
}

/// The room a queued frame holds in its inbox; given back when dropped.
#[derive(Debug)]
pub struct Room(#[allow(dead_code)] OwnedSemaphorePermit);

/// A connection's end of a session's inbox (cheap to clone).
#[derive(Clone, Debug)]
pub struct Inbox {
    tx: mpsc::UnboundedSender<Inbound>,
    room: Arc<Semaphore>,
}

/// A frame the inbox could not take now.
pub enum Refused {
    /// No room: wait for it (`Inbox::frame`) before reading more.
    Full(Utf8Bytes),
    /// The session is gone.
    Closed,
}

/// A new inbox and the session's receiving end.
pub fn inbox() -> (Inbox, mpsc::UnboundedReceiver<Inbound>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let room = Arc::new(Semaphore::new(UNITS));
    (Inbox { tx, room }, rx)
}

/// The units a frame of `len` bytes takes: a frame larger than the whole room takes all of it
/// (it waits for an empty inbox, then passes alone).
fn units(len: usize) -> u32 {
    (len.div_ceil(UNIT)).clamp(1, UNITS) as u32
}

impl Inbox {
    /// Sends a control message; false if the session is gone.
    pub fn control(&self, m: Inbound) -> bool {
        self.tx.send(m).is_ok()
    }

    /// Queues a frame if there is room for it now.
    pub fn try_frame(&self, text: Utf8Bytes) -> Result<(), Refused> {
        if self.tx.is_closed() {
            return Err(Refused::Closed);
        }
        match self.room.clone().try_acquire_many_owned(units(text.len())) {
            Ok(permit) => self
                .tx
                .send(Inbound::Frame(text, Room(permit)))
                .map_err(|_| Refused::Closed),
            Err(_) => Err(Refused::Full(text)),
        }
    }

    /// Waits for room, then queues the frame; false if the session is gone. Cancel-safe: a
    /// dropped wait queues nothing.
    pub async fn frame(&self, text: Utf8Bytes) -> bool {
        let wanted = units(text.len());
        let permit = tokio::select! {
            p = self.room.clone().acquire_many_owned(wanted) => p,
            _ = self.tx.closed() => return false,
        };
        match permit {
            Ok(p) => self.tx.send(Inbound::Frame(text, Room(p))).is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(len: usize) -> Utf8Bytes {
        "x".repeat(len).into()
    }

    /// Frames queue until the room is used up; dropping one (the session read it) makes room
    /// for the next; control messages pass regardless.
    #[tokio::test]
    async fn frames_wait_for_room_control_messages_do_not() {
        let (inbox, mut rx) = inbox();
        let mut queued = 0;
        let refused = loop {
            match inbox.try_frame(text(10 * UNIT)) {
                Ok(()) => queued += 1,
                Err(Refused::Full(t)) => break t,
                Err(Refused::Closed) => panic!("closed"),
            }
        };
        assert_eq!(queued, UNITS / 10);
        assert!(inbox.control(Inbound::Down("bye".into())));
        let waiting = tokio::spawn({
            let inbox = inbox.clone();
            async move { inbox.frame(refused).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no room yet");
        drop(rx.recv().await); // the session reads (and drops) one frame
        assert!(waiting.await.unwrap(), "queued once there was room");
        // A frame larger than the whole room still passes, alone.
        while let Ok(m) = rx.try_recv() {
            drop(m);
        }
        assert!(inbox.try_frame(text(4 * ROOM_BYTES)).is_ok());
        assert!(matches!(inbox.try_frame(text(1)), Err(Refused::Full(_))));
        drop(rx);
        assert!(!inbox.frame(text(1)).await, "the session is gone");
    }
}
