//! The search for a linearization of one key's operations.
//!
//! The calls and returns of the operations form one list in time order. The search walks it
//! from the front: at a call, it tries to linearize the operation (apply it to the register
//! and check the answer); if that works and leads to a configuration not seen before, the
//! operation's call and return leave the list, the choice is pushed on a stack, and the walk
//! restarts at the front. At the return of an operation not linearized yet, the last choice
//! is undone (its events go back into the list) and the walk goes on after its call. The
//! search succeeds when every operation that returned is linearized: the ones of unknown
//! outcome left over take effect after all others, or never.
//!
//! A configuration is the set of linearized operations and the register's value. The set is a
//! bitset with an incremental hash (one random word per operation, XOR-ed in and out), so
//! remembering and looking up a configuration costs a hash-map probe and a comparison of the
//! bitset words.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A register value: 0 for "absent", each distinct string of the key a number from 1.
pub(super) type Value = u32;

/// What an operation does to the register.
#[derive(Debug, Clone, Copy)]
pub(super) enum Input {
    /// Read the value.
    Get,
    /// Set the value (0: remove it).
    Put(Value),
    /// Set the value to `new` if it is `expected`.
    CompareAndSet {
        /// The value the register must hold.
        expected: Value,
        /// The value to store.
        new: Value,
    },
}

/// What an operation answered.
#[derive(Debug, Clone, Copy)]
pub(super) enum Output {
    /// Unknown: any answer is acceptable.
    Any,
    /// A read of this value.
    Read(Value),
    /// A write took effect.
    Done,
    /// Whether a compare-and-set swapped.
    Swapped(bool),
}

/// One operation of a key.
#[derive(Debug, Clone, Copy)]
pub(super) struct Op {
    pub(super) call: u64,
    /// `None`: the outcome is unknown.
    pub(super) ret: Option<u64>,
    pub(super) input: Input,
    pub(super) output: Output,
}

impl Op {
    /// The register's value after this operation is applied to `value`, or `None` if the
    /// register would not answer what the operation answered.
    fn step(&self, value: Value) -> Option<Value> {
        match (self.input, self.output) {
            (Input::Get, Output::Any) => Some(value),
            (Input::Get, Output::Read(read)) => (read == value).then_some(value),
            (Input::Put(new), Output::Any | Output::Done) => Some(new),
            (Input::CompareAndSet { expected, new }, output) => {
                let swaps = value == expected;
                let after = if swaps { new } else { value };
                match output {
                    Output::Any => Some(after),
                    Output::Swapped(swapped) => (swapped == swaps).then_some(after),
                    Output::Read(_) | Output::Done => None,
                }
            }
            // Validation rules out answers of another kind.
            (Input::Get | Input::Put(_), _) => None,
        }
    }
}

/// How the search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The operations linearize.
    Linearizable,
    /// They do not: no order got past the return at time `frontier`, so the operations called
    /// up to then are already not linearizable.
    NotLinearizable { frontier: u64 },
    /// The step limit was reached first.
    OutOfSteps,
}

/// Search for a linearization of `ops`, in at most `max_steps` steps (one step tries one call
/// or backs out at one return).
pub(super) fn search(ops: &[Op], max_steps: u64) -> Outcome {
    let mut search = Search::new(ops);
    let mut frontier = 0;
    let mut event = search.events.first();
    let mut steps = 0;

    while search.unlinearized_returned > 0 {
        if steps == max_steps {
            return Outcome::OutOfSteps;
        }
        steps += 1;
        let next = if search.events.is_call[event] {
            match search.try_linearize(event) {
                Attempt::Linearized => Some(search.events.first()),
                Attempt::Rejected => Some(search.events.next[event]),
                Attempt::DeadEnd => search.back_out(),
            }
        } else {
            // The return of an operation that is not linearized. Operations of unknown
            // outcome return after all others, so this one returned.
            let ret = search.ops[search.events.op[event]].ret;
            debug_assert!(ret.is_some(), "an unknown outcome's return is never reached");
            frontier = frontier.max(ret.unwrap_or(u64::MAX));
            search.back_out()
        };
        match next {
            Some(next) => event = next,
            None => return Outcome::NotLinearizable { frontier },
        }
    }
    Outcome::Linearizable
}

/// What came of trying to linearize a called operation.
enum Attempt {
    /// It is linearized; the walk restarts at the front of the list.
    Linearized,
    /// It cannot go here, or it leads to a configuration already explored; the walk goes on.
    Rejected,
    /// It is a read that fits here but leads to a configuration already explored: the current
    /// configuration fails too (see [`Choice::only_option`]).
    DeadEnd,
}

/// The state of a search: the configuration, and the choices that led to it.
struct Search<'a> {
    ops: &'a [Op],
    events: Events,
    linearized: Linearized,
    /// The register's value after the linearized operations.
    value: Value,
    seen: Seen,
    choices: Vec<Choice>,
    /// Operations that returned and are not linearized yet; the search succeeds at 0.
    unlinearized_returned: usize,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [Op]) -> Self {
        let linearized = Linearized::new(ops.len());
        Self {
            ops,
            events: Events::new(ops),
            seen: Seen::new(linearized.words.len()),
            linearized,
            value: 0,
            choices: Vec::new(),
            unlinearized_returned: ops.iter().filter(|op| op.ret.is_some()).count(),
        }
    }

    /// Linearize the operation called at `call` next, if the register allows it and the
    /// configuration it leads to is new.
    fn try_linearize(&mut self, call: usize) -> Attempt {
        let index = self.events.op[call];
        let op = &self.ops[index];
        let Some(next) = op.step(self.value) else { return Attempt::Rejected };
        let is_read = matches!(op.input, Input::Get);
        self.linearized.insert(index);
        if !self.seen.insert(&self.linearized, next) {
            self.linearized.remove(index);
            return if is_read { Attempt::DeadEnd } else { Attempt::Rejected };
        }
        self.choices.push(Choice { call, before: self.value, only_option: is_read });
        self.value = next;
        self.events.lift(call);
        self.unlinearized_returned -= usize::from(op.ret.is_some());
        Attempt::Linearized
    }

    /// Undo choices up to the latest one that had alternatives; return the event after its
    /// call, where the walk tries those. `None` if no choice is left: the search failed.
    fn back_out(&mut self) -> Option<usize> {
        loop {
            let choice = self.choices.pop()?;
            let index = self.events.op[choice.call];
            self.linearized.remove(index);
            self.value = choice.before;
            self.events.unlift(choice.call);
            self.unlinearized_returned += usize::from(self.ops[index].ret.is_some());
            if !choice.only_option {
                return Some(self.events.next[choice.call]);
            }
        }
    }
}

/// An operation the search linearized, to be undone when it backs out.
struct Choice {
    /// The operation's call event.
    call: usize,
    /// The register's value before it.
    before: Value,
    /// Whether linearizing it was the only option worth trying: a read, linearized as soon as
    /// it was allowed. If the search fails after it, it fails without it too: any
    /// linearization that places the read later works with the read moved here, as a read
    /// changes no value (wherever it is) and everything that had to come before it already
    /// has. (An operation that changes nothing here, like a failing compare-and-set, may
    /// change the value elsewhere, so it gets no such shortcut.)
    only_option: bool,
}

/// The calls and returns of the operations, as a doubly linked list in time order from which
/// an operation's two events can be lifted out and put back (in reverse order of lifting).
///
/// Events are numbered by their position in time order; `sentinel` (one past the last) is
/// both the head and the tail of the list.
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// The operation of each event.
    op: Vec<usize>,
    is_call: Vec<bool>,
    /// The return event of each call event.
    return_of: Vec<usize>,
    sentinel: usize,
}

impl Events {
    fn new(ops: &[Op]) -> Self {
        // Sort key: time, then calls before returns (operations that touch at an instant
        // overlap), then known returns before unknown ones (which come last of all).
        let mut order: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            order.push((op.call, 0, i));
            order.push(match op.ret {
                Some(at) => (at, 1, i),
                None => (u64::MAX, 2, i),
            });
        }
        order.sort_unstable();

        let sentinel = order.len();
        let mut events = Events {
            next: (1..=sentinel + 1).collect(),
            prev: (0..=sentinel).map(|i| i.checked_sub(1).unwrap_or(sentinel)).collect(),
            op: order.iter().map(|&(_, _, op)| op).collect(),
            is_call: order.iter().map(|&(_, rank, _)| rank == 0).collect(),
            return_of: vec![sentinel; sentinel],
            sentinel,
        };
        events.next[sentinel] = 0;
        let mut call_of_op = vec![sentinel; ops.len()];
        for (event, &(_, rank, op)) in order.iter().enumerate() {
            if rank == 0 {
                call_of_op[op] = event;
            } else {
                events.return_of[call_of_op[op]] = event;
            }
        }
        events
    }

    /// The first event still in the list (the sentinel if it is empty).
    fn first(&self) -> usize {
        self.next[self.sentinel]
    }

    fn unlink(&mut self, event: usize) {
        let (prev, next) = (self.prev[event], self.next[event]);
        self.next[prev] = next;
        self.prev[next] = prev;
    }

    fn relink(&mut self, event: usize) {
        let (prev, next) = (self.prev[event], self.next[event]);
        self.next[prev] = event;
        self.prev[next] = event;
    }

    /// Take the operation of `call` out of the list: its call and its return.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.return_of[call]);
    }

    /// Undo the latest [`lift`](Self::lift), which must have been of `call`.
    fn unlift(&mut self, call: usize) {
        self.relink(self.return_of[call]);
        self.relink(call);
    }
}

/// The set of linearized operations, with a hash kept up to date as it changes.
struct Linearized {
    words: Vec<u64>,
    /// One random word per operation; the hash is the XOR of those of the members.
    keys: Vec<u64>,
    hash: u64,
}

impl Linearized {
    fn new(ops: usize) -> Self {
        let keys = (0..ops as u64).map(|i| mix(i.wrapping_add(0x5151_f00d))).collect();
        Self { words: vec![0; ops.div_ceil(64)], keys, hash: 0 }
    }

    fn insert(&mut self, op: usize) {
        self.words[op / 64] |= 1 << (op % 64);
        self.hash ^= self.keys[op];
    }

    fn remove(&mut self, op: usize) {
        self.words[op / 64] &= !(1 << (op % 64));
        self.hash ^= self.keys[op];
    }
}

/// The configurations reached so far. Each is stored once in an arena as
/// `[value, next entry with the same hash + 1 (0: none), bitset words...]`; a map from hash to
/// the latest entry with that hash heads each chain.
struct Seen {
    stride: usize,
    arena: Vec<u64>,
    heads: HashMap<u64, usize, BuildHasherDefault<PassThrough>>,
}

impl Seen {
    fn new(words: usize) -> Self {
        Self { stride: words + 2, arena: Vec::new(), heads: HashMap::default() }
    }

    /// Remember `(linearized, value)`; `false` if it was already seen.
    fn insert(&mut self, linearized: &Linearized, value: Value) -> bool {
        let hash = linearized.hash ^ mix(u64::from(value));
        let head = self.heads.get(&hash).copied();
        let mut cursor = head;
        while let Some(entry) = cursor {
            let stored = &self.arena[entry * self.stride..(entry + 1) * self.stride];
            if stored[0] == u64::from(value) && stored[2..] == linearized.words[..] {
                return false;
            }
            cursor = (stored[1] as usize).checked_sub(1);
        }
        let entry = self.arena.len() / self.stride;
        self.arena.push(u64::from(value));
        self.arena.push(head.map_or(0, |h| h as u64 + 1));
        self.arena.extend_from_slice(&linearized.words);
        self.heads.insert(hash, entry);
        true
    }
}

/// A hasher for keys that are already well-mixed hashes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix(self.0 ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// SplitMix64's finalizer: spreads every input bit over the whole word.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
