//! [`RaftTypeConfig`]: the bundle of application types a Raft node is generic over.
//!
//! Every generic type in quorate is parameterized by one `C: RaftTypeConfig` instead of a pile of
//! type parameters. Use [`declare_raft_types!`](crate::declare_raft_types) to define one with
//! sensible defaults.

use std::fmt::{Debug, Display};
use std::hash::Hash;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The identity of a node in the cluster.
///
/// It must be cheap to copy and totally ordered; `u64` is the usual choice.
pub trait NodeId:
    Copy
    + Clone
    + Debug
    + Display
    + Default
    + Eq
    + Ord
    + Hash
    + Send
    + Sync
    + Serialize
    + DeserializeOwned
    + Unpin
    + 'static
{
}

impl<T> NodeId for T where
    T: Copy
        + Clone
        + Debug
        + Display
        + Default
        + Eq
        + Ord
        + Hash
        + Send
        + Sync
        + Serialize
        + DeserializeOwned
        + Unpin
        + 'static
{
}

/// Information about a node that the network layer needs to reach it, such as its address.
///
/// It is stored in every [`Membership`](crate::Membership) entry, so it is replicated with the
/// log and survives restarts.
pub trait Node: Clone + Debug + Default + Eq + Send + Sync + Serialize + DeserializeOwned + Unpin + 'static {}

impl<T> Node for T where T: Clone + Debug + Default + Eq + Send + Sync + Serialize + DeserializeOwned + Unpin + 'static {}

/// Application data carried by a log entry, or the state machine's response to it.
pub trait AppData: Clone + Debug + Send + Sync + Serialize + DeserializeOwned + 'static {}

impl<T> AppData for T where T: Clone + Debug + Send + Sync + Serialize + DeserializeOwned + 'static {}

/// The application types a Raft node works with.
///
/// Implement it on an empty marker type, usually through
/// [`declare_raft_types!`](crate::declare_raft_types).
pub trait RaftTypeConfig: Sized + Send + Sync + Debug + Clone + Copy + Default + Eq + Ord + Hash + 'static {
    /// The application request that a client proposes and the log replicates.
    type D: AppData;

    /// The state machine's response to applying one entry.
    type R: Debug + Send + 'static;

    /// The type that identifies a node.
    type NodeId: NodeId;

    /// Addressing information for a node.
    type Node: Node;

    /// The snapshot payload, readable and writable in chunks.
    ///
    /// The leader reads it in bounded chunks to send it; a follower writes received chunks into
    /// a fresh one from [`RaftStateMachine::begin_receiving_snapshot`](crate::RaftStateMachine::begin_receiving_snapshot).
    type SnapshotData: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tokio::io::AsyncSeek
        + Debug
        + Send
        + Sync
        + Unpin
        + 'static;

    /// The approximate size in bytes of an application request, for the byte bounds on
    /// replication (`Config::max_payload_bytes`, `Config::max_in_flight_bytes`). The default
    /// counts only the value itself, not what it points to; override it (outside the macro:
    /// implement the trait by hand) for requests that carry large buffers.
    fn entry_size(data: &Self::D) -> usize {
        std::mem::size_of_val(data)
    }
}

/// A basic [`Node`] that carries the address of a node as a string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct BasicNode {
    /// The address at which the node can be reached, e.g. `10.0.0.1:7001`.
    pub addr: String,
}

impl BasicNode {
    /// A node reachable at `addr`.
    pub fn new(addr: impl ToString) -> Self {
        Self { addr: addr.to_string() }
    }
}

impl Display for BasicNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.addr)
    }
}

/// Declare a [`RaftTypeConfig`] implementation.
///
/// Every type has a default, so only the ones the application cares about need naming:
///
/// ```
/// quorate::declare_raft_types!(
///     /// The types of my application.
///     pub MyTypes:
///         D = String,
///         R = String,
/// );
/// ```
///
/// Defaults: `D = String`, `R = String`, `NodeId = u64`, `Node = BasicNode`,
/// `SnapshotData = std::io::Cursor<Vec<u8>>`.
#[macro_export]
macro_rules! declare_raft_types {
    ($(#[$outer:meta])* $visibility:vis $id:ident $(: $($(#[$inner:meta])* $type_id:ident = $type:ty),* $(,)? )? ) => {
        $(#[$outer])*
        #[derive(Debug, Clone, Copy, Default, Eq, PartialEq, Ord, PartialOrd, Hash)]
        $visibility struct $id {}

        impl $crate::RaftTypeConfig for $id {
            $crate::__quorate_type_or_default!(@expand D, String, $($($type_id = $type,)*)?);
            $crate::__quorate_type_or_default!(@expand R, String, $($($type_id = $type,)*)?);
            $crate::__quorate_type_or_default!(@expand NodeId, u64, $($($type_id = $type,)*)?);
            $crate::__quorate_type_or_default!(@expand Node, $crate::BasicNode, $($($type_id = $type,)*)?);
            $crate::__quorate_type_or_default!(@expand SnapshotData, std::io::Cursor<Vec<u8>>, $($($type_id = $type,)*)?);
        }
    };
}

/// Picks the user's type for one associated type, or the default. Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __quorate_type_or_default {
    (@expand $name:ident, $default:ty, ) => {
        type $name = $default;
    };
    (@expand D, $default:ty, D = $t:ty, $($rest:tt)*) => { type D = $t; };
    (@expand R, $default:ty, R = $t:ty, $($rest:tt)*) => { type R = $t; };
    (@expand NodeId, $default:ty, NodeId = $t:ty, $($rest:tt)*) => { type NodeId = $t; };
    (@expand Node, $default:ty, Node = $t:ty, $($rest:tt)*) => { type Node = $t; };
    (@expand SnapshotData, $default:ty, SnapshotData = $t:ty, $($rest:tt)*) => { type SnapshotData = $t; };
    (@expand $name:ident, $default:ty, $other:ident = $t:ty, $($rest:tt)*) => {
        $crate::__quorate_type_or_default!(@expand $name, $default, $($rest)*);
    };
}
