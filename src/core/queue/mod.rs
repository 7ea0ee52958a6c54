//! The node's internal queues: API calls, client writes, peers' RPCs, notifications and the
//! state machine task's work, each a multi-producer, single-consumer queue.
//!
//! # Why not tokio's mpsc
//!
//! A tokio channel allocates its first block of 32 slots when it is created, whether or not a
//! message ever comes. A host of many Raft groups (`crate::multi`) runs thousands of nodes
//! that sit idle, each with five queues: 32 slots of every message type, five times over, were
//! about 15 KiB per idle group. These queues allocate their buffer on the first message and
//! hand it back when the owner says the group is idle
//! ([`Receiver::release_idle_capacity`]); an empty queue is one small shared header.
//!
//! # The concept
//!
//! A queue is a [`VecDeque`] under a [`Mutex`], shared by the senders and the one
//! [`Receiver`]. A sender pushes under the lock; if the queue was empty, it wakes the receiver
//! through an [`AtomicWaker`]. A push onto a non-empty queue wakes nobody: the receiver sleeps
//! only after it registered its waker and then, under the lock, found the queue empty, so a
//! queue that is not empty has a receiver that is awake or about to pop (the wake that made
//! the queue non-empty may have found no waker registered, while the receiver was draining
//! with `try_recv`: it pops before it sleeps all the same).
//!
//! A bounded queue ([`bounded`]) has a [`Semaphore`] of `capacity` permits: a sender takes one
//! before it pushes (waiting if there is none, which is the back-pressure) and the receiver
//! gives one back for every message it pops. An unbounded queue ([`unbounded`]) has none; its
//! sender never waits, and may send from any thread, not only from a runtime's.
//!
//! Closing works both ways, as with tokio's channels: when every sender is dropped, the
//! receiver gets what was queued and then `None`; when the receiver is dropped, every queued
//! message is dropped at once (so callers waiting on a responder inside one learn that the node
//! stopped) and every send fails, handing its message back.
//!
//! The receiver takes part in tokio's cooperative scheduling as tokio's channels do: a task
//! that always finds a message ready still yields to the scheduler now and then.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};

use futures_util::task::AtomicWaker;
use tokio::sync::{Notify, Semaphore, TryAcquireError};

#[cfg(test)]
mod tests;

/// A queue of at most `capacity` messages (at least one; at most [`Semaphore::MAX_PERMITS`]).
/// Nothing is allocated but the shared header until the first message is sent.
pub(crate) fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let permits = capacity.clamp(1, Semaphore::MAX_PERMITS);
    let shared = Arc::new(Shared::new(Some(Semaphore::new(permits))));
    (Sender { core: SenderCore::new(shared.clone()) }, Receiver { shared })
}

/// A queue without a bound: sending never waits. Nothing is allocated but the shared header
/// until the first message is sent.
pub(crate) fn unbounded<T>() -> (UnboundedSender<T>, Receiver<T>) {
    let shared = Arc::new(Shared::new(None));
    (UnboundedSender { core: SenderCore::new(shared.clone()) }, Receiver { shared })
}

/// The receiver is gone: the message is handed back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SendError<T>(pub(crate) T);

/// Why [`Sender::try_send`] (or `try_reserve_many`, with `T = ()`) did not send.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TrySendError<T> {
    /// The queue has no room now.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

/// Why [`Receiver::try_recv`] returned nothing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TryRecvError {
    /// Nothing is queued now.
    Empty,
    /// Nothing is queued and every sender is gone: nothing ever will be.
    Disconnected,
}

/// What the senders and the receiver share.
struct Shared<T> {
    /// The messages, and whether the receiver is still there.
    ///
    /// Invariant: once `receiver_alive` is false, `items` stays empty.
    queue: Mutex<Queue<T>>,
    /// Live senders (bounded and unbounded alike), and the [`CLOSED`] bit. When the count
    /// reaches zero the receiver is woken, and after what is queued it gets `None`.
    senders: AtomicUsize,
    /// The receiver's waker, registered before it sleeps.
    receiver: AtomicWaker,
    /// Bounded queues: one permit per free slot. Closed when the receiver is dropped, which
    /// fails every sender waiting for room.
    permits: Option<Semaphore>,
    /// Notified when the receiver is dropped, for [`Sender::closed`].
    receiver_gone: Notify,
}

/// The bit of `Shared::senders` that [`UnboundedSender::close`] sets: the receiver gets `None`
/// from then on, whatever senders live. In the count's word, so that the header does not grow
/// (every idle group of a host has five queues).
const CLOSED: usize = 1 << (usize::BITS - 1);

struct Queue<T> {
    items: VecDeque<T>,
    receiver_alive: bool,
}

impl<T> Shared<T> {
    fn new(permits: Option<Semaphore>) -> Self {
        Self {
            queue: Mutex::new(Queue { items: VecDeque::new(), receiver_alive: true }),
            senders: AtomicUsize::new(1),
            receiver: AtomicWaker::new(),
            permits,
            receiver_gone: Notify::new(),
        }
    }

    /// The lock, even if a thread panicked while holding it: every update of `Queue` is a
    /// single `VecDeque` call or a flag write, which leaves it consistent either way.
    fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queue `msg` (its permit, if bounded, already taken) and wake the receiver if the queue
    /// was empty. Hands `msg` back if the receiver is gone.
    fn push(&self, msg: T) -> Result<(), T> {
        let mut queue = self.lock();
        if !queue.receiver_alive {
            return Err(msg);
        }
        let was_empty = queue.items.is_empty();
        queue.items.push_back(msg);
        drop(queue);
        // A queue that was not empty needs no wake: the receiver sleeps only after finding the
        // queue empty under this lock, with its waker registered; until then it pops what is
        // queued (see the module docs).
        if was_empty {
            self.receiver.wake();
        }
        Ok(())
    }

    /// Take the oldest message, and give its slot back.
    fn pop(&self) -> Option<T> {
        let msg = self.lock().items.pop_front();
        if let (Some(_), Some(permits)) = (&msg, &self.permits) {
            permits.add_permits(1);
        }
        msg
    }

    /// Free the buffer if nothing is queued.
    fn release_idle_capacity(&self) {
        let mut queue = self.lock();
        if queue.items.is_empty() && queue.items.capacity() > 0 {
            queue.items = VecDeque::new();
        }
    }
}

/// Counts itself among the live senders; the last one to go wakes the receiver.
struct SenderCore<T> {
    shared: Arc<Shared<T>>,
}

impl<T> SenderCore<T> {
    /// The first sender: `Shared::new` counted it already.
    fn new(shared: Arc<Shared<T>>) -> Self {
        Self { shared }
    }
}

impl<T> Clone for SenderCore<T> {
    fn clone(&self) -> Self {
        // Relaxed, as for `Arc`: the clone is made from a live sender, so the count is at least
        // one and cannot reach zero concurrently.
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Self { shared: self.shared.clone() }
    }
}

impl<T> Drop for SenderCore<T> {
    fn drop(&mut self) {
        // AcqRel: the receiver that reads zero (Acquire) sees every push this sender made.
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.receiver.wake();
        }
    }
}

/// The sending side of a [`bounded`] queue. Cheap to clone.
pub(crate) struct Sender<T> {
    core: SenderCore<T>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Self { core: self.core.clone() }
    }
}

impl<T> Sender<T> {
    fn permits(&self) -> &Semaphore {
        // Invariant: `bounded` is the only constructor of a `Sender`, and it gives the shared
        // state a semaphore.
        self.core.shared.permits.as_ref().expect("a bounded queue has permits")
    }

    /// Send `msg`, waiting for room if the queue is full.
    ///
    /// # Errors
    /// [`SendError`] with `msg` if the receiver is gone (also while waiting).
    ///
    /// # Cancel safety
    /// Cancel safe in that nothing is sent if the future is dropped before it completes; the
    /// message is then dropped, and the place in line for room is lost.
    pub(crate) async fn send(&self, msg: T) -> Result<(), SendError<T>> {
        match self.permits().acquire().await {
            Ok(permit) => permit.forget(),
            Err(_closed) => return Err(SendError(msg)),
        }
        self.core.shared.push(msg).map_err(SendError)
    }

    /// Wait until the receiver is gone.
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits.
    #[allow(dead_code, reason = "for Raft::wait_stopped, which main gained after this branch forked")]
    pub(crate) async fn closed(&self) {
        let shared = &self.core.shared;
        loop {
            let mut gone = pin!(shared.receiver_gone.notified());
            // Registered before the look, so a drop between the look and the wait wakes it.
            gone.as_mut().enable();
            if !shared.lock().receiver_alive {
                return;
            }
            gone.await;
        }
    }

    /// Send `msg` if the queue has room now.
    ///
    /// # Errors
    /// [`TrySendError::Full`] if it has none, [`TrySendError::Closed`] if the receiver is gone;
    /// both hand `msg` back.
    pub(crate) fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        match self.permits().try_acquire() {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::NoPermits) => return Err(TrySendError::Full(msg)),
            Err(TryAcquireError::Closed) => return Err(TrySendError::Closed(msg)),
        }
        self.core.shared.push(msg).map_err(TrySendError::Closed)
    }

    /// Reserve room for `n` messages at once, waiting until there is; send them through the
    /// returned [`Permits`].
    ///
    /// # Errors
    /// [`SendError`] if the receiver is gone, or if `n` is more than a semaphore can count
    /// (callers check `n` against the capacity first, so it never fits either).
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is reserved if the future is dropped before it completes.
    pub(crate) async fn reserve_many(&self, n: usize) -> Result<Permits<'_, T>, SendError<()>> {
        let count = u32::try_from(n).map_err(|_| SendError(()))?;
        match self.permits().acquire_many(count).await {
            Ok(permit) => permit.forget(),
            Err(_closed) => return Err(SendError(())),
        }
        Ok(Permits { shared: &self.core.shared, left: n })
    }

    /// Reserve room for `n` messages at once if there is room now.
    ///
    /// # Errors
    /// [`TrySendError::Full`] if there is not (or `n` is more than a semaphore can count),
    /// [`TrySendError::Closed`] if the receiver is gone.
    pub(crate) fn try_reserve_many(&self, n: usize) -> Result<Permits<'_, T>, TrySendError<()>> {
        let count = u32::try_from(n).map_err(|_| TrySendError::Full(()))?;
        match self.permits().try_acquire_many(count) {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::NoPermits) => return Err(TrySendError::Full(())),
            Err(TryAcquireError::Closed) => return Err(TrySendError::Closed(())),
        }
        Ok(Permits { shared: &self.core.shared, left: n })
    }
}

/// Room reserved in a bounded queue for a number of messages. Room not used is given back when
/// this is dropped.
pub(crate) struct Permits<'a, T> {
    shared: &'a Arc<Shared<T>>,
    left: usize,
}

impl<T> Permits<'_, T> {
    /// Send `msg` in one of the reserved places.
    ///
    /// # Errors
    /// [`SendError`] with `msg` if no place is left, or if the receiver is gone.
    pub(crate) fn send(&mut self, msg: T) -> Result<(), SendError<T>> {
        if self.left == 0 {
            return Err(SendError(msg));
        }
        self.left -= 1;
        self.shared.push(msg).map_err(SendError)
    }
}

impl<T> Drop for Permits<'_, T> {
    fn drop(&mut self) {
        match &self.shared.permits {
            Some(permits) if self.left > 0 => permits.add_permits(self.left),
            _ => {}
        }
    }
}

/// The sending side of an [`unbounded`] queue. Cheap to clone; sends from any thread.
pub(crate) struct UnboundedSender<T> {
    core: SenderCore<T>,
}

impl<T> Clone for UnboundedSender<T> {
    fn clone(&self) -> Self {
        Self { core: self.core.clone() }
    }
}

impl<T> UnboundedSender<T> {
    /// Send `msg` now.
    ///
    /// # Errors
    /// [`SendError`] with `msg` if the receiver is gone.
    pub(crate) fn send(&self, msg: T) -> Result<(), SendError<T>> {
        self.core.shared.push(msg).map_err(SendError)
    }

    /// Free the queue's buffer if nothing is queued (see [`Receiver::release_idle_capacity`]).
    pub(crate) fn release_idle_capacity(&self) {
        self.core.shared.release_idle_capacity();
    }

    /// Close the queue from the sending side, whatever other senders live: what is queued is
    /// dropped, every later send fails, and the receiver's next `recv` returns `None`.
    pub(crate) fn close(&self) {
        let shared = &self.core.shared;
        let queued = {
            let mut queue = shared.lock();
            queue.receiver_alive = false;
            std::mem::take(&mut queue.items)
        };
        // Release: a receiver that sees the bit (Acquire) sees the emptied queue.
        shared.senders.fetch_or(CLOSED, Ordering::Release);
        shared.receiver.wake();
        // Dropped outside the lock: a message's drop (a responder) may run arbitrary code.
        drop(queued);
    }
}

/// The receiving side of a queue: there is exactly one.
pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// The next message, waiting for one; `None` once every sender is gone and the queue is
    /// drained.
    ///
    /// # Cancel safety
    /// Cancel safe: a message is taken from the queue only in the poll that returns it, so if
    /// the future is dropped (another `select!` branch won) nothing is lost.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Poll for the next message; see [`Self::recv`].
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        if let Some(msg) = self.shared.pop() {
            coop.made_progress();
            return Poll::Ready(Some(msg));
        }
        self.shared.receiver.register(cx.waker());
        // Look again: a message pushed after the first look and before `register` woke no one.
        if let Some(msg) = self.shared.pop() {
            coop.made_progress();
            return Poll::Ready(Some(msg));
        }
        if self.shared.senders.load(Ordering::Acquire) == 0 {
            // Every sender is gone; whatever they pushed before leaving is visible now.
            coop.made_progress();
            return Poll::Ready(self.shared.pop());
        }
        if self.is_closed() {
            coop.made_progress();
            return Poll::Ready(None);
        }
        Poll::Pending
    }

    /// Whether a sender closed the queue ([`UnboundedSender::close`]).
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.senders.load(Ordering::Acquire) & CLOSED != 0
    }

    /// The next message if one is queued now.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] if none is, [`TryRecvError::Disconnected`] if none is and every
    /// sender is gone.
    pub(crate) fn try_recv(&mut self) -> Result<T, TryRecvError> {
        if let Some(msg) = self.shared.pop() {
            return Ok(msg);
        }
        if self.shared.senders.load(Ordering::Acquire) == 0 {
            return self.shared.pop().ok_or(TryRecvError::Disconnected);
        }
        if self.is_closed() {
            return Err(TryRecvError::Disconnected);
        }
        Err(TryRecvError::Empty)
    }

    /// Whether nothing is queued now.
    pub(crate) fn is_empty(&self) -> bool {
        self.shared.lock().items.is_empty()
    }

    /// How many messages are queued now.
    pub(crate) fn len(&self) -> usize {
        self.shared.lock().items.len()
    }

    /// How many messages the buffer holds without growing.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.shared.lock().items.capacity()
    }

    /// Free the queue's buffer if nothing is queued. The owner calls it when its group has gone
    /// idle; a busy queue keeps its buffer, so the hot path does not allocate for it.
    pub(crate) fn release_idle_capacity(&self) {
        self.shared.release_idle_capacity();
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let queued = {
            let mut queue = self.shared.lock();
            queue.receiver_alive = false;
            std::mem::take(&mut queue.items)
        };
        // Fail the senders waiting for room, and every later send.
        if let Some(permits) = &self.shared.permits {
            permits.close();
        }
        // Wake whoever waits in `Sender::closed`.
        self.shared.receiver_gone.notify_waiters();
        // Dropped outside the lock: a message's drop (a responder) may run arbitrary code.
        drop(queued);
    }
}
