//! Sending a snapshot to a follower whose log is behind the leader's purged log.
//!
//! The snapshot goes in chunks of `snapshot_max_chunk_size`, one at a time, so the leader
//! holds one chunk per follower whatever the snapshot's size. Each answer names the offset
//! the follower expects next, so an interrupted transfer resumes where the follower is
//! instead of starting over.

use std::io::SeekFrom;

use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::oneshot;
use tokio::time::timeout;
use tracing::{debug, info};

use super::{GaugeReset, ReplicationCore, Stop};
use crate::RaftTypeConfig;
use crate::core::SmMsg;
use crate::engine::Ack;
use crate::error::{ErrorSubject, ErrorVerb, Fatal, RPCError, StorageError};
use crate::network::{RPCOption, RaftNetwork};
use crate::storage::RaftLogReader;
use crate::types::InstallSnapshotRequest;

fn read_error(e: std::io::Error) -> Stop {
    Stop::from(StorageError::new(ErrorSubject::Snapshot, ErrorVerb::Read, anyerror::AnyError::new(&e)))
}

impl<C, N, LR> ReplicationCore<C, N, LR>
where
    C: RaftTypeConfig,
    N: RaftNetwork<C>,
    LR: RaftLogReader<C>,
{
    /// Send the current snapshot, chunk by chunk. It does not raise `matched`: see the end.
    pub(super) async fn send_snapshot(&mut self) -> Result<(), Stop> {
        let st = &mut self.state;
        let (tx, rx) = oneshot::channel();
        st.sm.send(SmMsg::GetSnapshot { tx }).map_err(|_| Stop::LeadershipEnded)?;
        let snapshot = rx.await.map_err(|_| Stop::LeadershipEnded)?.map_err(|e| Stop::from(Fatal::from(e)))?;
        let Some(snapshot) = snapshot else {
            return Err(Stop::retry(RPCError::Unreachable(anyerror::AnyError::error(
                "the follower needs a snapshot but none exists yet",
            ))));
        };
        let meta = snapshot.meta;
        let mut data = snapshot.snapshot;
        let len = data.seek(SeekFrom::End(0)).await.map_err(read_error)?;
        info!(snapshot = %meta, len, "sending snapshot");

        let chunk_size = st.config.snapshot_max_chunk_size as usize;
        let option = RPCOption::new(st.config.rpc_timeout);
        let mut buf = vec![0u8; chunk_size.min(len as usize)];
        let mut offset = 0u64;
        loop {
            st.current_submitted()?;
            data.seek(SeekFrom::Start(offset)).await.map_err(read_error)?;
            let want = chunk_size.min((len - offset) as usize);
            buf.resize(want, 0);
            data.read_exact(&mut buf).await.map_err(read_error)?;
            let done = offset + want as u64 >= len;
            let req = InstallSnapshotRequest { vote: st.vote, meta: meta.clone(), offset, data: buf.clone(), done };
            let ack = Ack { sent_at: st.clock.now(), round: *st.heartbeat.borrow_and_update(), marked: false };
            st.gauge.set(1, want as u64);
            let _reset = GaugeReset(st.gauge.clone());
            let resp = match timeout(option.timeout, self.network.install_snapshot(req, option)).await {
                Ok(r) => r.map_err(Stop::retry)?,
                Err(_) => return Err(Stop::retry(RPCError::Timeout(option.timeout))),
            };
            if resp.vote != st.vote {
                return Err(st.higher_vote(resp.vote));
            }
            st.report(st.matched, Some(ack));
            let expected = offset + want as u64;
            if resp.next_offset == expected && done {
                break;
            }
            if resp.next_offset != expected {
                debug!(sent = offset, next = resp.next_offset, "follower asks to continue from another offset");
            }
            offset = if resp.next_offset <= len { resp.next_offset } else { 0 };
        }
        // Sent is not installed: a follower whose committed index already covers the snapshot
        // ignores it, and its log may not be durable that far. The match point is whatever the
        // next search proves; a probe's answer waits until the follower's log is durable.
        debug!(snapshot = %meta, "snapshot sent; searching the match point again");
        Ok(())
    }
}
