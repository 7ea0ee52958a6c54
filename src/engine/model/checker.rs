//! Breadth-first search over the model's states, with a 64-bit fingerprint per state.
//!
//! BFS visits states in order of depth, so the first violation found is reached by a shortest
//! trace. Only the frontier is kept whole; every visited state is remembered by its
//! fingerprint and the step that first reached it, which is enough to rebuild a trace by
//! replaying the steps from the root.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::Bounds;
use super::properties::Violation;
use super::step::{self, Action};
use super::world::World;

/// How far a search went.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    /// Distinct states reached, the root included.
    pub(crate) states: usize,
    /// Steps tried, including those that led to a known state.
    pub(crate) transitions: usize,
    /// The depth of the deepest states reached (from the root, not counting the prefix).
    pub(crate) depth: usize,
    /// Whether every reachable state was explored: no state lies beyond the depth bound.
    pub(crate) complete: bool,
    /// Whether the state limit stopped the search before it explored every state within the
    /// depth bound.
    pub(crate) cut: bool,
    pub(crate) elapsed: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} states, {} transitions, depth {} ({}), {:.1?}",
            self.states,
            self.transitions,
            self.depth,
            if self.cut {
                "cut short by the state limit"
            } else if self.complete {
                "every reachable state"
            } else {
                "every state within the depth bound"
            },
            self.elapsed
        )
    }
}

/// A violation and the shortest trace to it.
#[derive(Debug)]
pub(crate) struct Counterexample {
    pub(crate) violation: Violation,
    /// Steps from the root to the violation, prefix included.
    pub(crate) steps: usize,
    /// The trace, one step per line with the state after it.
    pub(crate) trace: String,
    pub(crate) report: Report,
}

impl std::fmt::Display for Counterexample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VIOLATION {}\nafter {} steps; {}\n{}", self.violation, self.steps, self.report, self.trace)
    }
}

/// Explore every state reachable from the end of `prefix` (run from `origin`) within `bounds`.
/// `progress`: print one line per depth level.
///
/// Breadth-first while a level fits in `bounds.max_frontier`; past that, depth-first from
/// each state of the last level, remembering for each state the least depth it was explored
/// at (a state reached again at a lesser depth is explored again, so nothing within the
/// depth bound is missed). Memory then is the visited set, not a level of states; a trace
/// found depth-first may be longer than the shortest.
pub(crate) fn explore(
    bounds: &Bounds,
    origin: &World,
    prefix: &[Action],
    progress: bool,
) -> Result<Report, Box<Counterexample>> {
    let root = replay(origin, prefix, bounds, None).expect("the prefix of a search breaks no property");
    let mut search = Search {
        bounds,
        started: Instant::now(),
        root_fp: root.fingerprint(),
        parents: HashMap::new(),
        dfs_seen: HashMap::new(),
        report: Report { states: 1, transitions: 0, depth: 0, complete: false, cut: false, elapsed: Duration::ZERO },
        progress,
    };
    search.parents.insert(search.root_fp, (search.root_fp, Action::Tick));
    let found = search.run(root);
    search.report.elapsed = search.started.elapsed();
    match found {
        None => Ok(search.report),
        Some((violation, path)) => {
            let mut all = prefix.to_vec();
            all.extend(path);
            let trace = render(origin, &all, bounds, prefix.len());
            Err(Box::new(Counterexample { violation, steps: all.len(), trace, report: search.report }))
        }
    }
}

struct Search<'a> {
    bounds: &'a Bounds,
    started: Instant,
    root_fp: u64,
    /// Every state reached breadth-first: the state and the step that first reached it.
    parents: HashMap<u64, (u64, Action)>,
    /// Every state reached depth-first only: the least depth it was explored at.
    dfs_seen: HashMap<u64, u16>,
    report: Report,
    progress: bool,
}

/// A state on the depth-first stack, with the actions left to try from it.
struct Frame {
    world: World,
    depth: usize,
    /// The action that led here from the frame below.
    via: Action,
    actions: Vec<Action>,
    next: usize,
}

impl Search<'_> {
    /// Run the search; the first violation found and the steps from the root to it.
    fn run(&mut self, root: World) -> Option<(Violation, Vec<Action>)> {
        let b = self.bounds;
        let mut frontier = vec![(self.root_fp, root)];
        while !frontier.is_empty() && self.report.depth < b.max_depth {
            // A level holds about three times the states of the one before.
            if frontier.len().saturating_mul(3) > b.max_frontier {
                return self.depth_first(frontier);
            }
            let mut next = Vec::new();
            let mut new_by_kind: BTreeMap<&'static str, usize> = BTreeMap::new();
            for (fp, w) in std::mem::take(&mut frontier) {
                for action in step::enabled(&w, b) {
                    self.report.transitions += 1;
                    match step::next(&w, action, b) {
                        Ok(None) => {}
                        Ok(Some(s)) => {
                            if self.parents.len() >= b.max_states {
                                self.report.cut = true;
                                self.report.states = self.parents.len();
                                return None;
                            }
                            let sfp = s.fingerprint();
                            if let Entry::Vacant(v) = self.parents.entry(sfp) {
                                v.insert((fp, action));
                                next.push((sfp, s));
                                *new_by_kind.entry(action.kind()).or_default() += 1;
                            }
                        }
                        Err(violation) => {
                            let mut path = self.path_to(fp);
                            path.push(action);
                            return Some((violation, path));
                        }
                    }
                }
            }
            self.report.states = self.parents.len();
            if next.is_empty() {
                self.report.complete = true;
                return None;
            }
            self.report.depth += 1;
            if self.progress {
                eprintln!(
                    "depth {:>3}: {:>10} states, frontier {:>9}, {:>11} transitions, {:.1?}",
                    self.report.depth,
                    self.report.states,
                    next.len(),
                    self.report.transitions,
                    self.started.elapsed()
                );
                eprintln!("           new states by the step that reached them: {new_by_kind:?}");
            }
            frontier = next;
        }
        self.report.complete = frontier.is_empty();
        None
    }

    /// Explore depth-first from each state of `level`, all at the current depth.
    fn depth_first(&mut self, level: Vec<(u64, World)>) -> Option<(Violation, Vec<Action>)> {
        let b = self.bounds;
        let base = self.report.depth;
        if self.progress {
            eprintln!("level {} has {} states: going on depth-first to depth {}", base, level.len(), b.max_depth);
        }
        let mut last_print = Instant::now();
        for (root_fp, root) in level {
            let actions = step::enabled(&root, b);
            let mut stack = vec![Frame { world: root, depth: base, via: Action::Tick, actions, next: 0 }];
            while let Some(top) = stack.last_mut() {
                let Some(action) = top.actions.get(top.next).copied() else {
                    stack.pop();
                    continue;
                };
                top.next += 1;
                self.report.transitions += 1;
                let depth = top.depth + 1;
                match step::next(&top.world, action, b) {
                    Ok(None) => {}
                    Ok(Some(s)) => {
                        if self.parents.len() + self.dfs_seen.len() >= b.max_states {
                            self.report.cut = true;
                            self.report.states = self.parents.len() + self.dfs_seen.len();
                            return None;
                        }
                        let fp = s.fingerprint();
                        if self.parents.contains_key(&fp) {
                            continue;
                        }
                        match self.dfs_seen.entry(fp) {
                            Entry::Occupied(mut o) => {
                                if usize::from(*o.get()) <= depth {
                                    continue;
                                }
                                o.insert(depth as u16);
                            }
                            Entry::Vacant(v) => {
                                v.insert(depth as u16);
                            }
                        }
                        self.report.depth = self.report.depth.max(depth);
                        if depth < b.max_depth {
                            let actions = step::enabled(&s, b);
                            stack.push(Frame { world: s, depth, via: action, actions, next: 0 });
                        }
                    }
                    Err(violation) => {
                        self.report.states = self.parents.len() + self.dfs_seen.len();
                        let mut path = self.path_to(root_fp);
                        path.extend(stack.iter().skip(1).map(|f| f.via));
                        path.push(action);
                        return Some((violation, path));
                    }
                }
                if self.progress && last_print.elapsed() > Duration::from_secs(30) {
                    last_print = Instant::now();
                    eprintln!(
                        "depth-first: {:>10} states, {:>11} transitions, {:.1?}",
                        self.parents.len() + self.dfs_seen.len(),
                        self.report.transitions,
                        self.started.elapsed()
                    );
                }
            }
        }
        self.report.states = self.parents.len() + self.dfs_seen.len();
        self.report.complete = false;
        None
    }

    /// The steps from the root to the state `fp`, reached breadth-first.
    fn path_to(&self, mut fp: u64) -> Vec<Action> {
        let mut path = Vec::new();
        while fp != self.root_fp {
            let (parent, action) = self.parents[&fp];
            path.push(action);
            fp = parent;
        }
        path.reverse();
        path
    }
}

/// Run `steps` from `origin`; with `trace`, describe each step and what it changed (numbered
/// from `first`), and the whole state at the end.
pub(super) fn replay(
    origin: &World,
    steps: &[Action],
    bounds: &Bounds,
    mut trace: Option<(&mut String, usize)>,
) -> Result<World, Violation> {
    let mut w = origin.clone();
    let mut before = w.summary_lines();
    for (i, action) in steps.iter().enumerate() {
        if let Some((t, first)) = trace.as_mut() {
            let _ = writeln!(t, "{:>3}. {}", *first + i, step::describe(&w, *action));
        }
        let next = step::next(&w, *action, bounds);
        let next = match next {
            Ok(next) => next,
            Err(v) => {
                if let Some((t, _)) = trace.as_mut() {
                    let _ = writeln!(t, "  => {v}\nthe state before that step:\n{}", w.summary());
                }
                return Err(v);
            }
        };
        w = next.unwrap_or_else(|| panic!("step {} ({action:?}) of a recorded trace changes nothing", i + 1));
        if let Some((t, _)) = trace.as_mut() {
            let after = w.summary_lines();
            // Only what changed, but not the network: what was sent shows in later steps.
            for line in after.iter().filter(|l| !before.contains(l) && !l.starts_with("    net=")) {
                let _ = writeln!(t, "{line}");
            }
            before = after;
        }
    }
    Ok(w)
}

/// The trace of `steps` from `origin`, marking where the search's root was.
fn render(origin: &World, steps: &[Action], bounds: &Bounds, prefix: usize) -> String {
    let mut t = format!("initial state:\n{}\n", origin.summary());
    let _ = replay(origin, &steps[..prefix], bounds, Some((&mut t, 1)));
    if prefix > 0 {
        let _ = writeln!(t, "--- the search starts here ---");
    }
    let root = replay(origin, &steps[..prefix], bounds, None).expect("the prefix breaks no property");
    let _ = replay(&root, &steps[prefix..], bounds, Some((&mut t, prefix + 1)));
    t
}
