//! What the admin routes add on a node of many groups: the `?group=` parameter that names one,
//! and summaries of all of them small enough for thousands of groups.
//!
//! `GET /admin/metrics` on such a node answers one line per group (its role here, leader,
//! term, committed and applied indexes, whether it is quiesced) and counts over every group,
//! a page at a time (`?from=<shard>&limit=<n>`, at most [`MAX_PAGE`] lines, `next` names the
//! following page); `?group=<shard>` answers that group's whole `RaftMetrics`, as a one-group
//! node does.

use axum::http::StatusCode;
use quorate::ServerState;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;
use crate::groups::Groups;
use crate::service::KvService;

/// The most groups one page of `GET /admin/metrics` lists.
pub(crate) const MAX_PAGE: u32 = 1000;

/// Lines per page when the request gives no `limit`.
const DEFAULT_PAGE: u32 = 100;

/// The query of the admin routes.
///
/// Other parameters are ignored, as they were before `--groups`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct GroupQuery {
    /// The shard the request is about.
    group: Option<u32>,
    /// The first shard of a summary page.
    #[serde(default)]
    from: u32,
    /// The lines of a summary page.
    limit: Option<u32>,
}

impl GroupQuery {
    /// The shard named by `?group=`, if any, checked against the node's groups.
    ///
    /// # Errors
    /// 400 if the node has no such group.
    pub(crate) fn named<'a>(&self, groups: &'a Groups) -> Result<Option<(u32, &'a KvService)>, ApiError> {
        let Some(shard) = self.group else { return Ok(None) };
        match groups.get(shard) {
            Some(service) => Ok(Some((shard, service))),
            None => {
                Err(ApiError::bad_request(format!("group {shard}: this node runs groups 0 to {}", groups.count() - 1)))
            }
        }
    }

    /// The group a membership route changes: the one named, or on a one-group node its group.
    ///
    /// # Errors
    /// 400 if none is named on a node of many groups, or the one named does not exist.
    pub(crate) fn target<'a>(&self, groups: &'a Groups) -> Result<&'a KvService, ApiError> {
        if let Some((_, service)) = self.named(groups)? {
            return Ok(service);
        }
        match groups.single() {
            Some(service) => Ok(service),
            None => Err(ApiError::rejected(
                StatusCode::BAD_REQUEST,
                "group_required",
                format!(
                    "this node runs {} groups, each with its own membership: name one with ?group=<0 to {}>",
                    groups.count(),
                    groups.count() - 1
                ),
            )),
        }
    }
}

/// One page of the summary of every group, and counts over all of them.
pub(crate) fn summary(groups: &Groups, query: &GroupQuery) -> Value {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let (mut leading, mut without_leader, mut quiesced) = (0u32, 0u32, 0u32);
    let mut lines = Vec::new();
    let mut next = None;
    for (shard, service) in groups.iter() {
        let metrics = service.raft.metrics();
        let m = metrics.borrow();
        leading += u32::from(m.state == ServerState::Leader);
        without_leader += u32::from(m.current_leader.is_none());
        quiesced += u32::from(m.quiesced);
        if shard < query.from {
            continue;
        }
        if lines.len() as u32 == limit {
            next.get_or_insert(shard);
            continue;
        }
        lines.push(json!({
            "group": shard,
            "state": m.state,
            "leader": m.current_leader,
            "term": m.current_term,
            "committed": m.committed.map(|l| l.index),
            "applied": m.last_applied.map(|l| l.index),
            "quiesced": m.quiesced,
        }));
    }
    json!({
        "node_id": groups.node_id(),
        "group_count": groups.count(),
        "leading": leading,
        "without_leader": without_leader,
        "quiesced": quiesced,
        "groups": lines,
        "next": next,
    })
}

/// The whole map of every group (keys never repeat across groups), and each group's applied
/// index, in shard order.
pub(crate) fn dump_all(groups: &Groups) -> Value {
    let mut data = serde_json::Map::new();
    let mut applied = Vec::new();
    for (_, service) in groups.iter() {
        let (map, last_applied) = service.state_machine.dump();
        data.extend(map.into_iter().map(|(k, v)| (k, Value::String(v))));
        applied.push(last_applied.map(|l| l.index));
    }
    json!({ "ok": true, "applied_index": applied, "data": data })
}
