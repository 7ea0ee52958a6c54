//! The queue's promises: no lost wake-up, closing both ways, back-pressure, and every message
//! exactly once and in order under concurrent senders.
//!
//! Single-step tests poll by hand with a waker that counts its wake-ups, so "the receiver was
//! woken" is asserted, not waited for; the stress tests run on tokio's multi-thread runtime and
//! use timeouts only to fail instead of hanging.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use super::{Receiver, SendError, TryRecvError, TrySendError, bounded, unbounded};

/// A waker that counts how often it was woken.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting_waker() -> (Arc<CountingWaker>, Waker) {
    let count = Arc::new(CountingWaker::default());
    (count.clone(), Waker::from(count))
}

fn woken(count: &CountingWaker) -> usize {
    count.0.load(Ordering::SeqCst)
}

/// Poll `rx` once with `waker`.
fn poll_recv<T>(rx: &mut Receiver<T>, waker: &Waker) -> Poll<Option<T>> {
    rx.poll_recv(&mut Context::from_waker(waker))
}

/// Poll a future once with `waker`.
fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(waker))
}

#[test]
fn a_waiting_receiver_is_woken_by_a_send() {
    let (tx, mut rx) = unbounded::<u32>();
    let (count, waker) = counting_waker();
    assert_eq!(poll_recv(&mut rx, &waker), Poll::Pending);
    tx.send(1).unwrap();
    assert_eq!(woken(&count), 1, "the send must wake the receiver that waits");
    assert_eq!(poll_recv(&mut rx, &waker), Poll::Ready(Some(1)));
}

#[test]
fn a_bounded_send_wakes_the_receiver_too() {
    let (tx, mut rx) = bounded::<u32>(4);
    let (count, waker) = counting_waker();
    assert_eq!(poll_recv(&mut rx, &waker), Poll::Pending);
    tx.try_send(1).unwrap();
    assert_eq!(woken(&count), 1);
    assert_eq!(poll_recv(&mut rx, &waker), Poll::Ready(Some(1)));
    // Again after the queue emptied: the next first message wakes it again.
    assert_eq!(poll_recv(&mut rx, &waker), Poll::Pending);
    let send = pin!(tx.send(2));
    assert_eq!(poll_once(send, &waker), Poll::Ready(Ok(())));
    assert!(woken(&count) >= 2, "the second message, sent after a drain, must wake again");
    assert_eq!(poll_recv(&mut rx, &waker), Poll::Ready(Some(2)));
}

#[test]
fn messages_queued_behind_the_first_are_received_without_another_wake() {
    let (tx, mut rx) = unbounded::<u32>();
    let (_count, waker) = counting_waker();
    assert_eq!(poll_recv(&mut rx, &waker), Poll::Pending);
    for i in 0..3 {
        tx.send(i).unwrap();
    }
    for i in 0..3 {
        assert_eq!(poll_recv(&mut rx, &waker), Poll::Ready(Some(i)));
    }
    assert_eq!(poll_recv(&mut rx, &waker), Poll::Pending);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
}

#[test]
fn a_dropped_recv_future_loses_nothing() {
    let (tx, mut rx) = unbounded::<u32>();
    let (_count, waker) = counting_waker();
    {
        let recv = pin!(rx.recv());
        assert_eq!(poll_once(recv, &waker), Poll::Pending);
    }
    tx.send(7).unwrap();
    let recv = pin!(rx.recv());
    assert_eq!(poll_once(recv, &waker), Poll::Ready(Some(7)));
}

#[test]
fn the_last_sender_dropped_wakes_the_receiver_which_drains_then_ends() {
    let (tx, mut rx) = unbounded::<u32>();
    let tx2 = tx.clone();
    let (count, waker) = counting_waker();
    assert_eq!(poll_recv(&mut rx, &waker), Poll::Pending);
    drop(tx);
    assert_eq!(woken(&count), 0);
    assert_eq!(poll_recv(&mut rx, &waker), Poll::Pending, "one sender is still there");
    tx2.send(1).unwrap();
    assert_eq!(poll_recv(&mut rx, &waker), Poll::Ready(Some(1)));
    assert_eq!(poll_recv(&mut rx, &waker), Poll::Pending);
    let before = woken(&count);
    drop(tx2);
    assert_eq!(woken(&count), before + 1, "dropping the last sender must wake the receiver");
    assert_eq!(poll_recv(&mut rx, &waker), Poll::Ready(None));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
}

#[test]
fn what_was_queued_before_the_last_sender_left_is_still_received() {
    let (tx, mut rx) = bounded::<u32>(4);
    tx.try_send(1).unwrap();
    tx.try_send(2).unwrap();
    drop(tx);
    assert_eq!(rx.try_recv(), Ok(1));
    let (_count, waker) = counting_waker();
    assert_eq!(poll_recv(&mut rx, &waker), Poll::Ready(Some(2)));
    assert_eq!(poll_recv(&mut rx, &waker), Poll::Ready(None));
}

#[test]
fn a_receiver_waiting_when_the_last_sender_goes_is_woken_with_none() {
    let (tx, mut rx) = bounded::<u32>(2);
    let (count, waker) = counting_waker();
    assert_eq!(poll_recv(&mut rx, &waker), Poll::Pending);
    drop(tx);
    assert_eq!(woken(&count), 1, "dropping the last sender must wake the receiver");
    assert_eq!(poll_recv(&mut rx, &waker), Poll::Ready(None));
}

#[test]
fn a_dropped_receiver_fails_every_send_and_drops_what_was_queued() {
    let (tx, rx) = bounded::<Arc<()>>(4);
    let (utx, urx) = unbounded::<Arc<()>>();
    let token = Arc::new(());
    tx.try_send(token.clone()).unwrap();
    utx.send(token.clone()).unwrap();
    assert_eq!(Arc::strong_count(&token), 3);
    drop(rx);
    drop(urx);
    assert_eq!(Arc::strong_count(&token), 1, "queued messages are dropped with the receiver");
    assert!(matches!(tx.try_send(token.clone()), Err(TrySendError::Closed(_))));
    assert!(utx.send(token.clone()).is_err());
    let (_count, waker) = counting_waker();
    let send = pin!(tx.send(token.clone()));
    assert!(matches!(poll_once(send, &waker), Poll::Ready(Err(SendError(_)))));
    assert!(matches!(tx.try_reserve_many(1), Err(TrySendError::Closed(()))));
    assert_eq!(Arc::strong_count(&token), 1, "every failed send handed its message back");
}

#[test]
fn a_sender_waiting_for_room_fails_when_the_receiver_is_dropped() {
    let (tx, rx) = bounded::<u32>(1);
    tx.try_send(1).unwrap();
    let (count, waker) = counting_waker();
    let mut send = pin!(tx.send(2));
    assert_eq!(poll_once(send.as_mut(), &waker), Poll::Pending);
    drop(rx);
    assert!(woken(&count) >= 1, "the waiting sender must be woken");
    assert_eq!(poll_once(send, &waker), Poll::Ready(Err(SendError(2))));
}

#[test]
fn closed_waits_until_the_receiver_is_dropped() {
    let (tx, rx) = bounded::<u32>(1);
    let (count, waker) = counting_waker();
    let mut closed = pin!(tx.closed());
    assert_eq!(poll_once(closed.as_mut(), &waker), Poll::Pending);
    tx.try_send(1).unwrap();
    assert_eq!(poll_once(closed.as_mut(), &waker), Poll::Pending, "a send is not a close");
    drop(rx);
    assert_eq!(woken(&count), 1, "dropping the receiver must wake who waits for it");
    assert_eq!(poll_once(closed, &waker), Poll::Ready(()));
    let after = pin!(tx.closed());
    assert_eq!(poll_once(after, &waker), Poll::Ready(()), "and later waits end at once");
}

#[test]
fn a_full_queue_holds_senders_back_until_the_receiver_takes_a_message() {
    let (tx, mut rx) = bounded::<u32>(2);
    tx.try_send(1).unwrap();
    tx.try_send(2).unwrap();
    assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
    let (count, waker) = counting_waker();
    let mut send = pin!(tx.send(3));
    assert_eq!(poll_once(send.as_mut(), &waker), Poll::Pending);
    assert_eq!(rx.len(), 2);
    assert_eq!(rx.try_recv(), Ok(1));
    assert_eq!(woken(&count), 1, "taking a message must wake the sender waiting for room");
    assert_eq!(poll_once(send, &waker), Poll::Ready(Ok(())));
    assert_eq!(tx.try_send(4), Err(TrySendError::Full(4)));
    assert_eq!(rx.try_recv(), Ok(2));
    assert_eq!(rx.try_recv(), Ok(3));
    assert!(rx.is_empty());
}

#[test]
fn reserved_room_not_used_is_given_back() {
    let (tx, mut rx) = bounded::<u32>(3);
    assert!(matches!(tx.try_reserve_many(4), Err(TrySendError::Full(()))));
    {
        let mut permits = tx.try_reserve_many(3).unwrap();
        assert!(matches!(tx.try_reserve_many(1), Err(TrySendError::Full(()))));
        permits.send(1).unwrap();
    }
    // Two places were reserved and not used: they are free again.
    let mut permits = tx.try_reserve_many(2).unwrap();
    permits.send(2).unwrap();
    permits.send(3).unwrap();
    assert_eq!(permits.send(4), Err(SendError(4)), "no place is left");
    drop(permits);
    assert_eq!(tx.try_send(5), Err(TrySendError::Full(5)));
    assert_eq!((rx.try_recv(), rx.try_recv(), rx.try_recv()), (Ok(1), Ok(2), Ok(3)));
}

#[test]
fn reserve_many_waits_for_room_for_the_whole_batch() {
    let (tx, mut rx) = bounded::<u32>(2);
    tx.try_send(1).unwrap();
    let (_count, waker) = counting_waker();
    let mut reserve = pin!(tx.reserve_many(2));
    assert!(poll_once(reserve.as_mut(), &waker).is_pending());
    assert_eq!(rx.try_recv(), Ok(1));
    let Poll::Ready(Ok(mut permits)) = poll_once(reserve, &waker) else { panic!("room for two now") };
    permits.send(2).unwrap();
    permits.send(3).unwrap();
    assert_eq!((rx.try_recv(), rx.try_recv()), (Ok(2), Ok(3)));
}

#[test]
fn nothing_is_allocated_until_a_message_and_an_idle_queue_gives_its_buffer_back() {
    let (tx, mut rx) = unbounded::<u64>();
    assert_eq!(rx.capacity(), 0);
    for i in 0..100 {
        tx.send(i).unwrap();
    }
    assert!(rx.capacity() >= 100);
    rx.release_idle_capacity();
    assert!(rx.capacity() >= 100, "a queue with messages keeps its buffer");
    while rx.try_recv().is_ok() {}
    tx.release_idle_capacity();
    assert_eq!(rx.capacity(), 0);
    tx.send(1).unwrap();
    assert_eq!(rx.try_recv(), Ok(1), "a released queue works as before");
}

/// Many senders on several threads, one receiver: every message arrives once, each sender's in
/// the order it sent them. Run with a small bound, so that senders wait for room most of the
/// time, and unbounded, with senders on plain threads too.
#[test]
fn every_message_arrives_exactly_once_in_per_sender_order_under_contention() {
    const SENDERS: usize = 8;
    const EACH: usize = 20_000;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    rt.block_on(async {
        for capacity in [1, 3, 64] {
            let (tx, mut rx) = bounded::<(usize, usize)>(capacity);
            for s in 0..SENDERS {
                let tx = tx.clone();
                tokio::spawn(async move {
                    for i in 0..EACH {
                        if i % 3 == 0 {
                            // Mix in the other ways to send.
                            let mut msg = (s, i);
                            loop {
                                match tx.try_send(msg) {
                                    Ok(()) => break,
                                    Err(TrySendError::Full(m)) => {
                                        msg = m;
                                        tokio::task::yield_now().await;
                                    }
                                    Err(TrySendError::Closed(_)) => panic!("receiver gone"),
                                }
                            }
                        } else if i % 3 == 1 {
                            let mut permits = tx.reserve_many(1).await.unwrap();
                            permits.send((s, i)).unwrap();
                        } else {
                            tx.send((s, i)).await.unwrap();
                        }
                    }
                });
            }
            drop(tx);
            receive_all(&mut rx, SENDERS, EACH).await;
        }

        let (tx, mut rx) = unbounded::<(usize, usize)>();
        let mut threads = Vec::new();
        for s in 0..SENDERS {
            let tx = tx.clone();
            if s % 2 == 0 {
                tokio::spawn(async move {
                    for i in 0..EACH {
                        tx.send((s, i)).unwrap();
                        if i % 64 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                });
            } else {
                threads.push(std::thread::spawn(move || {
                    for i in 0..EACH {
                        tx.send((s, i)).unwrap();
                    }
                }));
            }
        }
        drop(tx);
        receive_all(&mut rx, SENDERS, EACH).await;
        for t in threads {
            t.join().unwrap();
        }
    });
}

/// Receive until the queue ends, alternating `recv` with `try_recv` drains, and every few
/// messages polling a `recv` future once and dropping it (as a `select!` whose other branch
/// won does), then check the tally.
async fn receive_all(rx: &mut Receiver<(usize, usize)>, senders: usize, each: usize) {
    let mut next = vec![0usize; senders];
    let mut total = 0;
    loop {
        let polled = if total % 7 == 3 {
            let mut recv = pin!(rx.recv());
            std::future::poll_fn(|cx| Poll::Ready(recv.as_mut().poll(cx))).await
        } else {
            Poll::Pending
        };
        let msg = match polled {
            Poll::Ready(msg) => msg,
            // The timer is polled first: `timeout` would poll `recv` first and so find, when its
            // timer fires, a message that was queued all along without a wake-up.
            Poll::Pending => tokio::select! {
                biased;
                _ = tokio::time::sleep(Duration::from_secs(20)) => {
                    panic!("lost wake-up: {total} of {} received, {} queued", senders * each, rx.len())
                }
                msg = rx.recv() => msg,
            },
        };
        let Some((s, i)) = msg else { break };
        assert_eq!(i, next[s], "sender {s}'s messages out of order or duplicated");
        next[s] += 1;
        total += 1;
        while let Ok((s, i)) = rx.try_recv() {
            assert_eq!(i, next[s], "sender {s}'s messages out of order or duplicated");
            next[s] += 1;
            total += 1;
        }
    }
    assert_eq!(next, vec![each; senders], "every message arrives exactly once");
}

/// What an idle queue costs is its shared header alone (one allocation with the `Arc`'s two
/// counts), whatever the message size: it must stay small, for thousands of idle groups.
#[test]
fn an_empty_queue_is_one_small_header_whatever_the_message_size() {
    assert!(size_of::<super::Shared<[u8; 1024]>>() <= 160);
    assert_eq!(size_of::<super::Shared<[u8; 1024]>>(), size_of::<super::Shared<u8>>());
}

/// `close` from a sender, with other senders alive (a replication stream's clone of the state
/// machine queue): what is queued is dropped, a waiting receiver is woken and gets `None`, and
/// every later send fails.
#[test]
fn a_sender_closes_the_queue_for_everyone() {
    let (tx, mut rx) = unbounded::<Arc<()>>();
    let other = tx.clone();
    let queued = Arc::new(());
    tx.send(queued.clone()).unwrap_or_else(|_| panic!("the receiver is alive"));
    let (count, waker) = counting_waker();

    tx.close();
    assert_eq!(Arc::strong_count(&queued), 1, "what was queued is dropped");
    assert!(rx.is_closed());
    assert!(matches!(poll_recv(&mut rx, &waker), Poll::Ready(None)));
    assert!(other.send(Arc::new(())).is_err(), "a send after close fails");
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));

    // A receiver already waiting is woken.
    let (tx, mut rx) = unbounded::<u8>();
    assert!(poll_recv(&mut rx, &waker).is_pending());
    let before = woken(&count);
    tx.close();
    assert_eq!(woken(&count), before + 1);
    assert!(matches!(poll_recv(&mut rx, &waker), Poll::Ready(None)));
}
