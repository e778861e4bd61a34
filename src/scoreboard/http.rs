//! Request metrics of the WSGI workers: a third shared region, one *row*
//! of atomic counters per worker process, written by the worker (one
//! relaxed atomic add per figure, no syscall, no lock) and summed by the
//! master's probe thread at scrape time.
//!
//! Why rows per process, handed out by the master: counters must stay
//! monotonic across worker recycles, and a worker SIGKILLed mid-request
//! must not leave a request "in flight" forever. So a row is never zeroed
//! except for its in-flight gauge, and only when the master hands the row
//! to a new process ([`HttpRegion::claim`], before the spawn), at which
//! point no live process uses it: the master gives each worker process
//! (current worker, replacement, retiring one) a row no other live
//! process holds, so an old and a new worker of the same slot alive
//! together (replacement first) write different rows. The exported
//! in-flight figure sums only the rows of live processes; counters and
//! histograms sum every row ever handed out, so they keep what dead
//! workers counted.
//!
//! Every worker can write every cell (the region is shared read-write):
//! the master reads each value as an untrusted number — negative reads as
//! 0, sums saturate, no value is ever an index or a length. Sealed
//! against resizing, as the other regions.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::sys::{SharedRegion, context};

/// Upper bounds of the histogram buckets, in seconds (then `+Inf`):
/// from a fast view (5 ms) to a slow report (10 s), as the Prometheus
/// client libraries' defaults.
pub const BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// The same bounds in microseconds, for the worker's comparison.
const BUCKETS_US: [u64; 11] =
    [5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000];
/// Cells per histogram: the buckets and `+Inf` (not cumulative).
const CELLS: usize = BUCKETS.len() + 1;
/// Status classes counted: 1xx..5xx, and any other status (600..999).
pub const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

// Word offsets in a row.
const IN_FLIGHT: usize = 0;
const CLASS: usize = 1;
const DURATION: usize = CLASS + CLASSES.len();
const DURATION_SUM: usize = DURATION + CELLS;
const QUEUE: usize = DURATION_SUM + 1;
const QUEUE_SUM: usize = QUEUE + CELLS;
/// Words per row: the figures above, padded to whole 64-byte cache lines
/// (workers on different rows never share a line).
pub const ROW_WORDS: usize = 40;
/// Rows: twice the worker slots, room for every slot's worker and a
/// replacement (and retiring workers, which are fewer) at once.
pub const ROWS: u32 = 2 * super::MAX_SLOTS as u32;
/// Words in the region.
pub const WORDS: usize = ROWS as usize * ROW_WORDS;

const _: () = assert!(QUEUE_SUM < ROW_WORDS && ROW_WORDS % 8 == 0);

/// The master's side: the region, writable (to zero a claimed row's gauge).
pub struct HttpRegion {
    region: Arc<SharedRegion>,
}

impl HttpRegion {
    pub fn create() -> Result<HttpRegion, crate::sys::SysError> {
        let region = SharedRegion::create("podmaster-http", WORDS, false).map_err(context("scoreboard: http"))?;
        Ok(HttpRegion { region: Arc::new(region) })
    }

    pub fn fd(&self) -> Option<i32> {
        self.region.fd()
    }

    /// Row `row` goes to a new process: its in-flight gauge restarts at 0
    /// (a process killed mid-request left it high). Counters stay.
    pub fn claim(&self, row: u32) {
        if row < ROWS {
            self.region.words()[row as usize * ROW_WORDS + IN_FLIGHT].store(0, Ordering::Relaxed);
        }
    }

    pub fn reader(&self) -> HttpReader {
        HttpReader { region: Arc::clone(&self.region) }
    }
}

/// A histogram as read: per-bucket counts (not cumulative, `+Inf` last)
/// and the sum of the observations in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Histogram {
    pub buckets: [u64; CELLS],
    pub sum_us: u64,
}

impl Histogram {
    pub fn count(&self) -> u64 {
        self.buckets.iter().fold(0u64, |a, b| a.saturating_add(*b))
    }

    /// (upper bound, count) pairs for an encoder, `+Inf` last.
    pub fn pairs(&self) -> Vec<(f64, u64)> {
        BUCKETS.iter().copied().chain([f64::INFINITY]).zip(self.buckets).collect()
    }

    fn add_row(&mut self, w: &[AtomicI64], cells: usize, sum: usize) {
        for (i, b) in self.buckets.iter_mut().enumerate() {
            *b = b.saturating_add(untrusted(&w[cells + i]));
        }
        self.sum_us = self.sum_us.saturating_add(untrusted(&w[sum]));
    }
}

/// Everything the probe thread exports, summed over rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpTotals {
    /// Requests answered by status class, in [`CLASSES`] order.
    pub classes: [u64; 6],
    pub duration: Histogram,
    /// Time requests waited before the app was called (TCP sockets only).
    pub queue: Histogram,
    /// Requests in flight per worker id (live processes only).
    pub in_flight: Vec<(u32, u64)>,
}

/// A cell's value as the master trusts it: a count, never negative.
fn untrusted(cell: &AtomicI64) -> u64 {
    cell.load(Ordering::Relaxed).max(0) as u64
}

/// The probe thread's read-only use of the region.
#[derive(Clone)]
pub struct HttpReader {
    region: Arc<SharedRegion>,
}

impl std::fmt::Debug for HttpReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpReader")
    }
}

impl HttpReader {
    /// Sums rows `0..used` (every row handed out so far) and the in-flight
    /// gauges of `live`: (worker id, row) of each live worker process.
    pub fn read(&self, used: u32, live: &[(u32, u32)]) -> HttpTotals {
        let w = self.region.words();
        let mut t = HttpTotals::default();
        for row in 0..used.min(ROWS) as usize {
            let r = &w[row * ROW_WORDS..(row + 1) * ROW_WORDS];
            for (i, c) in t.classes.iter_mut().enumerate() {
                *c = c.saturating_add(untrusted(&r[CLASS + i]));
            }
            t.duration.add_row(r, DURATION, DURATION_SUM);
            t.queue.add_row(r, QUEUE, QUEUE_SUM);
        }
        for &(worker, row) in live.iter().filter(|(_, row)| *row < ROWS) {
            let v = untrusted(&w[row as usize * ROW_WORDS + IN_FLIGHT]);
            match t.in_flight.iter_mut().find(|(id, _)| *id == worker) {
                Some((_, n)) => *n = n.saturating_add(v),
                None => t.in_flight.push((worker, v)),
            }
        }
        t.in_flight.sort_unstable();
        t
    }
}

/// A worker's row: where its requests are counted.
pub struct HttpRow {
    region: SharedRegion,
    base: usize,
}

impl HttpRow {
    /// Maps the region at `fd` (and closes the fd); `row` is the one the
    /// master handed this process (None, or out of range: an unmapped
    /// region, and no row).
    pub fn adopt(fd: i32, row: Option<u32>) -> Result<Option<HttpRow>, crate::sys::SysError> {
        let region = SharedRegion::adopt(fd, WORDS, true).map_err(context("scoreboard: http"))?;
        Ok(row.filter(|r| *r < ROWS).map(|r| HttpRow { region, base: r as usize * ROW_WORDS }))
    }

    fn cell(&self, offset: usize) -> &AtomicI64 {
        &self.region.words()[self.base + offset]
    }

    /// A request entered the app.
    #[inline]
    pub fn begin(&self) {
        self.cell(IN_FLIGHT).fetch_add(1, Ordering::Relaxed);
    }

    /// A request left it (answered or abandoned).
    #[inline]
    pub fn end(&self) {
        self.cell(IN_FLIGHT).fetch_sub(1, Ordering::Relaxed);
    }

    /// An answered request: its status class and duration.
    pub fn answered(&self, status: u16, took: Duration) {
        let class = match status {
            100..=599 => usize::from(status / 100) - 1,
            _ => CLASSES.len() - 1,
        };
        self.cell(CLASS + class).fetch_add(1, Ordering::Relaxed);
        self.observe(DURATION, DURATION_SUM, took);
    }

    /// How long a request waited before the app was called.
    pub fn queued(&self, wait: Duration) {
        self.observe(QUEUE, QUEUE_SUM, wait);
    }

    fn observe(&self, cells: usize, sum: usize, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKETS_US.iter().position(|b| us <= *b).unwrap_or(BUCKETS_US.len());
        self.cell(cells + i).fetch_add(1, Ordering::Relaxed);
        self.cell(sum).fetch_add(i64::try_from(us).unwrap_or(i64::MAX), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worker's view of the master's region, through a dup of its fd.
    fn worker_row(region: &HttpRegion, row: u32) -> HttpRow {
        // SAFETY: the region's own fd, borrowed while it lives.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(region.fd().unwrap()) };
        let dup = std::os::fd::IntoRawFd::into_raw_fd(nix::unistd::dup(fd).unwrap());
        HttpRow::adopt(dup, Some(row)).unwrap().unwrap()
    }

    #[test]
    fn rows_sum_and_only_live_rows_count_in_flight() {
        let region = HttpRegion::create().unwrap();
        let (a, b) = (worker_row(&region, 0), worker_row(&region, 1));
        for (status, ms) in [(200, 1), (200, 7), (404, 30), (500, 2000), (302, 20_000), (999, 1)] {
            a.answered(status, Duration::from_millis(ms));
        }
        b.answered(204, Duration::from_micros(5000));
        a.begin();
        b.begin();
        b.begin();
        b.queued(Duration::from_millis(120));
        let t = region.reader().read(2, &[(1, 0), (1, 1)]);
        assert_eq!(t.classes, [0, 3, 1, 1, 1, 1]);
        assert_eq!(t.duration.count(), 7);
        assert_eq!(t.duration.buckets, [3, 1, 0, 1, 0, 0, 0, 0, 1, 0, 0, 1]);
        assert_eq!(t.duration.sum_us, 1000 + 7000 + 30_000 + 2_000_000 + 20_000_000 + 1000 + 5000);
        assert_eq!((t.queue.count(), t.queue.sum_us), (1, 120_000));
        assert_eq!(t.in_flight, vec![(1, 3)]);
        // Row 1's process died mid-request: not live, not in flight; its counts stay.
        let t = region.reader().read(2, &[(1, 0)]);
        assert_eq!((t.in_flight.clone(), t.classes[1]), (vec![(1, 1)], 3));
        // Row 1 goes to a new process: the gauge restarts, the counters do not.
        region.claim(1);
        let t = region.reader().read(2, &[(1, 0), (2, 1)]);
        assert_eq!(t.in_flight, vec![(1, 1), (2, 0)]);
        assert_eq!(t.duration.count(), 7);
    }

    #[test]
    fn hostile_values_read_as_bounded_counts() {
        let region = HttpRegion::create().unwrap();
        let a = worker_row(&region, 0);
        let b = worker_row(&region, 1);
        // A worker writing nonsense into its own and another's cells.
        a.cell(CLASS + 1).store(-5, Ordering::Relaxed);
        a.cell(IN_FLIGHT).store(i64::MIN, Ordering::Relaxed);
        a.cell(DURATION).store(i64::MAX, Ordering::Relaxed);
        a.cell(DURATION + 1).store(i64::MAX, Ordering::Relaxed);
        b.cell(DURATION).store(i64::MAX, Ordering::Relaxed);
        for row in [&a, &b] {
            row.cell(DURATION_SUM).store(i64::MAX, Ordering::Relaxed);
        }
        worker_row(&region, 2).cell(DURATION_SUM).store(i64::MAX, Ordering::Relaxed);
        let t = region.reader().read(u32::MAX, &[(1, 0), (2, u32::MAX), (3, ROWS)]);
        assert_eq!(t.classes[1], 0);
        assert_eq!(t.in_flight, vec![(1, 0)]);
        assert_eq!(t.duration.count(), u64::MAX, "saturates");
        assert_eq!(t.duration.sum_us, u64::MAX, "saturates");
    }

    #[test]
    fn out_of_range_rows_are_no_rows() {
        let region = HttpRegion::create().unwrap();
        // SAFETY: the region's own fd, borrowed while it lives.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(region.fd().unwrap()) };
        for row in [None, Some(ROWS), Some(u32::MAX)] {
            let dup = std::os::fd::IntoRawFd::into_raw_fd(nix::unistd::dup(fd).unwrap());
            assert!(HttpRow::adopt(dup, row).unwrap().is_none(), "{row:?}");
        }
        region.claim(u32::MAX);
    }
}
