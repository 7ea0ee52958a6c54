//! A gray failure for the direct-call networks: a node that accepts requests and never
//! answers.
//!
//! Once a node is [`Hang::hang`]ed, every RPC *to* it is taken and then left pending forever: a
//! unary call's future never completes, and a `stream_append` keeps consuming the leader's
//! requests (so the sender never sees back-pressure or a closed connection) while its response
//! stream never yields again, not even for requests delivered before the hang. The node itself
//! keeps running and its own outbound RPCs still work, as with a process whose request handler
//! is stuck. Only the caller's own timeouts get it out.

use std::future::{Future, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::{Stream, StreamExt};

/// Whether RPCs to one node hang. Cheap to clone; every client of the node shares it.
#[derive(Debug, Clone, Default)]
pub struct Hang(Arc<AtomicBool>);

impl Hang {
    /// From now on, RPCs to this node hang. There is no way back: a measurement hangs a node
    /// for its whole run and then throws the cluster away.
    pub fn hang(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether RPCs to this node hang.
    pub fn is_hung(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Run `call`, unless the node is hung: then never finish (and never start `call`).
    pub async fn call<T>(&self, call: impl Future<Output = T>) -> T {
        if self.is_hung() {
            std::future::pending::<()>().await;
        }
        call.await
    }

    /// The requests of a stream that reach the node: all of them until it hangs, none after.
    /// The stream is still drained, so the sender sees its requests taken.
    pub fn requests<S: Stream>(&self, input: S) -> impl Stream<Item = S::Item> + use<S> {
        let hang = self.clone();
        input.filter(move |_| ready(!hang.is_hung()))
    }

    /// The responses a stream's caller sees: all of them until the node hangs, none after.
    pub fn responses<S: Stream>(&self, responses: S) -> impl Stream<Item = S::Item> + use<S> {
        let hang = self.clone();
        responses.filter(move |_| ready(!hang.is_hung()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::{StreamExt, stream};

    use super::Hang;

    #[tokio::test]
    async fn a_hung_call_never_finishes() {
        let hang = Hang::default();
        assert_eq!(hang.call(async { 1 }).await, 1);
        hang.hang();
        let hung = tokio::time::timeout(Duration::from_millis(20), hang.call(async { 1 })).await;
        assert!(hung.is_err());
    }

    #[tokio::test]
    async fn a_hung_stream_drains_its_input_and_yields_nothing() {
        let hang = Hang::default();
        let mut delivered = Box::pin(hang.requests(stream::iter(0..3)));
        assert_eq!(delivered.next().await, Some(0));
        hang.hang();
        // The remaining requests are taken and dropped; the input ends, so this one does too.
        assert_eq!(delivered.next().await, None);

        let mut answers = Box::pin(hang.responses(stream::iter(0..3).chain(stream::pending())));
        let hung = tokio::time::timeout(Duration::from_millis(20), answers.next()).await;
        assert!(hung.is_err());
    }
}
