//! The scoreboard: two shared-memory regions the master creates and every
//! Python worker maps (the fds follow the sockets at 3+n, 4+n; the worker
//! maps them and closes the fds).
//!
//! - The *board* (master writes, workers map read-only): the draining flag
//!   and one record per worker slot (pid, accepting, respawn count, last
//!   spawn, generation), for `uwsgi.workers()` and `uwsgi.is_draining()`.
//!   Sealed against resizing and against writes through any mapping but the
//!   master's own, so no worker can set the draining flag others read. The
//!   records are published under a sequence lock: a reader never acts on a
//!   record torn by a concurrent publish.
//! - The *metrics* (workers write with atomic adds/stores, the master maps
//!   read-only): one row of `MAX_METRICS` counters per worker slot, plus
//!   row 0 holding the declared initial values. `uwsgi.metric_inc` is one
//!   atomic add: no syscall, no lock. The exported value of a metric is
//!   the sum of its row-0 value and every worker's. Sealed against
//!   resizing; since any worker can write any cell, the master treats every
//!   value as an untrusted number (never an index or a length).
//! - The *request metrics* of WSGI workers ([`http`], the fd at +2): one
//!   row of counters per worker process, handed out by the master.

use std::sync::atomic::Ordering;

// Declared by the configuration; re-exported for the worker side.
pub use crate::config::metric::{MAX_METRICS, MetricDecl};
use crate::sys::{SharedRegion, context};

pub mod http;

/// Worker slots the regions have room for (`processes` is capped at it).
pub const MAX_SLOTS: usize = 1024;

/// Header words: magic, draining flag, slot count, sequence number.
const BOARD_HEADER: usize = 4;
const SEQ: usize = 3;
/// Attempts a reader makes to get a consistent copy of the slot records.
const READ_TRIES: usize = 1000;
const SLOT_WORDS: usize = 6;
/// Board words: header (magic, draining, slots) + the slot records.
pub const BOARD_WORDS: usize = BOARD_HEADER + MAX_SLOTS * SLOT_WORDS;
/// Metrics words: row 0 (initial values) + one row per slot.
pub const METRIC_WORDS: usize = (MAX_SLOTS + 1) * MAX_METRICS;
const MAGIC: i64 = 0x706f_646d_6173_7472; // "podmastr"

/// One worker slot as recorded on the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotRecord {
    pub id: u32,
    pub pid: i32,
    pub accepting: bool,
    pub respawn_count: u64,
    pub last_spawn: u64,
    pub generation: u64,
}

/// The master's side: owns both regions.
pub struct Scoreboard {
    board: SharedRegion,
    metrics: std::sync::Arc<SharedRegion>,
    pub decls: Vec<MetricDecl>,
    /// Request metrics of the WSGI workers.
    pub http: http::HttpRegion,
}

impl Scoreboard {
    pub fn create(decls: Vec<MetricDecl>) -> Result<Scoreboard, crate::sys::SysError> {
        let board = SharedRegion::create("podmaster-board", BOARD_WORDS, true).map_err(context("scoreboard: board"))?;
        let metrics =
            SharedRegion::create("podmaster-metrics", METRIC_WORDS, false).map_err(context("scoreboard: metrics"))?;
        for (i, d) in decls.iter().enumerate() {
            metrics.words()[i].store(d.initial, Ordering::Relaxed);
        }
        // From here on the master only reads what workers write.
        metrics.make_read_only().map_err(context("scoreboard: mprotect"))?;
        board.words()[0].store(MAGIC, Ordering::Relaxed);
        let http = http::HttpRegion::create()?;
        Ok(Scoreboard { board, metrics: std::sync::Arc::new(metrics), decls, http })
    }

    /// The three fds to hand to a worker, in order (board, metrics, http).
    pub fn fds(&self) -> Vec<i32> {
        self.board.fd().into_iter().chain(self.metrics.fd()).chain(self.http.fd()).collect()
    }

    pub fn set_draining(&self, on: bool) {
        self.board.words()[1].store(i64::from(on), Ordering::Release);
    }

    /// Rewrites the slot records (the master calls this when it publishes):
    /// the sequence number is odd while records change, even when done.
    pub fn publish(&self, slots: &[SlotRecord]) {
        let w = self.board.words();
        let seq = w[SEQ].load(Ordering::Relaxed);
        w[SEQ].store(seq.wrapping_add(1), Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Release);
        let n = slots.len().min(MAX_SLOTS);
        for (i, s) in slots.iter().take(n).enumerate() {
            let base = BOARD_HEADER + i * SLOT_WORDS;
            w[base].store(i64::from(s.id), Ordering::Relaxed);
            w[base + 1].store(i64::from(s.pid), Ordering::Relaxed);
            w[base + 2].store(i64::from(s.accepting), Ordering::Relaxed);
            w[base + 3].store(s.respawn_count as i64, Ordering::Relaxed);
            w[base + 4].store(s.last_spawn as i64, Ordering::Relaxed);
            w[base + 5].store(s.generation as i64, Ordering::Relaxed);
        }
        w[2].store(n as i64, Ordering::Relaxed);
        w[SEQ].store(seq.wrapping_add(2), Ordering::Release);
    }

    /// A read-only handle on the metrics, for the probe thread.
    pub fn metrics_reader(&self) -> MetricsReader {
        MetricsReader { region: self.metrics.clone(), decls: self.decls.clone(), http: self.http.reader() }
    }
}

/// Reads app metrics (probe thread): totals and per-worker values; and
/// the request metrics.
#[derive(Clone)]
pub struct MetricsReader {
    region: std::sync::Arc<SharedRegion>,
    pub decls: Vec<MetricDecl>,
    pub http: http::HttpReader,
}

impl std::fmt::Debug for MetricsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsReader").field("decls", &self.decls).finish()
    }
}

impl MetricsReader {
    /// (total, per worker id) for metric `i`, for the given worker ids.
    pub fn values(&self, i: usize, workers: &[u32]) -> (i64, Vec<(u32, i64)>) {
        let w = self.region.words();
        let mut total = w[i].load(Ordering::Relaxed);
        let mut per = Vec::with_capacity(workers.len());
        for id in workers.iter().copied().filter(|id| (*id as usize) <= MAX_SLOTS) {
            let v = w[id as usize * MAX_METRICS + i].load(Ordering::Relaxed);
            total = total.wrapping_add(v);
            per.push((id, v));
        }
        (total, per)
    }
}

/// A worker's side: the board read-only, its own metrics row writable,
/// and its request-metrics row (if the master gave it one).
pub struct WorkerBoard {
    board: SharedRegion,
    metrics: SharedRegion,
    row: usize,
    index: std::collections::HashMap<String, usize>,
    pub http: Option<http::HttpRow>,
}

/// What a metric update does.
#[derive(Debug, Clone, Copy)]
pub enum Update {
    Add(i64),
    Set(i64),
    Max(i64),
    Min(i64),
}

impl WorkerBoard {
    /// Maps the regions passed at `board_fd`, `board_fd + 1`, `board_fd + 2`
    /// (and closes them); `http_row` is this process's request-metrics row.
    pub fn adopt(
        board_fd: i32,
        worker_id: u32,
        decls: &[MetricDecl],
        http_row: Option<u32>,
    ) -> Result<WorkerBoard, crate::sys::SysError> {
        let board = SharedRegion::adopt(board_fd, BOARD_WORDS, false).map_err(context("scoreboard: board"))?;
        let metrics = SharedRegion::adopt(board_fd + 1, METRIC_WORDS, true).map_err(context("scoreboard: metrics"))?;
        let http = http::HttpRow::adopt(board_fd + 2, http_row)?;
        if board.words()[0].load(Ordering::Relaxed) != MAGIC {
            let wrong = std::io::Error::new(std::io::ErrorKind::InvalidData, "not a podmaster board");
            return Err(context("scoreboard")(wrong));
        }
        let index = decls.iter().enumerate().map(|(i, d)| (d.name.clone(), i)).collect();
        Ok(WorkerBoard { board, metrics, row: (worker_id as usize).min(MAX_SLOTS) * MAX_METRICS, index, http })
    }

    pub fn draining(&self) -> bool {
        self.board.words()[1].load(Ordering::Acquire) != 0
    }

    /// A consistent copy of the slot records (empty if the master kept
    /// publishing through every attempt, which it never does for long).
    pub fn slots(&self) -> Vec<SlotRecord> {
        let w = self.board.words();
        for _ in 0..READ_TRIES {
            let before = w[SEQ].load(Ordering::Acquire);
            if before % 2 == 0 {
                let records = self.read_slots();
                std::sync::atomic::fence(Ordering::Acquire);
                if w[SEQ].load(Ordering::Relaxed) == before {
                    return records;
                }
            }
            std::hint::spin_loop();
        }
        Vec::new()
    }

    fn read_slots(&self) -> Vec<SlotRecord> {
        let w = self.board.words();
        let n = (w[2].load(Ordering::Relaxed).clamp(0, MAX_SLOTS as i64)) as usize;
        (0..n)
            .map(|i| {
                let b = BOARD_HEADER + i * SLOT_WORDS;
                SlotRecord {
                    id: w[b].load(Ordering::Relaxed) as u32,
                    pid: w[b + 1].load(Ordering::Relaxed) as i32,
                    accepting: w[b + 2].load(Ordering::Relaxed) != 0,
                    respawn_count: w[b + 3].load(Ordering::Relaxed) as u64,
                    last_spawn: w[b + 4].load(Ordering::Relaxed) as u64,
                    generation: w[b + 5].load(Ordering::Relaxed) as u64,
                }
            })
            .collect()
    }

    /// One atomic operation on this worker's cell; false for an unknown name.
    #[inline]
    pub fn update(&self, name: &str, op: Update) -> bool {
        let Some(&i) = self.index.get(name) else { return false };
        let cell = &self.metrics.words()[self.row + i];
        match op {
            Update::Add(v) => cell.fetch_add(v, Ordering::Relaxed),
            Update::Set(v) => cell.swap(v, Ordering::Relaxed),
            Update::Max(v) => cell.fetch_max(v, Ordering::Relaxed),
            Update::Min(v) => cell.fetch_min(v, Ordering::Relaxed),
        };
        true
    }

    /// The metric's value across all workers (row 0 + every row), as uWSGI's
    /// global metric value.
    pub fn get(&self, name: &str) -> Option<i64> {
        let &i = self.index.get(name)?;
        let w = self.metrics.words();
        Some((0..=MAX_SLOTS).map(|r| w[r * MAX_METRICS + i].load(Ordering::Relaxed)).fold(0i64, i64::wrapping_add))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a worker maps: the master's fds duplicated to `at` and `at + 1`
    /// (adopt() expects them consecutive), as a spawned worker inherits them.
    fn worker_side(sb: &Scoreboard, at: i32, id: u32, decls: &[MetricDecl]) -> WorkerBoard {
        use std::os::fd::IntoRawFd;
        for (i, fd) in sb.fds().into_iter().enumerate() {
            // SAFETY: the scoreboard's own fds, borrowed while it lives.
            let dup = nix::unistd::dup(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }).unwrap().into_raw_fd();
            // SAFETY: dup2 onto a high number this test owns, then closing the temporary.
            unsafe {
                libc::dup2(dup, at + i as i32);
                libc::close(dup);
            }
        }
        WorkerBoard::adopt(at, id, decls, Some(0)).unwrap()
    }

    #[test]
    fn workers_update_master_reads() {
        let decls = vec![
            MetricDecl { name: "req".into(), counter: true, initial: 10 },
            MetricDecl { name: "peak".into(), counter: false, initial: 0 },
        ];
        let sb = Scoreboard::create(decls.clone()).unwrap();
        let w = worker_side(&sb, 900, 2, &decls);
        assert!(w.update("req", Update::Add(3)));
        assert!(w.update("peak", Update::Max(7)));
        assert!(w.update("peak", Update::Max(4)));
        assert!(!w.update("nope", Update::Add(1)));
        assert_eq!(w.get("req"), Some(13));
        let r = sb.metrics_reader();
        assert_eq!(r.values(0, &[1, 2]), (13, vec![(1, 0), (2, 3)]));
        assert_eq!(r.values(1, &[2]).0, 7);
        sb.set_draining(true);
        sb.publish(&[SlotRecord { id: 1, pid: 42, accepting: true, respawn_count: 2, last_spawn: 9, generation: 3 }]);
        assert!(w.draining());
        assert_eq!(w.slots()[0].pid, 42);
    }

    #[test]
    fn regions_are_sealed_against_resizing_and_worker_writes() {
        use nix::sys::mman::{MapFlags, ProtFlags, mmap};
        let sb = Scoreboard::create(vec![]).unwrap();
        let fds = sb.fds();
        for (i, fd) in fds.iter().enumerate() {
            // SAFETY: borrowing the scoreboard's own fds for the test's duration.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) };
            for len in [0, 8, 1 << 30] {
                assert_eq!(nix::unistd::ftruncate(fd, len), Err(nix::errno::Errno::EPERM), "region {i} to {len}");
            }
            let len = std::num::NonZeroUsize::new(4096).unwrap();
            // SAFETY: a fresh mapping that is unmapped at once (or never made).
            let rw =
                unsafe { mmap(None, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED, fd, 0) };
            match (i, rw) {
                (0, Err(e)) => assert_eq!(e, nix::errno::Errno::EPERM),
                (0, Ok(_)) => panic!("the board can be mapped writable"),
                (_, Ok(p)) => unsafe { nix::sys::mman::munmap(p, 4096).unwrap() },
                (_, Err(e)) => panic!("metrics cannot be mapped writable: {e}"),
            }
        }
        // The master's own mapping still writes.
        sb.set_draining(true);
        sb.publish(&[SlotRecord { id: 1, pid: 7, ..Default::default() }]);
    }

    #[test]
    fn readers_never_see_torn_records() {
        let sb = std::sync::Arc::new(Scoreboard::create(vec![]).unwrap());
        let w = worker_side(&sb, 910, 1, &[]);
        sb.publish(&[SlotRecord::default(); 8]);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (sb, stop) = (sb.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut k = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    // Every field of every record carries the same number.
                    let recs: Vec<SlotRecord> = (0..8)
                        .map(|_| SlotRecord {
                            id: k as u32,
                            pid: k as i32,
                            accepting: true,
                            respawn_count: k,
                            last_spawn: k,
                            generation: k,
                        })
                        .collect();
                    sb.publish(&recs);
                    // The master publishes once per loop turn, not back to back.
                    std::thread::yield_now();
                }
            })
        };
        let mut seen = 0;
        for _ in 0..20_000 {
            for r in w.slots() {
                assert!(r.pid as u64 == r.generation && r.respawn_count == r.generation && r.id as u64 == r.last_spawn);
                seen += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        assert!(seen > 0);
    }
}
