//! A deadline for reading a whole request body.
//!
//! tower-http's `RequestBodyTimeoutLayer` bounds the gap between two body frames and restarts
//! at each one, so a client that sends one byte just inside the gap holds its connection (and
//! one of the server's connection permits) for as long as it likes. [`start`]
//! instead starts one clock when the request's head has arrived and fails the body when it
//! runs out, however the bytes trickle in. A handler that reads the body sees
//! [`BodyDeadlineExceeded`] in the error's source chain and answers 408 `body_timeout`
//! (see `forward::body_bytes`): the request was not proposed.
//!
//! It owns only the body's clock: what the handler does after the body is read (waiting for
//! Raft) is bounded by the request timeout, not by this.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use hyper::body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The error a body gives once its deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive whole within {0:?}")]
pub(crate) struct BodyDeadlineExceeded(Duration);

/// `req` with its body under a deadline `timeout` from now (when the request reached the
/// router): past it, the body fails with [`BodyDeadlineExceeded`]. Applied to every request by
/// a `tower::util::MapRequestLayer` in [`super::router`].
pub(crate) fn start(req: Request, timeout: Duration) -> Request {
    let deadline = Instant::now() + timeout;
    req.map(|body| Body::new(DeadlineBody { body, deadline, timer: None, timeout }))
}

/// Whether `error`, or an error in its source chain, is [`BodyDeadlineExceeded`].
pub(crate) fn exceeded(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.is::<BodyDeadlineExceeded>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// A body that fails with [`BodyDeadlineExceeded`] once `deadline` has passed before its end.
struct DeadlineBody {
    body: Body,
    deadline: Instant,
    /// Fires at the deadline; never reset. Made the first time the body has to wait for bytes:
    /// a body that came with its head (most do) costs a clock read, not a timer.
    timer: Option<Pin<Box<Sleep>>>,
    timeout: Duration,
}

impl DeadlineBody {
    fn exceeded<T>(&self) -> Poll<Option<Result<T, axum::Error>>> {
        Poll::Ready(Some(Err(axum::Error::new(BodyDeadlineExceeded(self.timeout)))))
    }
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        // The deadline first: bytes that keep trickling in must not keep the body alive.
        let passed = match self.timer.as_mut() {
            Some(timer) => timer.as_mut().poll(cx).is_ready(),
            None => Instant::now() >= self.deadline,
        };
        if passed {
            return self.exceeded();
        }
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if polled.is_pending() && self.timer.is_none() {
            // Waiting for bytes: the timer wakes this body at the deadline if they don't come.
            let mut timer = Box::pin(tokio::time::sleep_until(self.deadline));
            let fired = timer.as_mut().poll(cx).is_ready();
            self.timer = Some(timer);
            if fired {
                return self.exceeded();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::{Body, Bytes};
    use axum::extract::Request;
    use futures_util::StreamExt;

    use super::{exceeded, start};

    /// A body whose frames each come within the timeout still fails at the deadline: the
    /// clock is the whole body's, not the gap's.
    #[tokio::test(start_paused = true)]
    async fn a_trickling_body_fails_at_the_deadline() {
        // Ten frames 0.4 s apart: 4 s in all.
        let trickle = futures_util::stream::unfold(0u32, |n| async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            (n < 10).then(|| (Ok::<_, std::io::Error>(Bytes::from_static(b"x")), n + 1))
        });
        let req = Request::new(Body::from_stream(trickle));
        let started = tokio::time::Instant::now();
        let req = start(req, Duration::from_secs(1));
        let mut frames = req.into_body().into_data_stream();
        let mut received = 0;
        let failed = loop {
            match frames.next().await {
                Some(Ok(_)) => received += 1,
                Some(Err(e)) => break e,
                None => panic!("a body of 4 s ended, past a deadline of 1 s"),
            }
        };
        assert_eq!(received, 2, "frames at 0.4 s and 0.8 s arrive, the one at 1.2 s does not");
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert!(exceeded(&failed), "{failed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_arrives_in_time_is_whole() {
        let req = start(Request::new(Body::from("abc")), Duration::from_secs(1));
        let bytes = axum::body::to_bytes(req.into_body(), 10).await.unwrap();
        assert_eq!(&bytes[..], b"abc");
    }
}
