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

/// How many bytes a value costs to replicate: what the byte bounds of replication count
/// ([`Config::max_payload_bytes`](crate::Config::max_payload_bytes) per AppendEntries request,
/// [`Config::max_in_flight_bytes`](crate::Config::max_in_flight_bytes) per follower).
///
/// Every request type (`RaftTypeConfig::D`) must implement it. There is deliberately no
/// default: a default that could not see inside the value (`size_of_val` counts 24 bytes for
/// a `String` of any length) let requests of megabyte values pass as tiny, batches grew past
/// what a network can frame, and a lagging follower never caught up. A request type without
/// an implementation does not compile, so the bound cannot be wrong by omission.
///
/// # What to count
///
/// About what the value takes on the wire: the length of its strings and byte buffers, plus
/// a few bytes for each small field. Exactness does not matter; proportionality does: a value
/// twice as large on the wire should count about twice as much. Keep it cheap (quorate calls
/// it for every entry it replicates): add up lengths, do not serialize.
///
/// Implementations are provided for strings, byte buffers, numbers, `bool`, `char`, `()`,
/// and for `Option`, `Box`, `Arc` and tuples of values that implement it.
///
/// ```
/// use quorate::PayloadSize;
///
/// #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
/// pub enum Request {
///     Set { key: String, value: Vec<u8> },
///     Delete { key: String },
/// }
///
/// impl PayloadSize for Request {
///     fn payload_size(&self) -> usize {
///         match self {
///             Request::Set { key, value } => 1 + key.payload_size() + value.payload_size(),
///             Request::Delete { key } => 1 + key.payload_size(),
///         }
///     }
/// }
///
/// quorate::declare_raft_types!(
///     pub MyTypes:
///         D = Request,
/// );
/// ```
///
/// A request type from another crate (where the orphan rule forbids implementing this trait)
/// goes in a newtype of your own.
pub trait PayloadSize {
    /// The approximate serialized size of `self`, in bytes.
    fn payload_size(&self) -> usize;
}

impl PayloadSize for str {
    fn payload_size(&self) -> usize {
        // A length prefix and the bytes.
        8 + self.len()
    }
}

impl PayloadSize for String {
    fn payload_size(&self) -> usize {
        self.as_str().payload_size()
    }
}

impl PayloadSize for [u8] {
    fn payload_size(&self) -> usize {
        8 + self.len()
    }
}

impl PayloadSize for Vec<u8> {
    fn payload_size(&self) -> usize {
        self.as_slice().payload_size()
    }
}

impl<T: PayloadSize + ?Sized> PayloadSize for Box<T> {
    fn payload_size(&self) -> usize {
        (**self).payload_size()
    }
}

impl<T: PayloadSize + ?Sized> PayloadSize for std::sync::Arc<T> {
    fn payload_size(&self) -> usize {
        (**self).payload_size()
    }
}

impl<T: PayloadSize> PayloadSize for Option<T> {
    fn payload_size(&self) -> usize {
        1 + self.as_ref().map_or(0, T::payload_size)
    }
}

/// Values with no heap part: their size in memory.
macro_rules! payload_size_of_val {
    ($($t:ty),*) => {$(
        impl PayloadSize for $t {
            fn payload_size(&self) -> usize {
                std::mem::size_of::<$t>()
            }
        }
    )*};
}

payload_size_of_val!((), bool, char, u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64);

/// Tuples: the sum of their parts.
macro_rules! payload_size_of_tuple {
    ($(($($name:ident),+)),*) => {$(
        impl<$($name: PayloadSize),+> PayloadSize for ($($name,)+) {
            #[allow(non_snake_case)]
            fn payload_size(&self) -> usize {
                let ($($name,)+) = self;
                0 $(+ $name.payload_size())+
            }
        }
    )*};
}

payload_size_of_tuple!((A), (A, B), (A, B, C), (A, B, C, D));

/// The application types a Raft node works with.
///
/// Implement it on an empty marker type, usually through
/// [`declare_raft_types!`](crate::declare_raft_types).
pub trait RaftTypeConfig: Sized + Send + Sync + Debug + Clone + Copy + Default + Eq + Ord + Hash + 'static {
    /// The application request that a client proposes and the log replicates. Its
    /// [`PayloadSize`] is what replication's byte bounds count.
    type D: AppData + PayloadSize;

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
/// `SnapshotData = std::io::Cursor<Vec<u8>>`. `D` must implement [`PayloadSize`].
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
