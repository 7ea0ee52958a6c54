//! The shared log of many groups ([`SharedLog`]): every group recovers exactly, a segment goes
//! only when every group is done with it, removed groups, one store per group, and what
//! recovery cuts or refuses.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use quorate::file_store::{FileLogStore, FileStoreError, FileStoreOptions, GroupLogStore, SharedLog};
use quorate::{Entry, IOFlushed, LogId, RaftLogReader, RaftLogStorage, Vote};

use crate::{C, entry, log_id};

pub(crate) type Log = SharedLog<C>;
pub(crate) type Store = GroupLogStore<C>;

/// Everything a group's log says about itself, to compare across a restart.
#[derive(Debug, PartialEq)]
pub(crate) struct GroupState {
    pub(crate) vote: Option<Vote<C>>,
    pub(crate) committed: Option<LogId<C>>,
    pub(crate) purged: Option<LogId<C>>,
    pub(crate) entries: Vec<LogId<C>>,
}

pub(crate) async fn state_of(store: &mut Store) -> GroupState {
    let log_state = store.get_log_state().await.unwrap();
    let mut reader = store.get_log_reader().await;
    let entries = reader.try_get_log_entries(0..u64::MAX).await.unwrap().into_iter().map(|e| e.log_id).collect();
    GroupState {
        vote: store.read_vote().await.unwrap(),
        committed: store.read_committed().await.unwrap(),
        purged: log_state.last_purged_log_id,
        entries,
    }
}

pub(crate) async fn append_durably(store: &mut Store, entries: Vec<Entry<C>>) {
    let (cb, rx) = IOFlushed::with_receiver();
    store.append(entries, cb).await.unwrap();
    rx.await.unwrap().unwrap();
}

/// Entries `indexes` of term `term`.
pub(crate) fn entries(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry<C>> {
    indexes.map(|i| entry(term, i)).collect()
}

fn small_segments() -> FileStoreOptions {
    FileStoreOptions::default().segment_bytes(256)
}

fn open_small(dir: &Path) -> Log {
    Log::open_with(dir, small_segments()).unwrap()
}

fn has_segment(dir: &Path, seq: u64) -> bool {
    dir.join(format!("seg-{seq:010}.log")).exists()
}

fn newest_segment(dir: &Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    segs.sort();
    segs.pop().unwrap()
}

/// The state of every group in `groups`, read through fresh stores.
async fn states(log: &Log, groups: &[u64]) -> Vec<GroupState> {
    let mut states = Vec::new();
    for &g in groups {
        states.push(state_of(&mut log.group(g).unwrap()).await);
    }
    states
}

/// Five groups with every kind of record, interleaved across many small segments: each one
/// comes back with its own vote, committed id, purge and entries, after one restart and after
/// a second (which replays from segments whose headers restate the first's state).
#[tokio::test]
async fn every_group_recovers_its_own_vote_committed_entries_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    let groups = [1, 2, 3, 4, 5];
    let expected = {
        let log = open_small(dir.path());
        let mut stores: Vec<Store> = groups.iter().map(|&g| log.group(g).unwrap()).collect();
        for round in 1..=4u64 {
            for (g, store) in groups.iter().zip(stores.iter_mut()) {
                let first = (round - 1) * 5 + 1;
                append_durably(store, entries(*g, first..=first + 4)).await;
                if round == 2 {
                    store.save_vote(&Vote::new(*g, *g)).await.unwrap();
                }
            }
        }
        // Group 2 has its tail overwritten by a new leader, group 3 purges, group 4 records
        // what it committed, group 5 purges everything ahead of its log (a snapshot install).
        stores[1].truncate(log_id(2, 15)).await.unwrap();
        append_durably(&mut stores[1], entries(7, 15..=16)).await;
        stores[2].purge(log_id(3, 12)).await.unwrap();
        stores[3].save_committed(Some(log_id(4, 18))).await.unwrap();
        stores[4].purge(log_id(9, 40)).await.unwrap();
        append_durably(&mut stores[4], vec![entry(9, 41)]).await;
        let mut expected = Vec::new();
        for store in &mut stores {
            expected.push(state_of(store).await);
        }
        expected
    };
    assert_eq!(expected[1].entries.last(), Some(&log_id(7, 16)));
    assert_eq!(expected[4].entries, vec![log_id(9, 41)]);
    for restart in 1..=2 {
        let log = open_small(dir.path());
        assert_eq!(log.groups(), groups.to_vec(), "restart {restart}");
        assert_eq!(states(&log, &groups).await, expected, "restart {restart}");
    }
}

/// Raft §7: a group purges once its snapshot covers the entries. A shared segment holds
/// entries of many groups, so it goes only when all of them have purged past it.
#[tokio::test]
async fn a_segment_is_deleted_only_when_every_group_purged_past_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open_small(dir.path());
        let (mut a, mut b) = (log.group(1).unwrap(), log.group(2).unwrap());
        for i in 1..=30 {
            append_durably(&mut a, vec![entry(1, i)]).await;
            append_durably(&mut b, vec![entry(1, i)]).await;
        }
        a.purge(log_id(1, 30)).await.unwrap();
        append_durably(&mut a, vec![entry(1, 31)]).await;
        append_durably(&mut log.group(3).unwrap(), vec![entry(1, 1)]).await;
        assert!(has_segment(dir.path(), 1), "group 2 still needs the first segment");
    }
    {
        let log = open_small(dir.path());
        let [a, b] = <[GroupState; 2]>::try_from(states(&log, &[1, 2]).await).unwrap();
        assert_eq!((a.purged, a.entries), (Some(log_id(1, 30)), vec![log_id(1, 31)]));
        assert_eq!(b.entries, (1..=30).map(|i| log_id(1, i)).collect::<Vec<_>>());
        let (mut a, mut b) = (log.group(1).unwrap(), log.group(2).unwrap());
        b.purge(log_id(1, 30)).await.unwrap();
        append_durably(&mut b, vec![entry(1, 31)]).await;
        // The writer deletes released segments after the sync that released them, before it
        // takes the next batch: one more durable append is past the deletion.
        append_durably(&mut a, vec![entry(1, 32)]).await;
        assert!(!has_segment(dir.path(), 1), "both groups purged past the first segment");
    }
    let log = open_small(dir.path());
    let expected =
        GroupState { vote: None, committed: None, purged: Some(log_id(1, 30)), entries: vec![log_id(1, 31)] };
    let [a, b] = <[GroupState; 2]>::try_from(states(&log, &[1, 2]).await).unwrap();
    assert_eq!(a, GroupState { entries: vec![log_id(1, 31), log_id(1, 32)], ..expected });
    assert_eq!(b, expected);
}

/// A group that never purges holds every segment since its first entry (the cost of one
/// shared stream); removing it releases them, and it stays gone after a restart.
#[tokio::test]
async fn a_group_that_never_purges_holds_segments_until_it_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open_small(dir.path());
        {
            let mut idle = log.group(9).unwrap();
            append_durably(&mut idle, entries(1, 1..=3)).await;
            idle.save_vote(&Vote::new(1, 9)).await.unwrap();
        }
        let mut busy = log.group(1).unwrap();
        for i in 1..=40 {
            append_durably(&mut busy, vec![entry(1, i)]).await;
            if i % 10 == 0 {
                busy.purge(log_id(1, i)).await.unwrap();
            }
        }
        append_durably(&mut busy, vec![entry(1, 41)]).await;
        assert!(has_segment(dir.path(), 1), "group 9 never purged its entries");
        assert_eq!(log.groups(), vec![1, 9]);

        log.remove_group(9).await.unwrap();
        append_durably(&mut busy, vec![entry(1, 42)]).await;
        assert!(!has_segment(dir.path(), 1), "the removal released the segments group 9 held");
        assert_eq!(log.groups(), vec![1]);
    }
    let log = open_small(dir.path());
    assert_eq!(log.groups(), vec![1]);
    let removed = states(&log, &[9]).await.pop().unwrap();
    assert_eq!(removed, GroupState { vote: None, committed: None, purged: None, entries: vec![] });
}

/// A removed group's id can be used again: it starts empty, and after a restart only what was
/// written after the removal is its log.
#[tokio::test]
async fn a_removed_group_starts_empty_and_its_old_records_are_ignored_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path()).unwrap();
        {
            let mut old = log.group(7).unwrap();
            old.save_vote(&Vote::new(3, 1)).await.unwrap();
            append_durably(&mut old, entries(3, 1..=10)).await;
            old.purge(log_id(3, 2)).await.unwrap();
        }
        log.remove_group(7).await.unwrap();
        let mut new = log.group(7).unwrap();
        assert_eq!(state_of(&mut new).await, GroupState { vote: None, committed: None, purged: None, entries: vec![] });
        append_durably(&mut new, entries(1, 1..=2)).await;
    }
    let log = Log::open(dir.path()).unwrap();
    let state = states(&log, &[7]).await.pop().unwrap();
    assert_eq!(
        state,
        GroupState { vote: None, committed: None, purged: None, entries: vec![log_id(1, 1), log_id(1, 2)] }
    );
}

#[tokio::test]
async fn a_group_has_one_store_at_a_time_and_is_not_removed_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let mut first = log.group(3).unwrap();
    append_durably(&mut first, entries(1, 1..=2)).await;
    assert!(matches!(log.group(3), Err(FileStoreError::GroupInUse { group: 3 })));
    assert!(matches!(log.remove_group(3).await, Err(FileStoreError::GroupInUse { group: 3 })));
    // Other groups are not affected.
    drop(log.group(4).unwrap());
    drop(first);
    let mut again = log.group(3).unwrap();
    assert_eq!(state_of(&mut again).await.entries, vec![log_id(1, 1), log_id(1, 2)]);
    drop(again);
    log.remove_group(3).await.unwrap();
    // A second shared log on the same directory is refused.
    assert!(matches!(Log::open(dir.path()), Err(FileStoreError::Locked { .. })));
}

#[tokio::test]
async fn a_torn_tail_of_the_newest_shared_segment_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path()).unwrap();
        for g in 1..=3 {
            append_durably(&mut log.group(g).unwrap(), entries(1, 1..=4)).await;
        }
    }
    let seg = newest_segment(dir.path());
    let len_before = std::fs::metadata(&seg).unwrap().len();
    OpenOptions::new().append(true).open(&seg).unwrap().write_all(&[90, 0, 0, 0, 1, 2, 3, 4, 5, 6]).unwrap();
    let log = Log::open(dir.path()).unwrap();
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len_before, "the torn frame is cut off");
    for state in states(&log, &[1, 2, 3]).await {
        assert_eq!(state.entries.len(), 4);
    }
}

/// The error of opening the shared log in `dir`, as text (it names the file and the offset).
fn open_error(dir: &Path) -> String {
    match Log::open(dir) {
        Ok(_) => panic!("the shared log in {} opened although it cannot be read back", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn corruption_in_the_middle_of_the_shared_log_is_refused_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path()).unwrap();
        for i in 1..=6 {
            for g in 1..=2 {
                append_durably(&mut log.group(g).unwrap(), vec![entry(1, i)]).await;
            }
        }
    }
    let seg = newest_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let len = bytes.len();
    bytes[len / 2] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let err = open_error(dir.path());
    let name = seg.file_name().unwrap().to_string_lossy().to_string();
    assert!(err.contains(&name) && err.contains("offset"), "{err}");
    assert_eq!(std::fs::read(&seg).unwrap().len(), len, "nothing is cut");
}

/// The two stores never read each other's segments: their magic numbers differ.
#[tokio::test]
async fn the_shared_log_and_the_file_log_store_refuse_each_others_segments() {
    let single = tempfile::tempdir().unwrap();
    {
        let mut store = FileLogStore::<C>::open(single.path()).unwrap();
        let (cb, rx) = IOFlushed::with_receiver();
        store.append(entries(1, 1..=2), cb).await.unwrap();
        rx.await.unwrap().unwrap();
    }
    let err = open_error(single.path());
    assert!(err.contains("offset 0") && err.contains("not a quorate shared log segment"), "{err}");

    let shared = tempfile::tempdir().unwrap();
    {
        let log = Log::open(shared.path()).unwrap();
        append_durably(&mut log.group(1).unwrap(), entries(1, 1..=2)).await;
    }
    let err = FileLogStore::<C>::open(shared.path()).unwrap_err().to_string();
    assert!(err.contains("offset 0") && err.contains("bad magic"), "{err}");
}
