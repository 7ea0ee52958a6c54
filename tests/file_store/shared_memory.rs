//! What an idle group costs in memory: 10,000 groups of one shared log, each open (its store
//! held, as a host holds it) with a committed and a purged id and no entries, measured as the
//! growth of resident memory. Issue #19's goal for the whole library is under 10 KiB per idle
//! group; the log's share must be a small part of it.
//!
//! Other tests of this binary run beside each other, so the measurement runs alone in a child
//! process (this test binary again, asked for this test only); the parent checks and prints
//! its figures (`cargo test --all-features --test file_store idle_groups -- --nocapture`).

use std::process::Command;

use quorate::file_store::SharedLog;
use quorate::{IOFlushed, RaftLogStorage};

use crate::{C, entry, log_id};

const GROUPS: u64 = 10_000;

/// Set in the child process that measures.
const MEASURE: &str = "QUORATE_MEASURE_IDLE_GROUPS";

const TEST: &str = "shared_memory::ten_thousand_idle_groups_cost_a_few_hundred_bytes_each";

/// The resident memory of this process, in bytes (Linux), or `None` where it cannot be read.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[tokio::test]
async fn ten_thousand_idle_groups_cost_a_few_hundred_bytes_each() {
    if std::env::var_os(MEASURE).is_some() {
        return measure().await;
    }
    if resident_bytes().is_none() {
        return; // Not Linux: nothing to measure with.
    }
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe).args([TEST, "--exact", "--nocapture", "--test-threads=1"]).env(MEASURE, "1").output();
    let child = child.unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(child.status.success(), "{stdout}{}", String::from_utf8_lossy(&child.stderr));
    let figures: Vec<u64> = stdout
        .lines()
        .find_map(|l| l.split_once("bytes per idle group: ").map(|(_, figures)| figures))
        .unwrap_or_else(|| panic!("no figures in {stdout}"))
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    let (open, recovered) = (figures[0], figures[1]);
    println!("an idle group of the shared log: {open} bytes open, {recovered} bytes recovered");
    assert!(open < 2048 && recovered < 2048, "{open} bytes per open group, {recovered} per recovered group");
}

/// Print the resident bytes per group of 10,000 open groups, then of 10,000 recovered ones.
async fn measure() {
    let dir = tempfile::tempdir().unwrap();
    let log = SharedLog::<C>::open(dir.path()).unwrap();
    let before = resident_bytes().unwrap();
    let mut stores = Vec::with_capacity(GROUPS as usize);
    for group in 0..GROUPS {
        let mut store = log.group(group).unwrap();
        // As after a snapshot: everything purged, the committed id recorded (both lazy).
        store.purge(log_id(1, 100)).await.unwrap();
        store.save_committed(Some(log_id(1, 100))).await.unwrap();
        // Every 500 groups, a durable append of one of them makes the lot durable (and waits
        // for the writer to take it in, as a host's steady trickle of writes would).
        if group % 500 == 0 {
            let (cb, rx) = IOFlushed::with_receiver();
            store.append(vec![entry(1, 101)], cb).await.unwrap();
            rx.await.unwrap().unwrap();
        }
        stores.push(store);
    }
    let (cb, rx) = IOFlushed::with_receiver();
    stores[0].append(vec![entry(1, 102)], cb).await.unwrap();
    rx.await.unwrap().unwrap();
    let open = resident_bytes().unwrap().saturating_sub(before) / GROUPS;

    // After a restart every group is recovered, without its store taken yet. Measured on a
    // copy while the first log is still open, so that no memory it freed is reused.
    let copy = tempfile::tempdir().unwrap();
    for file in std::fs::read_dir(dir.path()).unwrap() {
        let path = file.unwrap().path();
        std::fs::copy(&path, copy.path().join(path.file_name().unwrap())).unwrap();
    }
    let before = resident_bytes().unwrap();
    let restarted = SharedLog::<C>::open(copy.path()).unwrap();
    assert_eq!(restarted.groups().len() as u64, GROUPS);
    let recovered = resident_bytes().unwrap().saturating_sub(before) / GROUPS;
    println!("bytes per idle group: {open} {recovered}");
    drop((stores, log, restarted));
}
