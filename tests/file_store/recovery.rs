//! The file log store through quorate's storage traits: what survives a reopen, torn tails,
//! truncation and purge replay, and what recovery refuses (naming the file and offset).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use quorate::file_store::{DataDirLock, FileLogStore, FileStoreError, FileStoreOptions};
use quorate::{Entry, IOFlushed, LogId, RaftLogReader, RaftLogStorage, Vote};

use crate::{C, entry, log_id};

type LogStore = FileLogStore<C>;

async fn append_durably(store: &mut LogStore, entries: Vec<Entry<C>>) {
    let (cb, rx) = IOFlushed::with_receiver();
    store.append(entries, cb).await.unwrap();
    rx.await.unwrap().unwrap();
}

async fn all_entries(store: &mut LogStore) -> Vec<LogId<C>> {
    let mut reader = store.get_log_reader().await;
    reader.try_get_log_entries(0..u64::MAX).await.unwrap().into_iter().map(|e| e.log_id).collect()
}

fn last_segment(dir: &Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    segs.sort();
    segs.pop().unwrap()
}

fn small_segments(dir: &Path) -> LogStore {
    LogStore::open_with(dir, FileStoreOptions::default().segment_bytes(256)).unwrap()
}
#[tokio::test]
async fn durable_appends_and_vote_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let vote = Vote::new(3, 2);
    {
        let mut store = LogStore::open(dir.path()).unwrap();
        store.save_vote(&vote).await.unwrap();
        append_durably(&mut store, (1..=10).map(|i| entry(1, i)).collect()).await;
        store.save_committed(Some(log_id(1, 7))).await.unwrap();
        append_durably(&mut store, vec![entry(1, 11)]).await;
    }
    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(store.read_vote().await.unwrap(), Some(vote));
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 7)));
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(1, 11)));
    assert_eq!(all_entries(&mut store).await, (1..=11).map(|i| log_id(1, i)).collect::<Vec<_>>());
}

#[tokio::test]
async fn torn_tail_is_truncated_on_recovery() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = LogStore::open(dir.path()).unwrap();
        append_durably(&mut store, (1..=5).map(|i| entry(1, i)).collect()).await;
    }
    // A crash in the middle of a write: a frame header promising more bytes than follow.
    let seg = last_segment(dir.path());
    let len_before = std::fs::metadata(&seg).unwrap().len();
    OpenOptions::new().append(true).open(&seg).unwrap().write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9]).unwrap();

    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(all_entries(&mut store).await.len(), 5);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len_before, "the torn frame is cut off");
    // The log continues normally after recovery.
    append_durably(&mut store, vec![entry(1, 6)]).await;
    drop(store);
    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(store.get_log_state().await.unwrap().last_log_id, Some(log_id(1, 6)));
}

#[tokio::test]
async fn truncate_and_purge_are_replayed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = LogStore::open(dir.path()).unwrap();
        append_durably(&mut store, (1..=10).map(|i| entry(1, i)).collect()).await;
        // A new leader overwrites 8.. with its own entries.
        store.truncate(log_id(1, 8)).await.unwrap();
        append_durably(&mut store, (8..=9).map(|i| entry(2, i)).collect()).await;
        store.purge(log_id(1, 3)).await.unwrap();
        // A purge is lazy: the next durable append makes it durable.
        append_durably(&mut store, vec![entry(2, 10)]).await;
    }
    let mut store = LogStore::open(dir.path()).unwrap();
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(2, 10)));
    let expected: Vec<_> = (4..=7).map(|i| log_id(1, i)).chain((8..=10).map(|i| log_id(2, i))).collect();
    assert_eq!(all_entries(&mut store).await, expected);
}

#[tokio::test]
async fn purging_everything_keeps_the_purged_id() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = LogStore::open(dir.path()).unwrap();
        append_durably(&mut store, (1..=4).map(|i| entry(1, i)).collect()).await;
        // As after installing a snapshot ahead of the log.
        store.purge(log_id(2, 20)).await.unwrap();
        append_durably(&mut store, vec![entry(2, 21)]).await;
    }
    let mut store = LogStore::open(dir.path()).unwrap();
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 20)));
    assert_eq!(all_entries(&mut store).await, vec![log_id(2, 21)]);
}

fn segment_count(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[tokio::test]
async fn purged_segments_are_deleted_and_the_rest_recovers() {
    let dir = tempfile::tempdir().unwrap();
    {
        // Tiny segments: a new one every few appends.
        let mut store = small_segments(dir.path());
        for i in 1..=100 {
            append_durably(&mut store, vec![entry(1, i)]).await;
            if i == 50 {
                // Segments started after this carry `purged = 40` in their header, while the
                // oldest one kept at the end starts well past 41.
                store.purge(log_id(1, 40)).await.unwrap();
            }
        }
        assert!(segment_count(dir.path()) > 5, "{} segments", segment_count(dir.path()));
        // Purge most of it; the purge is made durable by the next append, then old segments go.
        store.purge(log_id(1, 90)).await.unwrap();
        append_durably(&mut store, vec![entry(1, 101)]).await;
        append_durably(&mut store, vec![entry(1, 102)]).await;
        assert!(segment_count(dir.path()) <= 4, "{} segments left", segment_count(dir.path()));
    }
    let mut store = small_segments(dir.path());
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 90)));
    assert_eq!(all_entries(&mut store).await, (91..=102).map(|i| log_id(1, i)).collect::<Vec<_>>());
    // The recovered log keeps going, and the vote written into a later segment survives too.
    store.save_vote(&Vote::new(2, 1)).await.unwrap();
    append_durably(&mut store, vec![entry(2, 103)]).await;
    drop(store);
    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
    assert_eq!(store.get_log_state().await.unwrap().last_log_id, Some(log_id(2, 103)));
}

/// The error of opening the log in `dir`, as text (it must name the file and the offset).
fn open_error(dir: &Path) -> String {
    match LogStore::open(dir) {
        Ok(_) => panic!("the log in {} opened although it cannot be read back as written", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn a_segment_in_an_unknown_format_refuses_to_start_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    // What another program, or another version of quorate, might have left: not our magic.
    let seg = dir.path().join("seg-0000000001.log");
    std::fs::write(&seg, b"\x05\x00\x00\x00\x00\x00\x00\x00hello, not a quorate log").unwrap();
    let before = std::fs::read(&seg).unwrap();
    let err = open_error(dir.path());
    assert!(err.contains("seg-0000000001.log") && err.contains("offset 0"), "{err}");
    assert_eq!(std::fs::read(&seg).unwrap(), before, "nothing is cut from a segment that is not ours");
}

#[tokio::test]
async fn a_newer_format_version_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = LogStore::open(dir.path()).unwrap();
        append_durably(&mut store, vec![entry(1, 1)]).await;
    }
    let seg = last_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[8] = 99; // the version, after the 8-byte magic
    std::fs::write(&seg, &bytes).unwrap();
    let err = open_error(dir.path());
    assert!(err.contains("offset 8") && err.contains("version 99"), "{err}");
}

#[tokio::test]
async fn a_bad_checksum_in_the_middle_of_the_newest_segment_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = LogStore::open(dir.path()).unwrap();
        for i in 1..=5 {
            append_durably(&mut store, vec![entry(1, i)]).await;
        }
    }
    let seg = last_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let len = bytes.len();
    // Flip a byte in the middle of the file: a record followed by valid ones is not a torn tail.
    bytes[len / 2] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let err = open_error(dir.path());
    assert!(err.contains(&seg.file_name().unwrap().to_string_lossy().to_string()) && err.contains("offset"), "{err}");
    assert_eq!(std::fs::read(&seg).unwrap().len(), len, "nothing is cut");
}

#[tokio::test]
async fn a_missing_segment_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = small_segments(dir.path());
        for i in 1..=30 {
            append_durably(&mut store, vec![entry(1, i)]).await;
        }
    }
    let mut segs: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    segs.sort();
    assert!(segs.len() >= 3);
    std::fs::remove_file(&segs[1]).unwrap();
    let err = open_error(dir.path());
    assert!(err.contains(&segs[1].file_name().unwrap().to_string_lossy().to_string()), "{err}");
}

#[tokio::test]
async fn zeros_after_the_last_record_are_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = LogStore::open(dir.path()).unwrap();
        append_durably(&mut store, (1..=3).map(|i| entry(1, i)).collect()).await;
    }
    // A file extended by a crash but whose data never reached the disk reads back as zeros.
    let seg = last_segment(dir.path());
    let len_before = std::fs::metadata(&seg).unwrap().len();
    OpenOptions::new().append(true).open(&seg).unwrap().write_all(&[0; 4096]).unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(all_entries(&mut store).await.len(), 3);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len_before);
}

#[test]
fn a_directory_is_locked_by_one_store_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let first = LogStore::open(dir.path()).unwrap();
    let err = LogStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, FileStoreError::Locked { .. }), "{err}");
    assert!(err.to_string().contains(&dir.path().display().to_string()), "{err}");
    let err = DataDirLock::acquire(dir.path()).unwrap_err();
    assert!(matches!(err, FileStoreError::Locked { .. }), "{err}");
    // Dropping the store stops its writer and frees the directory at once.
    drop(first);
    LogStore::open(dir.path()).unwrap();
}

#[tokio::test]
async fn garbage_with_a_huge_length_field_in_an_older_segment_is_refused_not_allocated() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = LogStore::open(dir.path()).unwrap();
        append_durably(&mut store, vec![entry(1, 1)]).await;
    }
    let first = last_segment(dir.path());
    // The next start opens a newer segment: the first one is no longer the newest.
    drop(LogStore::open(dir.path()).unwrap());
    // A frame whose length field says 4 GiB, in the older segment.
    OpenOptions::new().append(true).open(&first).unwrap().write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5]).unwrap();
    let err = open_error(dir.path());
    assert!(err.contains(&first.file_name().unwrap().to_string_lossy().to_string()) && err.contains("offset"), "{err}");
}
