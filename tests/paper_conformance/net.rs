//! An in-process network written from the `quorate::network` docs: partitions (per direction),
//! delays with jitter, seeded loss, late delivery (a request arrives after its sender gave up,
//! so it overtakes nothing it should not but arrives after newer ones) and a message filter.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{self, Stream, StreamExt};
use quorate::error::RPCError;
use quorate::network::{AppendResponseStream, RPCOption};
use quorate::{
    AppendEntriesRequest, AppendEntriesResponse, BasicNode, InstallSnapshotRequest, InstallSnapshotResponse, Raft,
    RaftError, RaftNetwork, RaftNetworkFactory, TransferLeaderRequest, VoteRequest, VoteResponse,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::types::C;

/// A message, as the filter sees it.
#[allow(dead_code)] // every kind is matched by some filter, not every payload read
pub enum Msg<'a> {
    Append(&'a AppendEntriesRequest<C>),
    Vote(&'a VoteRequest<C>),
    Snapshot(&'a InstallSnapshotRequest<C>),
    Transfer(&'a TransferLeaderRequest<C>),
}

/// Returns true to drop the message from `from` to `to`.
pub type Filter = Arc<dyn Fn(u64, u64, &Msg) -> bool + Send + Sync>;

pub struct NetInner {
    nodes: BTreeMap<u64, Raft<C>>,
    blocked: BTreeSet<(u64, u64)>,
    delay: Duration,
    jitter: Duration,
    loss: f64,
    late: f64,
    rng: StdRng,
    filter: Option<Filter>,
    pipelined: bool,
}

#[derive(Clone)]
pub struct Net {
    inner: Arc<Mutex<NetInner>>,
}

enum Fate {
    Deliver(Duration),
    Late(Duration),
}

fn unreachable(why: &str) -> RPCError {
    RPCError::Unreachable(anyerror::AnyError::error(why))
}

fn lost(why: &str) -> RPCError {
    RPCError::Network(anyerror::AnyError::error(why))
}

fn remote(e: RaftError) -> RPCError {
    match e {
        RaftError::Fatal(f) => RPCError::RemoteFatal(f),
        RaftError::APIError(never) => match never {},
    }
}

impl Net {
    pub fn new(seed: u64, pipelined: bool) -> Self {
        Self {
            inner: Arc::new(Mutex::new(NetInner {
                nodes: BTreeMap::new(),
                blocked: BTreeSet::new(),
                delay: Duration::from_millis(1),
                jitter: Duration::ZERO,
                loss: 0.0,
                late: 0.0,
                rng: StdRng::seed_from_u64(seed),
                filter: None,
                pipelined,
            })),
        }
    }

    pub fn factory(&self, from: u64) -> Factory {
        Factory { net: self.clone(), from }
    }

    pub fn add(&self, id: u64, raft: Raft<C>) {
        self.inner.lock().unwrap().nodes.insert(id, raft);
    }

    pub fn remove(&self, id: u64) {
        self.inner.lock().unwrap().nodes.remove(&id);
    }

    /// Cut both directions between `a` and every node of `others`.
    pub fn cut(&self, a: u64, others: &[u64]) {
        let mut g = self.inner.lock().unwrap();
        for &b in others {
            g.blocked.insert((a, b));
            g.blocked.insert((b, a));
        }
    }

    /// Split the nodes into groups that only reach their own group.
    pub fn partition(&self, groups: &[&[u64]]) {
        let mut g = self.inner.lock().unwrap();
        g.blocked.clear();
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i != j {
                    for &x in a.iter() {
                        for &y in b.iter() {
                            g.blocked.insert((x, y));
                        }
                    }
                }
            }
        }
    }

    pub fn heal(&self) {
        self.inner.lock().unwrap().blocked.clear();
    }

    pub fn set_filter(&self, f: Option<Filter>) {
        self.inner.lock().unwrap().filter = f;
    }

    pub fn set_chaos(&self, delay: Duration, jitter: Duration, loss: f64, late: f64) {
        let mut g = self.inner.lock().unwrap();
        g.delay = delay;
        g.jitter = jitter;
        g.loss = loss;
        g.late = late;
    }

    fn link_ok(&self, from: u64, to: u64) -> bool {
        !self.inner.lock().unwrap().blocked.contains(&(from, to))
    }

    /// Decide what happens to a message.
    fn fate(&self, from: u64, to: u64, msg: &Msg, may_be_late: bool) -> Result<(Raft<C>, Fate), RPCError> {
        let mut g = self.inner.lock().unwrap();
        if g.blocked.contains(&(from, to)) {
            return Err(unreachable("partitioned"));
        }
        let target = g.nodes.get(&to).cloned().ok_or_else(|| unreachable("down"))?;
        if let Some(f) = &g.filter
            && f(from, to, msg)
        {
            return Err(lost("filtered"));
        }
        let loss = g.loss;
        if loss > 0.0 && g.rng.random_bool(loss) {
            return Err(lost("lost"));
        }
        let jitter = g.jitter.as_micros() as u64;
        let d = g.delay + Duration::from_micros(if jitter > 0 { g.rng.random_range(0..jitter) } else { 0 });
        let late = g.late;
        if may_be_late && late > 0.0 && g.rng.random_bool(late) {
            return Ok((target, Fate::Late(d * 20)));
        }
        Ok((target, Fate::Deliver(d)))
    }
}

pub struct Factory {
    net: Net,
    from: u64,
}

impl RaftNetworkFactory<C> for Factory {
    type Network = Client;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Client {
        let pipelined = self.net.inner.lock().unwrap().pipelined;
        Client { net: self.net.clone(), from: self.from, to: target, pipelined }
    }
}

pub struct Client {
    net: Net,
    from: u64,
    to: u64,
    pipelined: bool,
}

macro_rules! unary {
    ($self:ident, $opt:ident, $req:ident, $variant:ident, $method:ident) => {{
        let (target, fate) = $self.net.fate($self.from, $self.to, &Msg::$variant(&$req), true)?;
        match fate {
            Fate::Late(d) => {
                // Delivered after the sender gave up on it.
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    let _ = target.$method($req).await;
                });
                Err(RPCError::Timeout($opt.timeout))
            }
            Fate::Deliver(d) => {
                tokio::time::sleep(d).await;
                let resp = target.$method($req).await.map_err(remote)?;
                if !$self.net.link_ok($self.to, $self.from) {
                    return Err(lost("answer lost"));
                }
                Ok(resp)
            }
        }
    }};
}

impl RaftNetwork<C> for Client {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<C>,
        opt: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError> {
        unary!(self, opt, req, Append, append_entries)
    }

    async fn vote(&mut self, req: VoteRequest<C>, opt: RPCOption) -> Result<VoteResponse<C>, RPCError> {
        unary!(self, opt, req, Vote, vote)
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<C>,
        opt: RPCOption,
    ) -> Result<InstallSnapshotResponse<C>, RPCError> {
        unary!(self, opt, req, Snapshot, install_snapshot)
    }

    async fn transfer_leader(&mut self, req: TransferLeaderRequest<C>, _opt: RPCOption) -> Result<(), RPCError> {
        let (target, fate) = self.net.fate(self.from, self.to, &Msg::Transfer(&req), false)?;
        if let Fate::Deliver(d) = fate {
            tokio::time::sleep(d).await;
        }
        target.handle_transfer_leader(req).await.map_err(remote)?;
        Ok(())
    }

    async fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> Result<AppendResponseStream<'s, C>, RPCError>
    where
        S: Stream<Item = AppendEntriesRequest<C>> + Send + Unpin + 's,
    {
        if !self.pipelined {
            // One request at a time (what the trait's default does).
            let responses = stream::unfold(Some((self, input)), move |state| async move {
                let (client, mut input) = state?;
                let req = input.next().await?;
                match client.append_entries(req, option).await {
                    Ok(resp) => Some((Ok(resp), Some((client, input)))),
                    Err(e) => Some((Err(e), None)),
                }
            });
            return Ok(responses.boxed());
        }

        // Pipelined: hand the requests, in order, to the target's stream_append. A request
        // the network cannot deliver ends the input; the response stream then ends with an
        // error after the answers to the requests delivered before it.
        let (from, to) = (self.from, self.to);
        if !self.net.link_ok(from, to) {
            return Err(unreachable("partitioned"));
        }
        let target = self.net.inner.lock().unwrap().nodes.get(&to).cloned().ok_or_else(|| unreachable("down"))?;
        let net_in = self.net.clone();
        let delivered = input
            .then(move |req| {
                let net = net_in.clone();
                async move {
                    match net.fate(from, to, &Msg::Append(&req), false) {
                        Ok((_, Fate::Deliver(d))) | Ok((_, Fate::Late(d))) => {
                            tokio::time::sleep(d).await;
                            Some(req)
                        }
                        Err(_) => None,
                    }
                }
            })
            .take_while(|r| std::future::ready(r.is_some()))
            .filter_map(std::future::ready);
        let net_out = self.net.clone();
        let responses = target
            .stream_append(delivered)
            .map(move |r| match r {
                Ok(resp) if net_out.link_ok(to, from) => Ok(resp),
                Ok(_) => Err(lost("answer lost")),
                Err(e) => Err(remote(e)),
            })
            .chain(stream::once(async { Err(lost("stream closed")) }))
            .scan(false, |failed, r| {
                let out = if *failed {
                    None
                } else {
                    *failed = r.is_err();
                    Some(r)
                };
                std::future::ready(out)
            });
        Ok(responses.boxed())
    }
}
