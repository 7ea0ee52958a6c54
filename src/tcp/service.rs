//! The service of one accepted connection, after its handshake: route each call and stream to
//! the Raft that serves it ([`Served`]: a node's single Raft, or a group of a
//! [`GroupHost`]), deliver beats, and queue the answers.
//!
//! What cannot be routed is answered, never misrouted: a call or stream for a group the host
//! does not run, for a group on a single-group server, or for no group on a host, gets a
//! [`ToClient::NotServed`] (a stream so answered is over). A beat is delivered only if it
//! comes from the node that said hello on this connection (with TLS, the node its certificate
//! names).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncRead;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;

use super::config::TcpConfig;
use super::io::{Io, ReadError, read_frame, write_frames};
use super::log_limit::RateLimit;
use super::message::{Reply, Rpc, ToClient, ToServer};
use super::wire::{FrameDecoder, decode, encode_frame};
use crate::multi::{GroupHost, GroupId, HostNetwork, NodeBeat};
use crate::{AppendEntriesRequest, Raft, RaftTypeConfig};

/// What a server feeds: the node's single [`Raft`], or the groups of a [`GroupHost`].
pub(crate) trait Served<C: RaftTypeConfig>: Send + Sync + 'static {
    /// The node served.
    fn node_id(&self) -> C::NodeId;

    /// The Raft that serves messages to `group` (`None`: to the node's single Raft), or why
    /// nothing does.
    fn raft(&self, group: Option<GroupId>) -> Result<Raft<C>, String>;

    /// Deliver a peer's beat (already checked to come from the connection's node), or say why
    /// it cannot be.
    fn beat(&self, beat: NodeBeat<C>) -> Result<(), String>;
}

impl<C: RaftTypeConfig> Served<C> for Raft<C> {
    fn node_id(&self) -> C::NodeId {
        self.id()
    }

    fn raft(&self, group: Option<GroupId>) -> Result<Raft<C>, String> {
        match group {
            None => Ok(self.clone()),
            Some(group) => Err(format!("node {} runs a single Raft, not groups (asked for group {group})", self.id())),
        }
    }

    fn beat(&self, _beat: NodeBeat<C>) -> Result<(), String> {
        Err(format!("node {} runs a single Raft and takes no beats", self.id()))
    }
}

impl<C: RaftTypeConfig, N: HostNetwork<C>> Served<C> for GroupHost<C, N> {
    fn node_id(&self) -> C::NodeId {
        self.id()
    }

    fn raft(&self, group: Option<GroupId>) -> Result<Raft<C>, String> {
        match group {
            Some(group) => self.group(group).ok_or_else(|| format!("node {} runs no group {group}", self.id())),
            None => Err(format!("node {} runs groups: a message must name one", self.id())),
        }
    }

    fn beat(&self, beat: NodeBeat<C>) -> Result<(), String> {
        self.receive_beat(beat);
        Ok(())
    }
}

/// What a server logs about peers it refuses or drops, at most once a second each.
pub(crate) struct Refusals {
    pub(crate) handshake: RateLimit,
    pub(crate) protocol: RateLimit,
    /// Beats whose `from` is not the connection's node.
    pub(crate) forged_beats: RateLimit,
    /// Beats to a server that has no host.
    pub(crate) misrouted_beats: RateLimit,
}

impl Refusals {
    pub(crate) fn new() -> Self {
        let second = || RateLimit::new(Duration::from_secs(1));
        Self { handshake: second(), protocol: second(), forged_beats: second(), misrouted_beats: second() }
    }
}

/// Why a connection's service ended.
pub(crate) enum Ended {
    Closed,
    Idle,
    Io(String),
    Protocol(String),
}

/// Who is on the other end of a connection: its address, and the node it proved to be (with
/// TLS) or claimed to be (plain TCP) in its hello.
pub(crate) struct Peer<C: RaftTypeConfig> {
    pub(crate) addr: SocketAddr,
    pub(crate) node: C::NodeId,
}

/// Serve calls, replication streams and beats until the connection ends.
pub(crate) async fn serve_calls<C: RaftTypeConfig>(
    io: Box<dyn Io>,
    mut decoder: FrameDecoder,
    config: &TcpConfig,
    served: Arc<dyn Served<C>>,
    peer: Peer<C>,
    refusals: &Refusals,
) -> Ended {
    let (mut rd, wr) = tokio::io::split(io);
    let (tx, mut rx) = mpsc::channel::<Bytes>(config.send_queue.max(1));
    let mut writer = tokio::spawn(async move { write_frames(wr, &mut rx).await });
    let mut service = Service {
        served,
        peer,
        refusals,
        tx,
        max_frame_bytes: config.max_frame_bytes,
        calls: Arc::new(Semaphore::new(config.max_calls_per_connection.max(1))),
        max_calls: config.max_calls_per_connection.max(1),
        max_streams: config.max_streams_per_connection.max(1),
        streams: HashMap::new(),
        latest_of_group: HashMap::new(),
        prune_latest_at: PRUNE_LATEST_MIN,
        running: HashMap::new(),
        tasks: JoinSet::new(),
    };
    let ended = loop {
        let frame = tokio::select! {
            read = next_frame(&mut rd, &mut decoder, config.idle_timeout) => read,
            written = &mut writer => {
                break match written {
                    Ok(Err(e)) => Ended::Io(format!("writing failed: {e}")),
                    _ => Ended::Closed,
                };
            }
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) if service.is_busy() => continue,
            Ok(None) => break Ended::Idle,
            Err(ReadError::Eof) => break Ended::Closed,
            Err(ReadError::Io(e)) => break Ended::Io(e.to_string()),
            Err(ReadError::Frame(e)) => break Ended::Protocol(e.to_string()),
        };
        let msg = match decode::<ToServer<C>>(&frame) {
            Ok(msg) => msg,
            Err(e) => break Ended::Protocol(e.to_string()),
        };
        if let Err(e) = service.handle(msg).await {
            break Ended::Protocol(e);
        }
    };
    writer.abort();
    service.tasks.abort_all();
    ended
}

/// The next frame, or `None` if none arrived within `idle`. Cancel safe, as [`read_frame`].
async fn next_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    decoder: &mut FrameDecoder,
    idle: Duration,
) -> Result<Option<Bytes>, ReadError> {
    match tokio::time::timeout(idle, read_frame(rd, decoder)).await {
        Ok(frame) => frame.map(Some),
        Err(_) => Ok(None),
    }
}

/// An open stream: the group it was opened for, and where its requests go.
struct OpenStream<C: RaftTypeConfig> {
    group: Option<GroupId>,
    requests: mpsc::Sender<AppendEntriesRequest<C>>,
    /// The task feeding the stream to its Raft: aborted when the stream ends.
    task: tokio::task::AbortHandle,
    /// Resolves once that task has stopped (its future dropped): see [`end_stream`].
    stopped: tokio::sync::oneshot::Receiver<()>,
}

/// Stop `open`'s task and wait until it has: a request it was handing to the node when
/// aborted is then handed over before anything that follows. The task's future holds the
/// sender of `stopped`, which resolves when the future is dropped.
async fn end_stream<C: RaftTypeConfig>(open: OpenStream<C>) {
    open.task.abort();
    let _ = open.stopped.await;
}

/// The calls and streams of one connection.
struct Service<'a, C: RaftTypeConfig> {
    served: Arc<dyn Served<C>>,
    peer: Peer<C>,
    refusals: &'a Refusals,
    tx: mpsc::Sender<Bytes>,
    max_frame_bytes: usize,
    calls: Arc<Semaphore>,
    max_calls: usize,
    /// The most streams open at once.
    max_streams: usize,
    /// Open streams.
    streams: HashMap<u64, OpenStream<C>>,
    /// The latest stream opened for each group this connection streamed to, open or ended
    /// (a group has at most one open: see `append`). A client's stream ids only grow, and one
    /// leader opens a group's streams one after another, so a request for a stream that is
    /// not open and not above its group's latest is for an ended (or replaced) stream.
    /// Per group, not per connection: the first request of a stream opened earlier may follow
    /// a later stream's of another group (found in review: taken for an ended stream, it was
    /// dropped, and its group's replication stalled until the call timed out). One entry per
    /// group that streamed here; those of groups the node no longer serves (removed at run
    /// time) are dropped as it grows ([`forget_unserved`]): bounded by about twice the node's
    /// groups (found in review: a long-lived connection under group churn kept them all).
    latest_of_group: HashMap<Option<GroupId>, u64>,
    /// The size of `latest_of_group` at which it is next pruned.
    prune_latest_at: usize,
    /// The calls executing, by id, so that a client's [`ToServer::Cancel`] can stop one and
    /// free its slot. Finished ones are pruned as it grows past the slots.
    running: HashMap<u64, tokio::task::AbortHandle>,
    tasks: JoinSet<()>,
}

/// The fewest groups `latest_of_group` remembers before it is pruned.
const PRUNE_LATEST_MIN: usize = 64;

/// Drop the groups `serves` no longer holds; the size at which to prune next (twice what is
/// left, so pruning costs O(1) per insert, amortized).
fn forget_unserved<K>(latest: &mut HashMap<K, u64>, serves: impl Fn(&K) -> bool) -> usize {
    latest.retain(|group, _| serves(group));
    (2 * latest.len()).max(PRUNE_LATEST_MIN)
}

/// Requests a stream buffers before the reader waits for the node to take them.
const STREAM_QUEUE: usize = 64;

impl<C: RaftTypeConfig> Service<'_, C> {
    /// Whether a call is running: then a connection on which nothing arrives is waiting for
    /// the node, not idle. Open streams do not count: a leader sends on its stream every
    /// heartbeat interval (a quiesced leader closes it), so a stream on which nothing
    /// arrived for the idle timeout is one whose peer is gone (found in review: a peer that
    /// vanished with a stream open kept its connection, and a `max_connections` slot, for
    /// good, since nothing is ever written to a stream that gets no requests).
    fn is_busy(&self) -> bool {
        self.calls.available_permits() < self.max_calls
    }

    /// Handle one message of the client. An error is a protocol violation: the connection
    /// closes.
    async fn handle(&mut self, msg: ToServer<C>) -> Result<(), String> {
        while self.tasks.try_join_next().is_some() {}
        match msg {
            ToServer::Hello(_) => return Err("a second hello".into()),
            ToServer::Call { id, within_ms, rpc } => self.call(None, id, within_ms, rpc).await?,
            ToServer::GroupCall { group, id, within_ms, rpc } => self.call(Some(group), id, within_ms, rpc).await?,
            ToServer::Append { stream, req } => self.append(None, stream, req).await?,
            ToServer::GroupAppend { group, stream, req } => self.append(Some(group), stream, req).await?,
            ToServer::EndStream { stream } => {
                // The client reads no more answers of the stream, and the requests still
                // queued for the node are of a stream its leader gave up on: drop them with
                // the task (see `append` for why the order matters).
                if let Some(open) = self.take_stream(stream) {
                    end_stream(open).await;
                }
            }
            ToServer::Beat(beat) => self.beat(beat),
            ToServer::Cancel { id } => {
                if let Some(call) = self.running.remove(&id) {
                    // Its future (with its slot) is dropped; the node still handles the
                    // request if it was handed over, as for any call whose caller timed out.
                    call.abort();
                }
            }
        }
        Ok(())
    }

    /// Run call `id` to `group` in a task of its own, or answer that nothing serves it.
    async fn call(&mut self, group: Option<GroupId>, id: u64, within_ms: u64, rpc: Rpc<C>) -> Result<(), String> {
        let raft = match self.served.raft(group) {
            Ok(raft) => raft,
            Err(reason) => {
                self.not_served(id, reason).await;
                return Ok(());
            }
        };
        // The client's wait counts from when it sent the call, a little before it was read
        // here: past it nobody reads the answer.
        let within = Duration::from_millis(within_ms);
        let deadline = tokio::time::Instant::now().checked_add(within);
        // Waits while the connection has its most calls running: reads stop, and TCP pushes
        // back on the client. Each running call ends by its own deadline at the latest, so
        // the wait does too.
        let permit = self.calls.clone().acquire_owned().await.map_err(|_| "closed".to_string())?;
        let (tx, max) = (self.tx.clone(), self.max_frame_bytes);
        let call = self.tasks.spawn(async move {
            let call = execute(raft, id, rpc, tx, max, permit);
            let Some(deadline) = deadline else { return call.await };
            if tokio::time::timeout_at(deadline, call).await.is_err() {
                tracing::debug!(id, ?within, "a call outlived its caller's wait; stopped");
            }
        });
        if self.running.len() >= self.max_calls {
            self.running.retain(|_, call| !call.is_finished());
        }
        self.running.insert(id, call);
        Ok(())
    }

    /// Feed the next request of `stream` to its Raft, opening the stream on its first request.
    async fn append(
        &mut self,
        group: Option<GroupId>,
        stream: u64,
        req: AppendEntriesRequest<C>,
    ) -> Result<(), String> {
        if let Some(open) = self.streams.get(&stream) {
            if open.group != group {
                return Err(format!("stream {stream} was opened for group {:?}, not {group:?}", open.group));
            }
            // Waits while the node has the stream's window full (back-pressure).
            if open.requests.send(req).await.is_err() {
                // The node ended the stream (after an error answer): drop the rest.
                self.take_stream(stream);
            }
            return Ok(());
        }
        let latest = self.latest_of_group.get(&group).copied();
        if latest.is_some_and(|latest| stream <= latest) {
            return Ok(());
        }
        let raft = match self.served.raft(group) {
            Ok(raft) => raft,
            // The stream is over at once. Its later requests (already sent) are answered the
            // same, and ignored by the client, which has ended the stream: nothing is
            // remembered for a group this node does not serve.
            Err(reason) => {
                self.not_served(stream, reason).await;
                return Ok(());
            }
        };
        self.latest_of_group.insert(group, stream);
        if self.latest_of_group.len() >= self.prune_latest_at {
            let served = &self.served;
            self.prune_latest_at = forget_unserved(&mut self.latest_of_group, |g| served.raft(*g).is_ok());
        }
        // A group has one leader, and a leader one stream to a follower: a new stream of the
        // group replaces any open one (whose end the client may not have sent yet, or sent
        // behind the new stream's first request). Its queued requests are dropped, and its task
        // has stopped before the new stream's first request reaches the node: a quiesce-marked
        // heartbeat of the old stream handled after the new stream's requests would quiesce the
        // node again under a leader that has woken (found in review).
        if let Some(id) = latest
            && let Some(open) = self.take_stream(id)
        {
            tracing::debug!(peer = %self.peer.addr, stream = id, replaced_by = stream, "a new stream replaces an open one");
            end_stream(open).await;
        }
        if self.streams.len() >= self.max_streams {
            self.not_served(stream, format!("the connection has {} streams open, its most", self.streams.len())).await;
            return Ok(());
        }
        let (requests, rx) = mpsc::channel(STREAM_QUEUE);
        let _ = requests.try_send(req);
        let (tx, max) = (self.tx.clone(), self.max_frame_bytes);
        let (done, stopped) = tokio::sync::oneshot::channel();
        let task = self.tasks.spawn(async move {
            let _done = done;
            run_stream(raft, stream, rx, tx, max).await;
        });
        self.streams.insert(stream, OpenStream { group, requests, task, stopped });
        Ok(())
    }

    /// Forget open stream `id`, if it is open. (Its group's latest stream stays recorded:
    /// requests of the stream still on their way are dropped.)
    fn take_stream(&mut self, id: u64) -> Option<OpenStream<C>> {
        self.streams.remove(&id)
    }

    /// Answer call or stream `id` that nothing here serves it.
    async fn not_served(&self, id: u64, reason: String) {
        tracing::debug!(peer = %self.peer.addr, node = %self.peer.node, id, %reason, "not served");
        queue(&self.tx, &ToClient::<C>::NotServed { id, reason }, self.max_frame_bytes).await;
    }

    /// Deliver `beat` if it speaks for the connection's own node; drop it otherwise: a beat
    /// keeps the groups quiesced under its node asleep, so only that node may send it.
    fn beat(&self, beat: NodeBeat<C>) {
        let Peer { addr, node } = &self.peer;
        if beat.from != *node {
            if let Some(suppressed) = self.refusals.forged_beats.allow() {
                tracing::warn!(
                    peer = %addr, %node, claimed = %beat.from, suppressed,
                    "dropped a beat that claims to come from another node"
                );
            }
            return;
        }
        if let Err(reason) = self.served.beat(beat) {
            if let Some(suppressed) = self.refusals.misrouted_beats.allow() {
                tracing::warn!(peer = %addr, %node, %reason, suppressed, "dropped a beat");
            }
        }
    }
}

/// Execute one call and queue its answer.
async fn execute<C: RaftTypeConfig>(
    raft: Raft<C>,
    id: u64,
    rpc: Rpc<C>,
    tx: mpsc::Sender<Bytes>,
    max_frame_bytes: usize,
    _permit: OwnedSemaphorePermit,
) {
    let reply = match rpc {
        Rpc::Vote(r) => Reply::Vote(raft.vote(r).await),
        Rpc::AppendEntries(r) => Reply::AppendEntries(raft.append_entries(r).await),
        Rpc::InstallSnapshot(r) => Reply::InstallSnapshot(raft.install_snapshot(r).await),
        Rpc::TransferLeader(r) => Reply::TransferLeader(raft.handle_transfer_leader(r).await),
    };
    queue(&tx, &ToClient::Reply { id, reply }, max_frame_bytes).await;
}

/// Feed one stream's requests to [`Raft::stream_append`] and queue its answers, in order.
async fn run_stream<C: RaftTypeConfig>(
    raft: Raft<C>,
    stream: u64,
    requests: mpsc::Receiver<AppendEntriesRequest<C>>,
    tx: mpsc::Sender<Bytes>,
    max_frame_bytes: usize,
) {
    let input = futures_util::stream::unfold(requests, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let mut answers = std::pin::pin!(raft.stream_append(input));
    while let Some(resp) = answers.next().await {
        if !queue(&tx, &ToClient::Appended { stream, resp }, max_frame_bytes).await {
            return;
        }
    }
    queue(&tx, &ToClient::<C>::StreamEnded { stream }, max_frame_bytes).await;
}

/// Queue `msg` for the writer; `false` if the connection is gone.
async fn queue<C: RaftTypeConfig>(tx: &mpsc::Sender<Bytes>, msg: &ToClient<C>, max_frame_bytes: usize) -> bool {
    match encode_frame(msg, max_frame_bytes) {
        Ok(frame) => tx.send(frame).await.is_ok(),
        Err(e) => {
            // Only an answer over the frame limit can fail here: the client's call times out.
            tracing::warn!(error = %e, "cannot send an answer");
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::{PRUNE_LATEST_MIN, forget_unserved};

    /// Under group churn the remembered streams stay bounded by the groups still served.
    #[test]
    fn the_latest_streams_of_removed_groups_are_forgotten() {
        let mut latest: HashMap<u64, u64> = HashMap::new();
        let mut prune_at = PRUNE_LATEST_MIN;
        // Groups 0..10_000 each stream once, then are removed; only the ten newest are served.
        for group in 0..10_000u64 {
            latest.insert(group, group);
            if latest.len() >= prune_at {
                prune_at = forget_unserved(&mut latest, |g| *g + 10 > group);
            }
            assert!(latest.len() <= PRUNE_LATEST_MIN, "{} remembered at group {group}", latest.len());
        }
        assert!(latest.contains_key(&9_999), "a served group is kept");
    }
}
