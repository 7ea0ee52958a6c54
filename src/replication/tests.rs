//! A replication stream against a scripted follower: what the leader believes the follower
//! holds (`matched`) rises only on what the follower proved durable, goes back when the
//! follower turns out to lack it, and a follower that keeps failing costs bounded work.

use std::io::Cursor;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{IOProgress, ReplicationHandle};
use crate::config::Config;
use crate::core::{Clock, Notification, SmMsg, queue};
use crate::engine::{Ack, ReplicationResult};
use crate::error::{RPCError, StorageError};
use crate::network::{RPCOption, RaftNetwork};
use crate::storage::{RaftLogReader, Snapshot, SnapshotMeta};
use crate::testing_types::{UTConfig, log_id};
use crate::types::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    TransferLeaderRequest, VoteRequest, VoteResponse,
};
use crate::types::{Entry, LogId, StoredMembership, Vote};

type C = UTConfig;

/// The follower's durable log: the leader's entries up to `last`, nothing that conflicts.
#[derive(Debug, Default)]
struct Follower {
    last: Option<LogId<C>>,
    /// Answer snapshot chunks without installing the snapshot, as a follower whose committed
    /// index already covers it does.
    ignore_snapshots: bool,
    appends: u64,
    /// Requests marked `quiesce`.
    quiesce_marks: u64,
    snapshots: u64,
    /// Fail every AppendEntries, as a node that is down.
    down: bool,
    /// When each AppendEntries arrived (failed ones too).
    appends_at: Vec<Instant>,
    /// When each request marked `quiesce` arrived.
    marks_at: Vec<Instant>,
    /// Every entry that reached the follower, in order (failed requests' too).
    received: Vec<LogId<C>>,
}

const ROUND_TRIP: Duration = Duration::from_millis(1);

#[derive(Clone, Default)]
struct ScriptedNetwork(Arc<Mutex<Follower>>);

impl ScriptedNetwork {
    fn follower(&self) -> std::sync::MutexGuard<'_, Follower> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn unsupported() -> RPCError {
    RPCError::Unreachable(anyerror::AnyError::error("not scripted"))
}

impl RaftNetwork<C> for ScriptedNetwork {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError> {
        let arrived = Instant::now();
        {
            let mut f = self.follower();
            f.appends_at.push(arrived);
            // On arrival: a real transport has sent what reached it, whatever the stream does next.
            f.received.extend(req.entries.iter().map(|e| e.log_id));
            if req.quiesce.is_some() {
                f.marks_at.push(arrived);
            }
        }
        // Every round trip takes a little virtual time, so a stream that spins still lets the
        // clock move and the test end.
        tokio::time::sleep(ROUND_TRIP).await;
        let mut f = self.follower();
        if f.down {
            return Err(RPCError::Unreachable(anyerror::AnyError::error("the follower is down")));
        }
        f.appends += 1;
        f.quiesce_marks += u64::from(req.quiesce.is_some());
        if req.prev_log_id.is_some_and(|p| Some(p.index) > f.last.map(|l| l.index)) {
            return Ok(AppendEntriesResponse::Conflict { prev_log_id: req.prev_log_id, last_log_id: f.last });
        }
        f.last = f.last.max(req.last_log_id());
        Ok(AppendEntriesResponse::Success { matched: req.last_log_id() })
    }

    async fn vote(&mut self, _req: VoteRequest<C>, _option: RPCOption) -> Result<VoteResponse<C>, RPCError> {
        Err(unsupported())
    }

    async fn transfer_leader(&mut self, _req: TransferLeaderRequest<C>, _option: RPCOption) -> Result<(), RPCError> {
        Err(unsupported())
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<C>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<C>, RPCError> {
        tokio::time::sleep(ROUND_TRIP).await;
        let mut f = self.follower();
        if req.done {
            f.snapshots += 1;
            if !f.ignore_snapshots {
                f.last = f.last.max(req.meta.last_log_id);
            }
        }
        Ok(InstallSnapshotResponse { vote: req.vote, next_offset: req.offset + req.data.len() as u64 })
    }
}

/// The leader's log: term-1 entries `purged.index + 1 .. end`, purged up to `purged`.
/// Work run inside a log read.
type ReadHook = Box<dyn FnOnce() + Send>;

#[derive(Clone)]
struct LeaderLog {
    purged: LogId<C>,
    end: Arc<AtomicU64>,
    /// From this index on, the log holds another leader's entries, of term `replaced_by`
    /// (as after RaftCore accepted a newer leader, before the stream's abort lands).
    replaced_from: Arc<AtomicU64>,
    replaced_by: Arc<AtomicU64>,
    /// Run at the start of the next read, once: what RaftCore does on another worker while
    /// a stream's read is under way.
    on_next_read: Arc<Mutex<Option<ReadHook>>>,
}

impl LeaderLog {
    fn new(purged: LogId<C>, end: u64) -> Self {
        Self {
            purged,
            end: Arc::new(AtomicU64::new(end)),
            replaced_from: Arc::new(AtomicU64::new(u64::MAX)),
            replaced_by: Arc::new(AtomicU64::new(1)),
            on_next_read: Arc::default(),
        }
    }

    fn last(&self) -> Option<LogId<C>> {
        Some(log_id(1, self.end.load(Ordering::Relaxed) - 1))
    }
}

impl RaftLogReader<C> for LeaderLog {
    async fn try_get_log_entries(&mut self, range: Range<u64>) -> Result<Vec<Entry<C>>, StorageError> {
        let hook = self.on_next_read.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(hook) = hook {
            hook();
        }
        let start = range.start.max(self.purged.index + 1);
        let end = range.end.min(self.end.load(Ordering::Relaxed));
        let (from, term) = (self.replaced_from.load(Ordering::Relaxed), self.replaced_by.load(Ordering::Relaxed));
        Ok((start..end).map(|i| Entry::new_blank(log_id(if i >= from { term } else { 1 }, i))).collect())
    }
}

/// A running stream and what it reports.
struct Stream {
    _handle: ReplicationHandle<C>,
    log: LeaderLog,
    submitted: watch::Sender<IOProgress<C>>,
    committed: watch::Sender<Option<LogId<C>>>,
    heartbeat: watch::Sender<u64>,
    quiesced: watch::Sender<Option<(LogId<UTConfig>, crate::types::QuiesceMark)>>,
    notify: queue::Receiver<Notification<C>>,
    /// Every `matched` the stream reported, in order.
    reported: Vec<Option<LogId<C>>>,
    /// Every acknowledgement the stream reported, in order.
    acks: Vec<Ack>,
}

impl Stream {
    /// Start a stream of leader 1 (term 1) to node 2 over `network`, with `log`.
    fn start(network: ScriptedNetwork, log: LeaderLog) -> Self {
        Self::start_on(network, log)
    }

    fn start_on(network: impl RaftNetwork<C>, log: LeaderLog) -> Self {
        Self::start_hosted(network, log, None, 0)
    }

    /// A stream in a host of many groups, when `host` is given, whose waits before retries
    /// are spread by draws from `jitter_seed`.
    fn start_hosted(
        network: impl RaftNetwork<C>,
        log: LeaderLog,
        host: Option<Arc<crate::multi::Liveness<C>>>,
        jitter_seed: u64,
    ) -> Self {
        let vote = Vote::new_committed(1, 1);
        let config = Arc::new(Config { rpc_timeout: Duration::from_millis(500), ..Config::default() });
        let last = log.last();
        let submitted = watch::channel(IOProgress { vote, last_log_id: last, purged: Some(log.purged) });
        let committed = watch::channel(last);
        let heartbeat = watch::channel(0);
        let quiesced = watch::channel(None);
        let (notify_tx, notify) = queue::unbounded();
        let (sm_tx, mut sm_rx) = queue::unbounded::<SmMsg<C>>();
        let snapshot_last = log.purged;
        // The state machine task: hands out a snapshot up to the leader's purged entry.
        tokio::spawn(async move {
            while let Some(msg) = sm_rx.recv().await {
                if let SmMsg::GetSnapshot { tx } = msg {
                    let meta = SnapshotMeta {
                        last_log_id: Some(snapshot_last),
                        last_membership: StoredMembership::default(),
                        snapshot_id: "s".into(),
                    };
                    let _ = tx.send(Ok(Some(Snapshot { meta, snapshot: Box::new(Cursor::new(vec![7; 10])) })));
                }
            }
        });
        let handle = ReplicationHandle::spawn(
            1,
            2,
            vote,
            network,
            log.clone(),
            config,
            submitted.1,
            committed.1,
            heartbeat.1,
            quiesced.1,
            host,
            notify_tx,
            sm_tx,
            Clock::default(),
            jitter_seed,
        );
        Self {
            _handle: handle,
            log,
            submitted: submitted.0,
            committed: committed.0,
            heartbeat: heartbeat.0,
            quiesced: quiesced.0,
            notify,
            reported: Vec::new(),
            acks: Vec::new(),
        }
    }

    /// The leader appends (and commits) entries up to index `end - 1`.
    fn extend_log(&self, end: u64) {
        self.log.end.store(end, Ordering::Relaxed);
        let last = self.log.last();
        self.submitted.send_modify(|s| s.last_log_id = last);
        self.committed.send_replace(last);
    }

    /// Collect the reports of `d` of (virtual) time.
    async fn run_for(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while let Ok(Some(n)) = tokio::time::timeout_at(until, self.notify.recv()).await {
            if let Notification::Replication { result: ReplicationResult::Matched(m), ack, .. } = n {
                if self.reported.last() != Some(&m) {
                    self.reported.push(m);
                }
                self.acks.extend(ack);
            }
        }
    }
}

/// A follower whose stream answers are released by the test, one at a time; probes are
/// answered at once from `follower`.
#[derive(Clone)]
struct HeldNetwork {
    probes: ScriptedNetwork,
    requests: mpsc::UnboundedSender<AppendEntriesRequest<C>>,
    answers: Arc<Mutex<Option<mpsc::UnboundedReceiver<AppendEntriesResponse<C>>>>>,
}

impl RaftNetwork<C> for HeldNetwork {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError> {
        self.probes.append_entries(req, option).await
    }

    async fn vote(&mut self, _req: VoteRequest<C>, _option: RPCOption) -> Result<VoteResponse<C>, RPCError> {
        Err(unsupported())
    }

    async fn install_snapshot(
        &mut self,
        _req: InstallSnapshotRequest<C>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<C>, RPCError> {
        Err(unsupported())
    }

    async fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        _option: RPCOption,
    ) -> Result<crate::network::AppendResponseStream<'s, C>, RPCError>
    where
        S: futures_util::Stream<Item = AppendEntriesRequest<C>> + Send + Unpin + 's,
    {
        use futures_util::StreamExt;
        let Some(answers) = self.answers.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return Err(unsupported());
        };
        let requests = self.requests.clone();
        // Forward every request to the test; the responses are what the test releases.
        let forwarded = input.filter_map(move |req| {
            let _ = requests.send(req);
            std::future::ready(None)
        });
        let answers =
            futures_util::stream::unfold(answers, |mut rx| async move { rx.recv().await.map(|a| (Ok(a), rx)) });
        Ok(futures_util::stream::select(forwarded, answers).boxed())
    }
}

/// Issue #15, finding 3a. With a request R in flight, a read asks for a new heartbeat round. A
/// heartbeat sent now would repeat R's last log id, and R's answer would look like the answer
/// to both, lending R's answer the heartbeat's round: the read would be confirmed by a round
/// trip that began before it arrived. The heartbeat waits until R is answered; R's answer
/// proves R's round; the heartbeat's answer proves the read's.
#[tokio::test(start_paused = true)]
async fn an_answer_proves_the_round_of_its_own_request_only() {
    let probes = ScriptedNetwork::default();
    probes.follower().last = Some(log_id(1, 20));
    let (requests_tx, mut requests) = mpsc::unbounded_channel();
    let (answer, answers) = mpsc::unbounded_channel();
    let network = HeldNetwork { probes, requests: requests_tx, answers: Arc::new(Mutex::new(Some(answers))) };
    let mut stream = Stream::start_on(network, LeaderLog::new(log_id(1, 0), 21));
    let success = |i| AppendEntriesResponse::Success { matched: Some(log_id(1, i)) };

    // The pipeline opens with a heartbeat at the match point; answer it.
    let first = requests.recv().await.expect("a first request");
    assert_eq!(first.last_log_id(), Some(log_id(1, 20)));
    answer.send(success(20)).unwrap();
    stream.run_for(Duration::from_millis(1)).await;

    // R: the leader appends entry 21; its request goes out and stays unanswered.
    stream.extend_log(22);
    let r = requests.recv().await.expect("the request of entry 21");
    assert_eq!(r.last_log_id(), Some(log_id(1, 21)));
    // A read asks for round 1.
    stream.heartbeat.send_replace(1);
    stream.run_for(Duration::from_millis(200)).await;
    assert!(requests.try_recv().is_err(), "no heartbeat while a request ending at the same log id is in flight");

    stream.acks.clear();
    answer.send(success(21)).unwrap();
    stream.run_for(Duration::from_millis(1)).await;
    assert_eq!(stream.acks.iter().map(|a| a.round).collect::<Vec<_>>(), vec![0], "R's answer proves round 0");

    let heartbeat = requests.try_recv().expect("the heartbeat of round 1, as soon as R is answered");
    assert_eq!(heartbeat.last_log_id(), Some(log_id(1, 21)));
    // Round 2 is asked for while round 1's heartbeat is in flight, the commit index unchanged.
    stream.heartbeat.send_replace(2);
    stream.run_for(Duration::from_millis(1)).await;
    assert!(requests.try_recv().is_err(), "nothing more while the heartbeat is in flight");
    answer.send(success(21)).unwrap();
    stream.run_for(Duration::from_millis(1)).await;
    assert_eq!(stream.acks.iter().map(|a| a.round).collect::<Vec<_>>(), vec![0, 1]);
    // Found in review: the answer armed the commit timer, whose firing, the commit index not
    // having moved, put round 2's heartbeat back on the heartbeat schedule: the read waited up
    // to a heartbeat interval. It leaves as soon as round 1's is answered.
    let heartbeat = requests.try_recv().expect("the heartbeat of round 2, as soon as round 1's is answered");
    assert_eq!(heartbeat.last_log_id(), Some(log_id(1, 21)));
    answer.send(success(21)).unwrap();
    stream.run_for(Duration::from_millis(1)).await;
    assert_eq!(stream.acks.iter().map(|a| a.round).collect::<Vec<_>>(), vec![0, 1, 2]);
}

/// Issue #15, finding 5. The follower answers the snapshot but does not install it (its
/// committed index covered it while its log was not durable that far, and then it crashed).
/// The leader must not take the snapshot's last entry as matched — else it pipelines from
/// there, conflicts, searches, finds the same point and conflicts again, forever, at full
/// speed. It keeps what the follower proved, backs off while the follower keeps refusing, and
/// catches it up once it takes the snapshot.
#[tokio::test(start_paused = true)]
async fn a_snapshot_the_follower_did_not_install_is_not_matched() {
    let network = ScriptedNetwork::default();
    {
        let mut f = network.follower();
        f.last = Some(log_id(1, 5));
        f.ignore_snapshots = true;
    }
    let mut stream = Stream::start(network.clone(), LeaderLog::new(log_id(1, 10), 21));

    stream.run_for(Duration::from_secs(10)).await;

    assert!(
        stream.reported.iter().all(|m| *m <= Some(log_id(1, 5))),
        "matched rose past what the follower holds; {} reports, the first: {:?}",
        stream.reported.len(),
        &stream.reported[..stream.reported.len().min(8)]
    );
    let (appends, snapshots) = {
        let f = network.follower();
        (f.appends, f.snapshots)
    };
    // Backing off up to half the minimum election timeout, 10 s allow about 135 attempts;
    // spinning made thousands.
    assert!(snapshots <= 200 && appends <= 600, "{snapshots} snapshots and {appends} appends in 10 s");

    network.follower().ignore_snapshots = false;
    stream.run_for(Duration::from_secs(2)).await;

    assert_eq!(network.follower().last, Some(log_id(1, 20)));
    assert_eq!(stream.reported.last(), Some(&Some(log_id(1, 20))));
}

/// A follower that lost entries it had acknowledged (a store that broke its durability
/// contract) conflicts below what the leader believed matched. The leader lowers `matched`,
/// tells RaftCore, searches the follower's log again and catches it up.
#[tokio::test(start_paused = true)]
async fn a_conflict_below_matched_lowers_it_and_the_follower_catches_up() {
    let network = ScriptedNetwork::default();
    let mut stream = Stream::start(network.clone(), LeaderLog::new(log_id(1, 0), 21));
    stream.run_for(Duration::from_secs(1)).await;
    assert_eq!(stream.reported.last(), Some(&Some(log_id(1, 20))));

    // The follower comes back with only six entries, and the leader has more to send.
    network.follower().last = Some(log_id(1, 5));
    stream.extend_log(31);
    stream.run_for(Duration::from_secs(2)).await;

    let after = stream.reported.iter().position(|m| *m == Some(log_id(1, 20))).expect("matched 20 was reported");
    assert!(
        stream.reported[after..].iter().any(|m| *m < Some(log_id(1, 6))),
        "matched went back to what the follower holds: {:?}",
        stream.reported
    );
    assert_eq!(network.follower().last, Some(log_id(1, 30)));
    assert_eq!(stream.reported.last(), Some(&Some(log_id(1, 30))));
}

/// RaftCore accepted a newer leader and replaced the log after index 20 while the stream of
/// the old leadership (term 1) was still reading it: the stream must not send the newer
/// entries under its own term (of a later term, or of an earlier one after its own), which
/// would splice two leaders' logs on the follower (found in review).
#[tokio::test(start_paused = true)]
async fn a_stream_sends_no_entry_of_a_log_replaced_under_it() {
    for replaced_by in [2, 0] {
        let network = ScriptedNetwork::default();
        let mut stream = Stream::start(network.clone(), LeaderLog::new(log_id(1, 0), 21));
        stream.run_for(Duration::from_secs(1)).await;
        assert_eq!(network.follower().last, Some(log_id(1, 20)));

        stream.log.replaced_from.store(21, Ordering::Relaxed);
        stream.log.replaced_by.store(replaced_by, Ordering::Relaxed);
        stream.extend_log(31);
        stream.run_for(Duration::from_secs(2)).await;

        let received = network.follower().received.clone();
        assert!(
            received.iter().all(|id| id.leader_id.term == 1),
            "entries of term {replaced_by} sent under term 1: {received:?}"
        );
        assert_eq!(network.follower().last, Some(log_id(1, 20)));
    }
}

/// The race itself: the stream has decided to send 21..30 and is reading them when RaftCore,
/// on another worker, accepts a newer leader: it closes the streams' watches, then replaces
/// the log from 21 (here with entries whose terms pass any order check: a third leader's,
/// between the old leader's last sent entry and its term). Nothing read after the close may
/// go out.
#[tokio::test(start_paused = true)]
async fn a_stream_sends_nothing_read_after_its_leadership_ended() {
    let network = ScriptedNetwork::default();
    let mut stream = Stream::start(network.clone(), LeaderLog::new(log_id(1, 0), 21));
    stream.run_for(Duration::from_secs(1)).await;
    assert_eq!(network.follower().last, Some(log_id(1, 20)));

    stream.extend_log(31);
    let watches = std::mem::replace(
        &mut stream.submitted,
        watch::channel(IOProgress { vote: Vote::default(), last_log_id: None, purged: None }).0,
    );
    let log = stream.log.clone();
    *stream.log.on_next_read.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(move || {
        drop(watches);
        log.replaced_from.store(21, Ordering::Relaxed);
    }));
    stream.run_for(Duration::from_secs(2)).await;

    let received = network.follower().received.clone();
    assert!(received.iter().all(|id| id.index <= 20), "sent after its leadership ended: {received:?}");
}

/// In a host of many groups, every group's heartbeats to a peer fall on one grid, whatever
/// their phase: a transport then sends them in one write per interval.
#[test]
fn hosted_heartbeats_fall_on_the_hosts_grid() {
    let epoch = Instant::now();
    let hb = Duration::from_millis(50);
    let ms = Duration::from_millis;
    let timer = |grid| super::SendTimer {
        next: epoch,
        last_sent: epoch,
        commit_armed: false,
        heartbeat: hb,
        commit_grace: hb / 16,
        grid,
    };
    assert_eq!(super::align_up(epoch, epoch, hb), epoch);
    assert_eq!(super::align_up(epoch + ms(1), epoch, hb), epoch + ms(50));
    assert_eq!(super::align_up(epoch + ms(50), epoch, hb), epoch + ms(50));

    // Two streams that last sent at different instants heartbeat next at the same one, between
    // half an interval and one and a half after their last request.
    for sent_at in [ms(3), ms(17), ms(49), ms(50)] {
        let mut timer = timer(Some(epoch));
        timer.sent(epoch + sent_at);
        let gap = timer.next - (epoch + sent_at);
        assert!(gap >= hb / 2 && gap <= hb * 3 / 2, "{sent_at:?}: {gap:?}");
        assert_eq!((timer.next - epoch).as_millis() % 50, 0, "{sent_at:?}: off the grid");
    }
    // Outside a host, the next heartbeat is one interval after the last request.
    let mut timer = timer(None);
    timer.sent(epoch + ms(17));
    assert_eq!(timer.next, epoch + ms(67));
}

/// Found by the many-groups benchmark: every answer that emptied the pipeline pulled the send
/// timer in by `commit_grace` (to carry a commit index, should one come), and when none came
/// the timer sent a heartbeat anyway, whose answer pulled the timer in again: an idle stream
/// sent a heartbeat every `commit_grace` plus a round trip, a dozen times the heartbeat rate.
/// An idle caught-up stream sends one heartbeat per interval.
#[tokio::test(start_paused = true)]
async fn an_idle_stream_heartbeats_once_per_interval() {
    let network = ScriptedNetwork::default();
    network.follower().last = Some(log_id(1, 20));
    let mut stream = Stream::start(network.clone(), LeaderLog::new(log_id(1, 0), 21));
    stream.run_for(Duration::from_millis(100)).await;
    let before = network.follower().appends;

    stream.run_for(Duration::from_secs(1)).await;

    let sent = network.follower().appends - before;
    let interval = Config::default().heartbeat_interval;
    let expected = (Duration::from_secs(1).as_millis() / interval.as_millis()) as u64;
    assert!(sent <= expected + 1, "{sent} requests in 1 s of idleness; one per {interval:?} is {expected}");
    assert!(sent + 1 >= expected, "{sent} requests in 1 s of idleness: heartbeats stopped");
}

/// The scripted follower, through streams whose opening and closing are counted.
#[derive(Clone, Default)]
struct CountedStreams {
    follower: ScriptedNetwork,
    /// Streams opened so far.
    opened: Arc<AtomicU64>,
    /// Streams open now.
    open: Arc<AtomicU64>,
}

/// Counts a stream as open until it is dropped.
struct OpenStream(Arc<AtomicU64>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RaftNetwork<C> for CountedStreams {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError> {
        self.follower.append_entries(req, option).await
    }

    async fn vote(&mut self, _req: VoteRequest<C>, _option: RPCOption) -> Result<VoteResponse<C>, RPCError> {
        Err(unsupported())
    }

    async fn install_snapshot(
        &mut self,
        _req: InstallSnapshotRequest<C>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<C>, RPCError> {
        Err(unsupported())
    }

    async fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> Result<crate::network::AppendResponseStream<'s, C>, RPCError>
    where
        S: futures_util::Stream<Item = AppendEntriesRequest<C>> + Send + Unpin + 's,
    {
        use futures_util::StreamExt;
        self.opened.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        let open = OpenStream(self.open.clone());
        let follower = self.follower.clone();
        let answers =
            futures_util::stream::unfold((follower, input, open), move |(mut follower, mut input, open)| async move {
                let req = input.next().await?;
                Some((follower.append_entries(req, option).await, (follower, input, open)))
            });
        Ok(answers.boxed())
    }
}

/// The mark of the quiescences in these tests.
const MARK: crate::types::QuiesceMark = crate::types::QuiesceMark { incarnation: 7 };

/// A stream over [`CountedStreams`] to a follower that holds the leader's whole log (entries
/// up to 20), after it caught up.
async fn caught_up_stream() -> (CountedStreams, Stream) {
    let network = CountedStreams::default();
    network.follower.follower().last = Some(log_id(1, 20));
    let mut stream = Stream::start_on(network.clone(), LeaderLog::new(log_id(1, 0), 21));
    stream.run_for(Duration::from_millis(100)).await;
    (network, stream)
}

/// The leader quiesces at entry 20 (with [`MARK`]), and the stream has time to send the marked
/// heartbeat and see it answered.
async fn quiesce_at_20(stream: &mut Stream) {
    stream.quiesced.send_replace(Some((log_id(1, 20), MARK)));
    stream.run_for(Duration::from_millis(10)).await;
}

/// [`caught_up_stream`], then [`quiesce_at_20`]: the follower heard the mark, and the stream's
/// network stream is closed.
async fn quiesced_stream() -> (CountedStreams, Stream) {
    let (network, mut stream) = caught_up_stream().await;
    quiesce_at_20(&mut stream).await;
    (network, stream)
}

/// In a host of many groups, a quiesced leader's stream to a follower sends one heartbeat
/// marked `quiesce` and then nothing: it closes its stream meanwhile (the memory of an idle
/// group), and opens a new one as soon as it has something to send: when the group wakes, or
/// when entries arrive.
#[tokio::test(start_paused = true)]
async fn a_quiesced_stream_is_closed_until_it_has_something_to_send() {
    let (network, mut stream) = caught_up_stream().await;
    let streams = |n: &CountedStreams| (n.opened.load(Ordering::Relaxed), n.open.load(Ordering::Relaxed));
    assert_eq!(streams(&network), (1, 1));

    quiesce_at_20(&mut stream).await;
    assert_eq!(network.follower.follower().quiesce_marks, 1, "the follower heard the marked heartbeat");
    assert_eq!(streams(&network), (1, 0), "the stream is closed once the mark is answered");
    let appends = network.follower.follower().appends;
    stream.run_for(Duration::from_secs(1)).await;
    assert_eq!(network.follower.follower().appends, appends, "a quiesced stream sends nothing");
    assert_eq!(streams(&network), (1, 0));

    // Woken: a new stream, and a heartbeat at once.
    stream.quiesced.send_replace(None);
    stream.run_for(Duration::from_millis(5)).await;
    assert_eq!(streams(&network), (2, 1));
    assert_eq!(network.follower.follower().appends, appends + 1);

    // Quiesced again, then entries arrive before the group wakes: a new stream carries them.
    stream.quiesced.send_replace(Some((log_id(1, 20), MARK)));
    stream.run_for(Duration::from_millis(100)).await;
    assert_eq!(streams(&network), (2, 0));
    stream.extend_log(23);
    stream.run_for(Duration::from_millis(10)).await;
    assert_eq!(streams(&network).0, 3);
    assert_eq!(network.follower.follower().last, Some(log_id(1, 22)));
    assert_eq!(stream.reported.last(), Some(&Some(log_id(1, 22))));
}

/// The answer to a heartbeat marked `quiesce` is reported as such (the follower may have
/// quiesced on it), and the answers after the wake are not: what tells the leader that no
/// follower is still quiesced under it (`Engine::note_followers_awake`).
#[tokio::test(start_paused = true)]
async fn answers_say_whether_their_request_was_marked() {
    let (_network, mut stream) = caught_up_stream().await;
    assert!(!stream.acks.is_empty() && stream.acks.iter().all(|a| !a.marked), "{:?}", stream.acks);

    let before = stream.acks.len();
    quiesce_at_20(&mut stream).await;
    let marked: Vec<bool> = stream.acks[before..].iter().map(|a| a.marked).collect();
    assert_eq!(marked.last(), Some(&true), "the marked heartbeat's answer: {marked:?}");

    let before = stream.acks.len();
    stream.quiesced.send_replace(None);
    stream.run_for(Duration::from_millis(5)).await;
    let marked: Vec<bool> = stream.acks[before..].iter().map(|a| a.marked).collect();
    assert_eq!(marked, vec![false], "the heartbeat sent on waking");
}

/// Found in review: a follower that lost entries while the leader's stream to it was closed
/// (quiesced) conflicts on the reopened stream's first request. That proves it lost what it
/// acknowledged, as on a first stream: the match point drops at once, and the next pass
/// searches the whole log, rather than first probing nothing and opening a third stream.
#[tokio::test(start_paused = true)]
async fn a_follower_that_lost_entries_while_the_stream_was_closed_is_searched_at_once() {
    let (network, mut stream) = quiesced_stream().await;
    assert_eq!(network.open.load(Ordering::Relaxed), 0, "closed while quiesced");

    // The follower lost its last 15 entries (a disk that lied about its flushes); the group
    // wakes.
    network.follower.follower().last = Some(log_id(1, 5));
    stream.quiesced.send_replace(None);
    stream.run_for(Duration::from_millis(5)).await;

    assert!(stream.reported.contains(&None), "the match point dropped: {:?}", stream.reported);
    assert_eq!(network.opened.load(Ordering::Relaxed), 2, "no third stream before the search");
    stream.run_for(Duration::from_secs(1)).await;
    assert_eq!(network.follower.follower().last, Some(log_id(1, 20)), "caught up again");
}

/// Found in review: a leader that woke and quiesced again at a later entry, both between two
/// looks of its stream (the stream never saw it awake), must still mark a heartbeat for the new
/// quiescence: the entries the stream sends wake the follower, and only a new mark quiesces it
/// again.
#[tokio::test(start_paused = true)]
async fn a_stream_marks_again_for_a_quiescence_it_never_saw_end() {
    let (network, mut stream) = quiesced_stream().await;
    assert_eq!(network.follower.follower().quiesce_marks, 1);

    // Woken, two entries appended and committed, quiesced again: all before the stream looks.
    stream.extend_log(23);
    stream.quiesced.send_replace(Some((log_id(1, 22), MARK)));
    stream.run_for(Duration::from_millis(200)).await;

    assert_eq!(network.follower.follower().last, Some(log_id(1, 22)));
    assert_eq!(network.follower.follower().quiesce_marks, 2, "the new quiescence was marked");
}

/// The gaps between consecutive instants, from `from`.
fn gaps(from: Instant, at: &[Instant]) -> Vec<Duration> {
    std::iter::once(from).chain(at.iter().copied()).zip(at).map(|(a, b)| *b - a).collect()
}

/// Review finding F1. In a host of many groups, a quiesced leader's stream to a node the host
/// reaches but does not hear (one back with its storage lost) sends it the marked heartbeat
/// again an election timeout after it is reached, and then ever more rarely. With the same
/// waits for every group, every group's stream to that node resent at the same instants, a
/// burst of thousands of RPCs. Two groups' streams, reached at one instant, now resend at
/// different instants, each never sooner than before (the old waits are the lower bounds)
/// and less than half again as late.
#[tokio::test(start_paused = true)]
async fn streams_of_two_groups_resend_to_a_reached_unheard_node_at_different_instants() {
    let host = Arc::new(crate::multi::Liveness::<C>::new(1, 1, Duration::from_millis(500)));
    let start = |seed| {
        let network = ScriptedNetwork::default();
        network.follower().last = Some(log_id(1, 20));
        let log = LeaderLog::new(log_id(1, 0), 21);
        (network.clone(), Stream::start_hosted(network, log, Some(host.clone()), seed))
    };
    let (network_a, mut a) = start(1);
    let (network_b, mut b) = start(2);
    a.run_for(Duration::from_millis(100)).await;
    for stream in [&a, &b] {
        stream.quiesced.send_replace(Some((log_id(1, 20), MARK)));
    }
    a.run_for(Duration::from_millis(200)).await;
    for network in [&network_a, &network_b] {
        assert_eq!(network.follower().marks_at.len(), 1, "the follower heard the marked heartbeat");
    }

    // The host's beat gets through to node 2, which it does not hear.
    let reached = Instant::now();
    host.reached(&2, true);
    a.run_for(Duration::from_secs(2)).await;
    b.run_for(Duration::ZERO).await;

    // Without the spread: an election timeout, again, then twice that.
    let timeout = Config::default().election_timeout_max;
    let old = [timeout, timeout, timeout * 2];
    let resent = |network: &ScriptedNetwork| network.follower().marks_at[1..].to_vec();
    let (resent_a, resent_b) = (resent(&network_a), resent(&network_b));
    for (name, resent) in [("a", &resent_a), ("b", &resent_b)] {
        let gaps = gaps(reached, resent);
        assert_eq!(gaps.len(), old.len(), "stream {name} resent at {gaps:?} after each other");
        for (gap, old) in gaps.iter().zip(old) {
            assert!(*gap >= old, "stream {name}: resent {gap:?} after the last, sooner than {old:?}: {gaps:?}");
            assert!(*gap < old + old / 2, "stream {name}: resent {gap:?} after the last, {old:?} spread: {gaps:?}");
        }
    }
    for (at_a, at_b) in resent_a.iter().zip(&resent_b) {
        assert_ne!(at_a, at_b, "both streams resent at one instant: {resent_a:?}, {resent_b:?}");
    }
}

/// Review finding F1, the failure back-off: the streams of a host's groups to one node fail
/// together (the node died, the connection to it broke), and backing off by the same waits
/// they retried together, each time. Two streams that failed at one instant retry at
/// different instants, never sooner than the old back-off (50 ms, doubling up to half the
/// minimum election timeout) and always before the minimum election timeout.
#[tokio::test(start_paused = true)]
async fn streams_that_fail_together_retry_at_different_instants() {
    let start = |seed| {
        let network = ScriptedNetwork::default();
        network.follower().down = true;
        (network.clone(), Stream::start_hosted(network, LeaderLog::new(log_id(1, 0), 21), None, seed))
    };
    let started = Instant::now();
    let (network_a, mut a) = start(1);
    let (network_b, _b) = start(2);
    a.run_for(Duration::from_millis(500)).await;

    let config = Config::default();
    let max_backoff = config.election_timeout_min / 2;
    let attempts = |network: &ScriptedNetwork| network.follower().appends_at.clone();
    let (attempts_a, attempts_b) = (attempts(&network_a), attempts(&network_b));
    for (name, attempts) in [("a", &attempts_a), ("b", &attempts_b)] {
        assert_eq!(attempts.first(), Some(&started), "stream {name} tried at once");
        // Each attempt fails after a round trip, then the stream backs off.
        let backoffs: Vec<Duration> = gaps(started, attempts)[1..].iter().map(|g| *g - ROUND_TRIP).collect();
        assert!(backoffs.len() >= 4, "stream {name} retried at {attempts:?}");
        for (i, backoff) in backoffs.iter().enumerate() {
            let old = (config.heartbeat_interval * (1 << i)).min(max_backoff);
            assert!(*backoff >= old, "stream {name}: backed off {backoff:?}, less than {old:?}: {backoffs:?}");
            assert!(*backoff < old + old / 2, "stream {name}: backed off {backoff:?}, {old:?} spread: {backoffs:?}");
            assert!(*backoff < config.election_timeout_min, "stream {name}: {backoffs:?}");
        }
    }
    for (at_a, at_b) in attempts_a[1..].iter().zip(&attempts_b[1..]) {
        assert_ne!(at_a, at_b, "both streams retried at one instant: {attempts_a:?}, {attempts_b:?}");
    }
}
