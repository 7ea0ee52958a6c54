//! Forwarding client operations from a follower to the leader over the Raft transport.
//!
//! A follower keeps one forwarding connection per leader (first frame
//! [`RpcRequest::OpenForward`]) and multiplexes every
//! client operation it relays over it: each [`ForwardRequest`] carries an id, the leader
//! executes requests concurrently and answers each with a [`ForwardReply`] of the same id, in
//! whatever order they finish. This costs far less than relaying the HTTP request: no second
//! HTTP parse, one connection, frames of many requests written together.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::wire::{Conn, RpcRequest, decode, encode, framed};
use crate::Request;
use crate::service::{KvService, ReadOutcome, WriteOutcome};

/// An operation relayed to the leader.
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardOp {
    /// A write: [`KvService::write`].
    Write(Request),
    /// A linearizable read: [`KvService::read`].
    Read(String),
}

/// The leader's result of a [`ForwardOp`].
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardResult {
    /// Answers [`ForwardOp::Write`].
    Write(WriteOutcome),
    /// Answers [`ForwardOp::Read`].
    Read(ReadOutcome),
}

/// One request on a forwarding connection.
#[derive(Serialize, Deserialize)]
pub struct ForwardRequest {
    /// Chosen by the follower; echoed in the reply.
    pub id: u64,
    /// What to do.
    pub op: ForwardOp,
}

/// One reply on a forwarding connection.
#[derive(Serialize, Deserialize)]
pub struct ForwardReply {
    /// The id of the request answered.
    pub id: u64,
    /// What happened.
    pub result: ForwardResult,
}

/// Why a relayed operation has no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardError {
    /// It never left this node (no connection to the leader): it did not happen.
    NotSent(String),
    /// It was sent and no answer came back: it may have happened.
    Lost(String),
}

type Job = (ForwardOp, oneshot::Sender<Result<ForwardResult, ForwardError>>);

/// The follower side: one multiplexed connection per leader address, made on first use and
/// replaced when it fails.
pub struct Forwarder {
    conns: Mutex<HashMap<String, mpsc::UnboundedSender<Job>>>,
    /// How long to wait for the leader's answer. The leader bounds its own work by a shorter
    /// timeout, so this only fires when the leader or the link is gone.
    reply_timeout: Duration,
}

impl Forwarder {
    /// A forwarder that waits up to `reply_timeout` for each answer.
    pub fn new(reply_timeout: Duration) -> Self {
        Self { conns: Mutex::new(HashMap::new()), reply_timeout }
    }

    /// Relay `op` to the leader listening for Raft RPCs at `raft_addr`.
    ///
    /// # Errors
    /// [`ForwardError`], saying whether the operation may have happened.
    pub async fn call(&self, raft_addr: &str, op: ForwardOp) -> Result<ForwardResult, ForwardError> {
        let (tx, rx) = oneshot::channel();
        self.sender(raft_addr).send((op, tx)).map_err(|_| ForwardError::NotSent("forwarding task ended".into()))?;
        match tokio::time::timeout(self.reply_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ForwardError::Lost("forwarding task ended".into())),
            Err(_) => Err(ForwardError::Lost(format!("no answer from the leader within {:?}", self.reply_timeout))),
        }
    }

    fn sender(&self, raft_addr: &str) -> mpsc::UnboundedSender<Job> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = conns.get(raft_addr).filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_connection(raft_addr.to_string(), rx, self.reply_timeout));
        conns.insert(raft_addr.to_string(), tx.clone());
        tx
    }
}

/// Own one forwarding connection until it fails or every sender is gone. Jobs that were
/// written get [`ForwardError::Lost`] if the connection fails; jobs never written get
/// [`ForwardError::NotSent`].
async fn run_connection(addr: String, mut rx: mpsc::UnboundedReceiver<Job>, reply_timeout: Duration) {
    let mut pending: HashMap<u64, oneshot::Sender<Result<ForwardResult, ForwardError>>> = HashMap::new();
    let failure = match connect(&addr).await {
        Ok(conn) => pump(conn, &mut rx, &mut pending, reply_timeout).await,
        Err(e) => e,
    };
    tracing::debug!(%addr, error = %failure, "forwarding connection ended");
    for (_, tx) in pending.drain() {
        let _ = tx.send(Err(ForwardError::Lost(failure.clone())));
    }
    rx.close();
    while let Ok((_, tx)) = rx.try_recv() {
        let _ = tx.send(Err(ForwardError::NotSent(failure.clone())));
    }
}

async fn connect(addr: &str) -> Result<Conn, String> {
    let stream = match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("cannot connect to the leader at {addr}: {e}")),
        Err(_) => return Err(format!("connecting to the leader at {addr} timed out")),
    };
    let _ = stream.set_nodelay(true);
    let mut conn = framed(stream);
    let open = encode(&RpcRequest::OpenForward).map_err(|e| e.to_string())?;
    conn.send(open).await.map_err(|e| format!("cannot open forwarding to {addr}: {e}"))?;
    Ok(conn)
}

/// Write jobs and dispatch replies until something fails; returns what failed.
///
/// A leader that answers nothing for `reply_timeout` while requests wait (paused, or cut off
/// without the connection breaking) ends the connection, so its waiting requests fail as
/// `Lost` and the next operation connects afresh (to whichever node leads by then).
async fn pump(
    conn: Conn,
    rx: &mut mpsc::UnboundedReceiver<Job>,
    pending: &mut HashMap<u64, oneshot::Sender<Result<ForwardResult, ForwardError>>>,
    reply_timeout: Duration,
) -> String {
    let (mut sink, mut source) = conn.split();
    let mut next_id = 0u64;
    // Since when the leader owes an answer without having given any: set when a request is
    // sent while none was waiting, moved on by every answer, cleared when none is waiting.
    // Never armed while the connection is idle, so an idle connection cannot have "answered
    // nothing" by the time its next request is sent.
    let mut waiting_since: Option<tokio::time::Instant> = None;
    loop {
        let deadline = waiting_since.map(|t| t + reply_timeout);
        tokio::select! {
            _ = sleep_until_some(deadline) => {
                return format!("the leader answered nothing for {reply_timeout:?}");
            }
            job = rx.recv() => {
                let Some(mut job) = job else { return "no more senders".into() };
                if pending.is_empty() {
                    waiting_since = Some(tokio::time::Instant::now());
                }
                // Write every queued job, then flush once.
                loop {
                    let (op, tx) = job;
                    next_id += 1;
                    let frame = match encode(&ForwardRequest { id: next_id, op }) {
                        Ok(f) => f,
                        Err(e) => {
                            let _ = tx.send(Err(ForwardError::NotSent(e.to_string())));
                            break;
                        }
                    };
                    pending.insert(next_id, tx);
                    if let Err(e) = sink.feed(frame).await {
                        return e.to_string();
                    }
                    match rx.try_recv() {
                        Ok(j) => job = j,
                        Err(_) => break,
                    }
                }
                if let Err(e) = sink.flush().await {
                    return e.to_string();
                }
                if pending.is_empty() {
                    waiting_since = None;
                }
            }
            frame = source.next() => {
                let frame = match frame {
                    Some(Ok(f)) => f,
                    Some(Err(e)) => return e.to_string(),
                    None => return "the leader closed the connection".into(),
                };
                let reply: ForwardReply = match decode(&frame) {
                    Ok(r) => r,
                    Err(e) => return format!("undecodable forwarding reply: {e}"),
                };
                if let Some(tx) = pending.remove(&reply.id) {
                    let _ = tx.send(Ok(reply.result));
                }
                waiting_since = (!pending.is_empty()).then(tokio::time::Instant::now);
            }
        }
    }
}

/// Sleep until `deadline`, or forever if there is none. Cancel safe.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The leader side: execute each request of a forwarding connection concurrently and write
/// the replies back as they finish.
pub(crate) async fn serve_forward(conn: Conn, service: KvService) -> Result<(), String> {
    let (mut sink, mut source) = conn.split();
    let (reply_tx, mut reply_rx) = mpsc::unbounded_channel::<ForwardReply>();
    let writer = tokio::spawn(async move {
        while let Some(reply) = reply_rx.recv().await {
            let mut next = Some(reply);
            while let Some(reply) = next {
                let frame = encode(&reply).map_err(|e| e.to_string())?;
                sink.feed(frame).await.map_err(|e| e.to_string())?;
                next = reply_rx.try_recv().ok();
            }
            sink.flush().await.map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    });
    while let Some(frame) = source.next().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let ForwardRequest { id, op } = decode(&frame).map_err(|e| format!("undecodable forwarded request: {e}"))?;
        let (service, reply_tx) = (service.clone(), reply_tx.clone());
        tokio::spawn(async move {
            let result = match op {
                ForwardOp::Write(req) => ForwardResult::Write(service.write(req).await),
                ForwardOp::Read(key) => ForwardResult::Read(service.read(&key).await),
            };
            let _ = reply_tx.send(ForwardReply { id, result });
        });
    }
    drop(reply_tx);
    writer.await.map_err(|e| e.to_string())?
}
