//! A counting global allocator: [`System`] plus three relaxed atomic counters (bytes live, the
//! peak of bytes live, allocations made), so the bench can watch the heap while a cluster runs.
//!
//! Only the `cluster-bench` binary installs it (`#[global_allocator]`); the library and its
//! tests run on the plain system allocator. The counters are process-wide: they see both
//! libraries, the harness and tokio. Each allocation costs two relaxed read-modify-writes on
//! one shared cache line, plus a load of the peak that rarely turns into a third; see
//! [`overhead_ns`] and `benches/README.md` for what that costs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

/// [`System`] with counters. Install it with `#[global_allocator]`.
pub struct CountingAlloc;

/// Whether allocations are counted. Cleared once at start-up by `--no-alloc-count` (to measure
/// what counting costs); never set again, so counts are never mixed with uncounted blocks.
static ENABLED: AtomicBool = AtomicBool::new(true);
/// Bytes allocated and not yet freed.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The most bytes live at once since the last [`reset_peak`].
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Allocations made (including reallocations), ever.
static COUNT: AtomicUsize = AtomicUsize::new(0);

impl CountingAlloc {
    #[inline]
    fn grew(size: usize) {
        if ENABLED.load(Ordering::Relaxed) {
            COUNT.fetch_add(1, Ordering::Relaxed);
            let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
            // A plain load first: the peak moves rarely, so the read-modify-write is rare too.
            if live > PEAK.load(Ordering::Relaxed) {
                PEAK.fetch_max(live, Ordering::Relaxed);
            }
        }
    }

    #[inline]
    fn shrank(size: usize) {
        if ENABLED.load(Ordering::Relaxed) {
            LIVE.fetch_sub(size, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call is forwarded to `System` with the caller's arguments unchanged; the
// counters only observe sizes and never touch the memory.
unsafe impl GlobalAlloc for CountingAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            Self::grew(layout.size());
        }
        ptr
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            Self::grew(layout.size());
        }
        ptr
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; `ptr` was allocated by `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) };
        Self::shrank(layout.size());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            // The old block is gone and a new one of `new_size` is live.
            Self::shrank(layout.size());
            Self::grew(new_size);
        }
        new
    }
}

/// Stop counting, for the rest of the process. Call it first thing in `main`, before the
/// runtimes start, to measure what counting costs; [`live_bytes`] means nothing afterwards.
pub fn disable() {
    ENABLED.store(false, Ordering::Relaxed);
}

/// Whether allocations are being counted.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Bytes allocated and not yet freed, by the whole process.
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// The most bytes live at once since the last [`reset_peak`].
pub fn peak_bytes() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Start a new peak from what is live now, and return the previous peak.
pub fn reset_peak() -> usize {
    PEAK.swap(LIVE.load(Ordering::Relaxed), Ordering::Relaxed)
}

/// Allocations made by the process so far.
pub fn allocations() -> usize {
    COUNT.load(Ordering::Relaxed)
}

/// What one allocate-and-free pair of `size` bytes costs, in nanoseconds, through the counting
/// allocator and through [`System`] directly, measured single-threaded over `pairs` pairs. It
/// calls both allocators directly, so it works whether or not one is installed; an
/// uncontended counter is the best case (several threads allocating at once share the
/// counters' cache line).
pub fn overhead_ns(size: usize, pairs: u32) -> (f64, f64) {
    let Ok(layout) = Layout::from_size_align(size.max(1), 8) else { return (0.0, 0.0) };
    let time = |alloc: &dyn GlobalAlloc| {
        let t0 = Instant::now();
        for _ in 0..pairs {
            // SAFETY: a non-zero-sized layout; the block is freed with the same layout by the
            // allocator that made it, and never read.
            unsafe {
                let p = alloc.alloc(layout);
                std::hint::black_box(p);
                if !p.is_null() {
                    alloc.dealloc(p, layout);
                }
            }
        }
        t0.elapsed().as_nanos() as f64 / f64::from(pairs.max(1))
    };
    // Warm both paths up once, then measure each twice, interleaved, and keep the faster.
    let _ = (time(&CountingAlloc), time(&System));
    let counted = time(&CountingAlloc).min(time(&CountingAlloc));
    let plain = time(&System).min(time(&System));
    (counted, plain)
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout};

    use super::{CountingAlloc, allocations, live_bytes, peak_bytes};

    #[test]
    fn a_block_is_counted_while_live() {
        // The test harness does not install the allocator, so only calls made here count; other
        // tests of this binary could run concurrently only through this allocator, and none do.
        let layout = Layout::from_size_align(4096, 8).expect("valid layout");
        let (live0, count0) = (live_bytes(), allocations());
        // SAFETY: allocated and freed with the same layout, never read.
        unsafe {
            let p = CountingAlloc.alloc(layout);
            assert!(!p.is_null());
            assert_eq!(live_bytes(), live0 + 4096);
            assert!(peak_bytes() >= live0 + 4096);
            assert_eq!(allocations(), count0 + 1);
            let p = CountingAlloc.realloc(p, layout, 8192);
            assert_eq!(live_bytes(), live0 + 8192);
            CountingAlloc.dealloc(p, Layout::from_size_align(8192, 8).expect("valid layout"));
        }
        assert_eq!(live_bytes(), live0);
    }
}
