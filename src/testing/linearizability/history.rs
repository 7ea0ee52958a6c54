//! The history a test records ([`KvOp`] and its parts) and its translation into the compact
//! operations the search works on.

use std::collections::HashMap;
use std::fmt;

use super::search::{Input, Op, Output, Value};

/// One operation of a history, as a client observed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvOp {
    /// The client that issued it. Informational: it is shown in witnesses, and the checker
    /// does not require a client's operations to be sequential (a client that gave up on an
    /// operation may issue the next while the first is still in flight).
    pub client: u64,
    /// When the client called it, on a clock shared by all clients (e.g. nanoseconds since the
    /// test started).
    pub call: u64,
    /// What it asked for.
    pub input: KvInput,
    /// When it returned and what it answered, or `None` if the client never learned: then it
    /// may have taken effect at any time after `call`, or never.
    pub ret: Option<KvReturn>,
}

/// The request of an operation: what it does and to which key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KvInput {
    /// Read the value of `key`.
    Get {
        /// The key to read.
        key: String,
    },
    /// Set `key` to `value`.
    Put {
        /// The key to write.
        key: String,
        /// Its new value.
        value: String,
    },
    /// Remove `key`.
    Delete {
        /// The key to remove.
        key: String,
    },
    /// Set `key` to `new` (remove it if `new` is `None`) if it holds `expected` (is absent if
    /// `expected` is `None`).
    CompareAndSet {
        /// The key to write.
        key: String,
        /// The value the key must hold; `None`: the key must be absent.
        expected: Option<String>,
        /// The value to store; `None` removes the key.
        new: Option<String>,
    },
}

/// When an operation returned and what it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvReturn {
    /// When the client received the answer; not before the call.
    pub at: u64,
    /// The answer; of the same kind as the input.
    pub output: KvOutput,
}

/// The answer to an operation, one kind per kind of [`KvInput`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KvOutput {
    /// The value a [`KvInput::Get`] read; `None` if the key was absent.
    Get(Option<String>),
    /// A [`KvInput::Put`] took effect.
    Put,
    /// A [`KvInput::Delete`] took effect (whether or not the key existed).
    Delete,
    /// Whether a [`KvInput::CompareAndSet`] swapped.
    CompareAndSet(bool),
}

/// A history the checker cannot judge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// An operation returned before it was called.
    #[error("operation #{index} returns at {at}, before its call at {call}")]
    ReturnBeforeCall {
        /// Its position in the history.
        index: usize,
        /// Its call time.
        call: u64,
        /// Its return time.
        at: u64,
    },
    /// An operation's answer is of another kind than its request (e.g. a `Get` answered by
    /// `CompareAndSet(true)`).
    #[error("operation #{index}: {output:?} does not answer {input}")]
    OutputMismatch {
        /// Its position in the history.
        index: usize,
        /// Its request.
        input: KvInput,
        /// Its answer.
        output: KvOutput,
    },
}

impl KvOp {
    /// An operation of `client` called at `call` that returned `output` at `at`.
    pub fn returned(client: u64, input: KvInput, call: u64, at: u64, output: KvOutput) -> Self {
        Self { client, call, input, ret: Some(KvReturn { at, output }) }
    }

    /// An operation of `client` called at `call` whose outcome is unknown.
    pub fn unknown(client: u64, input: KvInput, call: u64) -> Self {
        Self { client, call, input, ret: None }
    }

    /// Check that the operation is well formed; `index` is its position, for the error.
    pub(super) fn validate(&self, index: usize) -> Result<(), HistoryError> {
        let Some(ret) = &self.ret else { return Ok(()) };
        if ret.at < self.call {
            return Err(HistoryError::ReturnBeforeCall { index, call: self.call, at: ret.at });
        }
        let matches = matches!(
            (&self.input, &ret.output),
            (KvInput::Get { .. }, KvOutput::Get(_))
                | (KvInput::Put { .. }, KvOutput::Put)
                | (KvInput::Delete { .. }, KvOutput::Delete)
                | (KvInput::CompareAndSet { .. }, KvOutput::CompareAndSet(_))
        );
        if !matches {
            return Err(HistoryError::OutputMismatch { index, input: self.input.clone(), output: ret.output.clone() });
        }
        Ok(())
    }
}

impl KvInput {
    /// A [`KvInput::Get`].
    pub fn get(key: impl Into<String>) -> Self {
        Self::Get { key: key.into() }
    }

    /// A [`KvInput::Put`].
    pub fn put(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self::Put { key: key.into(), value: value.into() }
    }

    /// A [`KvInput::Delete`].
    pub fn delete(key: impl Into<String>) -> Self {
        Self::Delete { key: key.into() }
    }

    /// A [`KvInput::CompareAndSet`].
    pub fn compare_and_set(key: impl Into<String>, expected: Option<&str>, new: Option<&str>) -> Self {
        Self::CompareAndSet { key: key.into(), expected: expected.map(str::to_string), new: new.map(str::to_string) }
    }

    /// The key the operation touches.
    pub fn key(&self) -> &str {
        match self {
            Self::Get { key } | Self::Put { key, .. } | Self::Delete { key } | Self::CompareAndSet { key, .. } => key,
        }
    }
}

impl fmt::Display for KvInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Get { key } => write!(f, "get({key})"),
            Self::Put { key, value } => write!(f, "put({key}, {value})"),
            Self::Delete { key } => write!(f, "delete({key})"),
            Self::CompareAndSet { key, expected, new } => write!(f, "cas({key}, {expected:?} -> {new:?})"),
        }
    }
}

impl fmt::Display for KvOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Get(value) => write!(f, "{value:?}"),
            Self::Put | Self::Delete => f.write_str("ok"),
            Self::CompareAndSet(swapped) => write!(f, "{}", if *swapped { "swapped" } else { "failed" }),
        }
    }
}

/// Displays as `c2 [10, 15] cas(k, Some("a") -> Some("b")) -> swapped`, with `?` for what
/// the client never learned.
impl fmt::Display for KvOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.ret {
            Some(ret) => write!(f, "c{} [{}, {}] {} -> {}", self.client, self.call, ret.at, self.input, ret.output),
            None => write!(f, "c{} [{}, ?] {} -> ?", self.client, self.call, self.input),
        }
    }
}

/// Numbers the values of one key: `None` is 0, each distinct string the next number.
#[derive(Default)]
struct Values<'a> {
    ids: HashMap<&'a str, Value>,
}

impl<'a> Values<'a> {
    fn id(&mut self, value: Option<&'a String>) -> Value {
        let Some(value) = value else { return 0 };
        let next = self.ids.len() as Value + 1;
        *self.ids.entry(value.as_str()).or_insert(next)
    }
}

/// The operations of one key, validated, in the search's compact form. Operations with an
/// unknown outcome that cannot change the value (reads) are dropped: they constrain nothing.
pub(super) fn compile_key(ops: &[&KvOp]) -> Vec<Op> {
    let mut values = Values::default();
    ops.iter()
        .filter(|op| op.ret.is_some() || !matches!(op.input, KvInput::Get { .. }))
        .map(|op| {
            let input = match &op.input {
                KvInput::Get { .. } => Input::Get,
                KvInput::Put { value, .. } => Input::Put(values.id(Some(value))),
                KvInput::Delete { .. } => Input::Put(0),
                KvInput::CompareAndSet { expected, new, .. } => {
                    Input::CompareAndSet { expected: values.id(expected.as_ref()), new: values.id(new.as_ref()) }
                }
            };
            let (ret, output) = match &op.ret {
                None => (None, Output::Any),
                Some(KvReturn { at, output }) => (
                    Some(*at),
                    match output {
                        KvOutput::Get(value) => Output::Read(values.id(value.as_ref())),
                        KvOutput::Put | KvOutput::Delete => Output::Done,
                        KvOutput::CompareAndSet(swapped) => Output::Swapped(*swapped),
                    },
                ),
            };
            Op { call: op.call, ret, input, output }
        })
        .collect()
}
