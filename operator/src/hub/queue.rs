//! One stream's queue of events: bounded, one sender (the hub) and one receiver (the stream),
//! and no buffer at all while empty.
//!
//! A sidecar's streams are idle nearly all the time, and there is one per sidecar and
//! resource kind. tokio's `mpsc` allocates its channel state and a first block of 32 slots
//! when created and keeps them for the channel's life (~0.9 KiB per stream). This queue is a
//! `VecDeque` behind a mutex that is allocated at the first event and freed again once the
//! stream has taken the last one; an idle stream costs one small allocation.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::Event;

/// Creates a queue that holds at most `capacity` events.
pub fn queue(capacity: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        capacity,
        state: Mutex::new(State::default()),
    });
    (Sender(shared.clone()), Receiver(shared))
}

struct Shared {
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    events: VecDeque<Event>,
    /// The receiver waiting for the next event.
    waker: Option<Waker>,
    sender_gone: bool,
    receiver_gone: bool,
    /// The sender gave up on a full queue (see [`Sender::fell_behind`]).
    fell_behind: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why an event was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The queue holds `capacity` events already.
    Full,
    /// The receiver is gone.
    Closed,
}

/// The hub's end.
pub struct Sender(Arc<Shared>);

impl Sender {
    pub fn try_send(&self, event: Event) -> Result<(), SendError> {
        let waker = {
            let mut state = self.0.lock();
            if state.receiver_gone {
                return Err(SendError::Closed);
            }
            if state.events.len() >= self.0.capacity {
                return Err(SendError::Full);
            }
            state.events.push_back(event);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// True once the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.0.lock().receiver_gone
    }

    /// Marks the receiver as fallen behind, for [`Receiver::fell_behind`]; the hub then drops
    /// this sender, so the receiver gets what is buffered, then `None`.
    pub fn fell_behind(&self) {
        self.0.lock().fell_behind = true;
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.0.lock();
            state.sender_gone = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The stream's end.
pub struct Receiver(Arc<Shared>);

impl Receiver {
    /// The next event; `None` once the queue is empty and the sender gone.
    pub async fn recv(&mut self) -> Option<Event> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let mut state = self.0.lock();
        if let Some(event) = state.events.pop_front() {
            if state.events.is_empty() {
                // Give the buffer back: an idle stream keeps nothing.
                state.events = VecDeque::new();
            }
            return Poll::Ready(Some(event));
        }
        if state.sender_gone {
            return Poll::Ready(None);
        }
        if !state
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<Event> {
        let waker = std::task::Waker::noop();
        match self.poll_recv(&mut Context::from_waker(waker)) {
            Poll::Ready(event) => event,
            Poll::Pending => None,
        }
    }

    /// True when the hub ended the queue because this stream fell behind.
    pub fn fell_behind(&self) -> bool {
        self.0.lock().fell_behind
    }

    #[cfg(test)]
    fn buffer_capacity(&self) -> usize {
        self.0.lock().events.capacity()
    }
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.0.lock();
        f.debug_struct("Receiver")
            .field("queued", &state.events.len())
            .field("capacity", &self.0.capacity)
            .finish_non_exhaustive()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver_gone = true;
        state.events = VecDeque::new();
        state.waker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{EventKind, Object};

    fn event(n: usize) -> Event {
        let value = serde_json::json!({"metadata": {"name": format!("c{n}"), "namespace": "ns"}});
        Event {
            kind: EventKind::Updated,
            object: Arc::new(Object::new(value)),
        }
    }

    fn name(event: Option<Event>) -> String {
        event.unwrap().object.name.clone()
    }

    #[test]
    fn events_come_out_in_order_and_a_full_queue_refuses_more() {
        let (tx, mut rx) = queue(2);
        tx.try_send(event(1)).unwrap();
        tx.try_send(event(2)).unwrap();
        assert_eq!(tx.try_send(event(3)), Err(SendError::Full));
        assert_eq!(name(rx.try_recv()), "c1");
        tx.try_send(event(3)).unwrap();
        assert_eq!(name(rx.try_recv()), "c2");
        assert_eq!(name(rx.try_recv()), "c3");
        assert!(rx.try_recv().is_none());
    }

    #[test]
    fn an_empty_queue_holds_no_buffer() {
        let (tx, mut rx) = queue(256);
        assert_eq!(rx.buffer_capacity(), 0);
        for n in 0..10 {
            tx.try_send(event(n)).unwrap();
        }
        assert!(rx.buffer_capacity() >= 10);
        while rx.try_recv().is_some() {}
        assert_eq!(rx.buffer_capacity(), 0, "the drained buffer is freed");
    }

    #[test]
    fn after_the_sender_is_gone_the_receiver_gets_what_is_left_then_none() {
        let (tx, mut rx) = queue(4);
        tx.try_send(event(1)).unwrap();
        tx.fell_behind();
        drop(tx);
        assert_eq!(name(rx.try_recv()), "c1");
        assert!(matches!(
            rx.poll_recv(&mut Context::from_waker(Waker::noop())),
            Poll::Ready(None)
        ));
        assert!(rx.fell_behind());
    }

    #[test]
    fn a_dropped_receiver_closes_the_queue() {
        let (tx, rx) = queue(4);
        assert!(!tx.is_closed());
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(tx.try_send(event(1)), Err(SendError::Closed));
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_an_event_and_by_the_end() {
        let (tx, mut rx) = queue(4);
        let waiting = tokio::spawn(async move {
            let first = rx.recv().await.map(|e| e.object.name.clone());
            let end = rx.recv().await.is_none();
            (first, end, rx.fell_behind())
        });
        tokio::task::yield_now().await;
        tx.try_send(event(7)).unwrap();
        tokio::task::yield_now().await;
        drop(tx);
        let (first, end, fell_behind) = waiting.await.unwrap();
        assert_eq!(first.as_deref(), Some("c7"));
        assert!(end);
        assert!(
            !fell_behind,
            "a sender dropped normally is not a stream falling behind"
        );
    }
}
