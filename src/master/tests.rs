//! The state machine's decisions against a fake [`Os`]: no process is
//! started, the clock only moves when a test moves it.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::core::{Core, MasterPhase, Os, Settings, WorkerRequest};
use super::state::Phase;
use super::table::{ProcState, Role};
use crate::config::ReadyWorkers;
use crate::exit;
use crate::notify::Notice;

#[derive(Default)]
struct Fake {
    clock: Duration,
    base: Option<Instant>,
    next_pid: i32,
    spawned: Vec<(Pid, WorkerRequest)>,
    daemons: Vec<Pid>,
    zygotes: Vec<(Pid, u64)>,
    retired_zygotes: Vec<Pid>,
    signals: Vec<(Pid, Signal)>,
    groups: Vec<(Pid, Signal)>,
    fail_spawns: bool,
    draining: bool,
    sweeps: u32,
}

impl Os for Fake {
    fn now(&self) -> Instant {
        self.base.unwrap_or_else(Instant::now) + self.clock
    }
    fn spawn_worker(&mut self, req: &WorkerRequest) -> std::io::Result<Pid> {
        if self.fail_spawns {
            return Err(std::io::Error::from_raw_os_error(libc::EAGAIN));
        }
        self.next_pid += 1;
        let pid = Pid::from_raw(1000 + self.next_pid);
        self.spawned.push((pid, req.clone()));
        Ok(pid)
    }
    fn spawn_zygote(&mut self, generation: u64) -> std::io::Result<Pid> {
        self.next_pid += 1;
        let pid = Pid::from_raw(1000 + self.next_pid);
        self.zygotes.push((pid, generation));
        Ok(pid)
    }
    fn retire_zygote(&mut self, pid: Pid) {
        self.retired_zygotes.push(pid);
    }
    fn zygote_gone(&mut self, _pid: Pid) {}
    fn spawn_daemon(&mut self, _argv: &[String]) -> std::io::Result<Pid> {
        self.next_pid += 1;
        let pid = Pid::from_raw(1000 + self.next_pid);
        self.daemons.push(pid);
        Ok(pid)
    }
    fn signal(&mut self, pid: Pid, sig: Signal) {
        self.signals.push((pid, sig));
    }
    fn signal_group(&mut self, pid: Pid, sig: Signal) {
        self.groups.push((pid, sig));
    }
    fn draining(&mut self) {
        self.draining = true;
    }
    fn final_sweep(&mut self) -> (usize, u64) {
        self.sweeps += 1;
        (0, 0)
    }
}

const MERCY: Duration = Duration::from_secs(10);
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);
const DRAIN_DELAY: Duration = Duration::from_secs(5);

fn settings() -> Settings {
    Settings {
        drain_delay: DRAIN_DELAY,
        mercy: MERCY,
        chain_reload_timeout: RELOAD_TIMEOUT,
        stop_signal: Signal::SIGHUP,
        ready_workers: ReadyWorkers::Percent(100),
        ready_on_spawn: false,
        backoff_max: Duration::from_secs(30),
        max_failed_starts: 5,
        lifetime: None,
        lifetime_delta: Duration::ZERO,
        preforked: false,
        ready_warning: Some(Duration::from_secs(30)),
    }
}

/// A core with `n` workers spawned, none accepting yet.
fn started(n: u32) -> Core<Fake> {
    let os = Fake { base: Some(Instant::now()), ..Fake::default() };
    let mut c = Core::new(os, settings(), n, &[]);
    c.start();
    c
}

/// A core with `n` workers, all accepting: phase Running.
fn running(n: u32) -> Core<Fake> {
    let mut c = started(n);
    for (pid, _) in c.os.spawned.clone() {
        c.on_notice(pid.as_raw(), Notice::Ready);
    }
    assert_eq!(c.phase, MasterPhase::Running);
    c
}

fn advance(c: &mut Core<Fake>, d: Duration) {
    c.os.clock += d;
    let now = c.os.now();
    c.on_deadlines(now);
}

fn exited(c: &mut Core<Fake>, pid: Pid, code: i32) {
    let now = c.os.now();
    assert!(c.on_exit(pid, &WaitStatus::Exited(pid, code), now), "{pid} is ours");
    c.settle(now);
}

fn last_spawn(c: &Core<Fake>) -> Pid {
    c.os.spawned.last().map(|(p, _)| *p).expect("a spawn")
}

fn signalled(c: &Core<Fake>, pid: Pid) -> Vec<Signal> {
    c.os.signals.iter().filter(|(p, _)| *p == pid).map(|(_, s)| *s).collect()
}

#[test]
fn startup_reaches_running_once_every_worker_accepts() {
    let mut c = started(2);
    assert_eq!(c.phase, MasterPhase::Starting);
    let pids: Vec<Pid> = c.os.spawned.iter().map(|(p, _)| *p).collect();
    c.on_notice(pids[0].as_raw(), Notice::Ready);
    assert_eq!(c.phase, MasterPhase::Starting);
    c.on_notice(pids[1].as_raw(), Notice::Ready);
    assert_eq!(c.phase, MasterPhase::Running);
    assert_eq!(c.accepting(), 2);
    assert!(c.os.spawned.iter().all(|(_, r)| !r.respawn && r.processes == 2));
}

#[test]
fn chain_reload_replaces_one_slot_at_a_time() {
    let mut c = running(2);
    let old: Vec<Pid> = c.os.spawned.iter().map(|(p, _)| *p).collect();
    c.request_reload("SIGHUP");
    assert_eq!(c.phase.observed(), Phase::Reloading);
    let r1 = last_spawn(&c);
    assert_eq!(c.table.replacement(1).map(|p| p.pid), Some(r1));
    assert!(c.os.spawned.last().is_some_and(|(_, r)| r.respawn && r.slot == 1));
    c.on_notice(r1.as_raw(), Notice::Ready);
    // The old worker retires; slot 2 waits for it to exit.
    assert_eq!(signalled(&c, old[0]), vec![Signal::SIGHUP]);
    assert_eq!(c.table.worker(1).map(|p| p.pid), Some(r1));
    assert_eq!(c.os.spawned.len(), 3);
    exited(&mut c, old[0], 0);
    let r2 = last_spawn(&c);
    assert_eq!(c.table.replacement(2).map(|p| p.pid), Some(r2));
    c.on_notice(r2.as_raw(), Notice::Ready);
    exited(&mut c, old[1], 0);
    assert_eq!(c.phase, MasterPhase::Running);
    assert_eq!(c.counters.reloads_ok, 1);
    assert_eq!(c.accepting(), 2);
}

#[test]
fn replacement_that_never_accepts_aborts_the_reload() {
    let mut c = running(2);
    let old = c.table.worker(1).map(|p| p.pid).unwrap();
    c.request_reload("SIGHUP");
    let r1 = last_spawn(&c);
    advance(&mut c, RELOAD_TIMEOUT - Duration::from_millis(1));
    assert_eq!(c.phase, MasterPhase::Reloading);
    advance(&mut c, Duration::from_millis(1));
    assert_eq!(c.phase, MasterPhase::Running);
    assert_eq!(c.counters.reloads_aborted, 1);
    assert_eq!(c.table.worker(1).map(|p| p.pid), Some(old), "the old worker stays");
    assert_eq!(c.table.find(r1).map(|p| p.role), Some(Role::Retiring { slot: 1 }));
    assert_eq!(signalled(&c, r1), vec![Signal::SIGHUP]);
    assert!(signalled(&c, old).is_empty());
    // It ignores the stop signal too: SIGKILL after mercy.
    advance(&mut c, MERCY);
    assert_eq!(signalled(&c, r1), vec![Signal::SIGHUP, Signal::SIGKILL]);
    exited(&mut c, r1, 0);
    assert_eq!(c.os.spawned.len(), 3, "no second replacement");
}

#[test]
fn hup_during_a_reload_runs_it_once_more() {
    let mut c = running(1);
    c.request_reload("SIGHUP");
    c.request_reload("SIGHUP");
    c.request_reload("SIGHUP");
    let old = c.os.spawned[0].0;
    let r1 = last_spawn(&c);
    c.on_notice(r1.as_raw(), Notice::Ready);
    exited(&mut c, old, 0);
    assert_eq!(c.counters.reloads_ok, 1);
    assert_eq!(c.phase, MasterPhase::Reloading, "the coalesced second pass");
    let r2 = last_spawn(&c);
    assert_ne!(r1, r2);
    c.on_notice(r2.as_raw(), Notice::Ready);
    exited(&mut c, r1, 0);
    assert_eq!(c.counters.reloads_ok, 2);
    assert_eq!(c.phase, MasterPhase::Running);
    assert_eq!(c.os.spawned.len(), 3);
}

#[test]
fn reload_before_ready_waits_for_ready() {
    let mut c = started(1);
    c.request_reload("SIGHUP");
    assert_eq!(c.os.spawned.len(), 1);
    let pid = c.os.spawned[0].0;
    c.on_notice(pid.as_raw(), Notice::Ready);
    assert_eq!(c.phase, MasterPhase::Reloading);
    assert_eq!(c.os.spawned.len(), 2);
}

#[test]
fn drain_waits_delay_then_stops_then_kills_a_worker_that_ignores_it() {
    let mut c = running(2);
    let pids: Vec<Pid> = c.os.spawned.iter().map(|(p, _)| *p).collect();
    c.begin_drain(false, "SIGTERM");
    assert_eq!(c.phase.observed(), Phase::Draining);
    assert!(c.os.draining);
    assert!(c.os.signals.is_empty(), "workers serve during drain-delay");
    advance(&mut c, DRAIN_DELAY);
    assert_eq!(signalled(&c, pids[0]), vec![Signal::SIGHUP]);
    exited(&mut c, pids[0], 0);
    advance(&mut c, MERCY - Duration::from_millis(1));
    assert_eq!(signalled(&c, pids[1]), vec![Signal::SIGHUP]);
    advance(&mut c, Duration::from_millis(1));
    assert_eq!(signalled(&c, pids[1]), vec![Signal::SIGHUP, Signal::SIGKILL]);
    assert_eq!(c.os.groups, vec![(pids[1], Signal::SIGKILL)]);
    exited(&mut c, pids[1], 0);
    assert_eq!(c.phase, MasterPhase::Exited { code: exit::KILLED });
    assert_eq!(c.os.sweeps, 1);
    assert!(c.next_deadline().is_none());
}

#[test]
fn second_int_during_drain_is_a_fast_stop() {
    let mut c = running(1);
    let pid = c.os.spawned[0].0;
    c.begin_drain(false, "SIGINT");
    c.begin_drain(true, "SIGINT");
    assert_eq!(signalled(&c, pid), vec![Signal::SIGINT]);
    exited(&mut c, pid, 0);
    assert_eq!(c.phase, MasterPhase::Exited { code: exit::OK });
}

#[test]
fn drain_during_reload_abandons_it_and_stops_daemons_last() {
    let os = Fake { base: Some(Instant::now()), ..Fake::default() };
    let mut c = Core::new(os, settings(), 1, &[vec!["sleep".into(), "9".into()]]);
    c.start();
    let w = c.os.spawned[0].0;
    let d = c.os.daemons[0];
    c.on_notice(w.as_raw(), Notice::Ready);
    c.request_reload("SIGHUP");
    let r = last_spawn(&c);
    c.begin_drain(true, "SIGQUIT");
    assert!(c.rollout.is_none());
    assert_eq!(signalled(&c, w), vec![Signal::SIGINT]);
    assert_eq!(signalled(&c, r), vec![Signal::SIGINT]);
    assert!(signalled(&c, d).is_empty());
    exited(&mut c, w, 0);
    exited(&mut c, r, 0);
    assert_eq!(signalled(&c, d), vec![Signal::SIGINT]);
    exited(&mut c, d, 0);
    assert_eq!(c.phase, MasterPhase::Exited { code: exit::OK });
}

#[test]
fn a_worker_dying_during_startup_fails_the_instance() {
    let mut c = started(2);
    let pids: Vec<Pid> = c.os.spawned.iter().map(|(p, _)| *p).collect();
    exited(&mut c, pids[0], 1);
    assert!(matches!(c.phase, MasterPhase::Draining { fast: true, .. }));
    assert!(c.os.draining, "the workers are told, as in any drain");
    assert_eq!(signalled(&c, pids[1]), vec![Signal::SIGINT]);
    exited(&mut c, pids[1], 0);
    assert_eq!(c.phase, MasterPhase::Exited { code: exit::STARTUP_FAILED });
}

#[test]
fn crashes_respawn_with_doubling_backoff_then_crash_loop() {
    let mut c = running(1);
    let mut waits = Vec::new();
    for _ in 0..5 {
        let pid = last_spawn(&c);
        exited(&mut c, pid, 1);
        let at = c.slots[0].respawn_at.expect("respawn scheduled");
        waits.push(at.duration_since(c.os.now()).as_millis());
        let wait = at.duration_since(c.os.now());
        advance(&mut c, wait);
        assert!(c.table.worker(1).is_some());
    }
    // The first worker had accepted (not a failed start); the rest never did.
    assert_eq!(waits, vec![100, 200, 400, 800, 1600]);
    assert_eq!(c.slots[0].failed_starts, 4);
    assert!(c.crash_loop.is_none());
    let pid = last_spawn(&c);
    exited(&mut c, pid, 1);
    assert!(c.crash_loop.is_some());
    let wait = c.slots[0].respawn_at.unwrap().duration_since(c.os.now());
    advance(&mut c, wait);
    c.on_notice(last_spawn(&c).as_raw(), Notice::Ready);
    assert!(c.crash_loop.is_none());
    assert_eq!(c.slots[0].respawn_count, 6);
}

#[test]
fn a_failed_spawn_is_retried_with_backoff() {
    let os = Fake { base: Some(Instant::now()), fail_spawns: true, ..Fake::default() };
    let mut c = Core::new(os, settings(), 1, &[]);
    c.start();
    assert!(c.table.worker(1).is_none());
    assert_eq!(c.next_deadline(), Some(c.os.now() + Duration::from_millis(100)));
    c.os.fail_spawns = false;
    advance(&mut c, Duration::from_millis(100));
    assert!(c.table.worker(1).is_some());
    assert_eq!(c.slots[0].exits["spawn_failed"], 1);
}

#[test]
fn lifetime_recycles_one_worker_without_a_reload_phase() {
    let os = Fake { base: Some(Instant::now()), ..Fake::default() };
    let set = Settings { lifetime: Some(Duration::from_secs(60)), ..settings() };
    let mut c = Core::new(os, set, 1, &[]);
    c.start();
    let old = last_spawn(&c);
    c.on_notice(old.as_raw(), Notice::Ready);
    advance(&mut c, Duration::from_secs(60));
    assert_eq!(c.phase, MasterPhase::Running, "recycling is not a reload");
    let new = last_spawn(&c);
    assert_ne!(old, new);
    c.on_notice(new.as_raw(), Notice::Ready);
    exited(&mut c, old, 0);
    assert!(c.rollout.is_none());
    assert_eq!(c.counters.reloads_ok, 0);
}

#[test]
fn scaling_adds_and_retires_slots() {
    let mut c = running(1);
    c.scale_up();
    assert_eq!(c.processes(), 2);
    assert_eq!(c.os.spawned.last().map(|(_, r)| (r.slot, r.processes)), Some((2, 2)));
    let p2 = last_spawn(&c);
    c.scale_down();
    assert_eq!(c.processes(), 1);
    assert_eq!(c.table.find(p2).map(|p| (p.role, p.state.stopping())), Some((Role::Retiring { slot: 2 }, true)));
}

#[test]
fn stopping_notice_leaves_accepting() {
    let mut c = running(1);
    let pid = c.os.spawned[0].0;
    c.on_notice(pid.as_raw(), Notice::Stopping);
    assert_eq!(c.table.find(pid).map(|p| p.state), Some(ProcState::Starting));
    assert_eq!(c.accepting(), 0);
}

#[test]
fn a_worker_healthy_for_10_s_is_replaced_at_once() {
    let mut c = running(1);
    advance(&mut c, Duration::from_secs(10));
    let pid = last_spawn(&c);
    exited(&mut c, pid, 1);
    // Due now: the next turn respawns it without the clock moving.
    let at = c.slots[0].respawn_at.expect("respawn scheduled");
    assert_eq!(at, c.os.now());
    advance(&mut c, Duration::ZERO);
    let again = last_spawn(&c);
    assert_ne!(again, pid);
    assert_eq!(c.table.worker(1).map(|p| p.pid), Some(again));
    // It never accepted and fails too: the backoff starts from its beginning.
    exited(&mut c, again, 1);
    let wait = c.slots[0].respawn_at.expect("respawn scheduled").duration_since(c.os.now());
    assert_eq!(wait, Duration::from_millis(100));
}

/// A preforked core with `n` slots: the zygote spawned, not ready yet.
fn zygote_started(n: u32) -> Core<Fake> {
    let os = Fake { base: Some(Instant::now()), ..Fake::default() };
    let mut c = Core::new(os, Settings { preforked: true, ..settings() }, n, &[]);
    c.start();
    c
}

fn last_zygote(c: &Core<Fake>) -> Pid {
    c.os.zygotes.last().map(|(p, _)| *p).expect("a zygote")
}

/// Every worker spawned since `from` accepts.
fn all_ready(c: &mut Core<Fake>, from: usize) {
    let pids: Vec<Pid> = c.os.spawned[from..].iter().map(|(p, _)| *p).collect();
    for pid in pids {
        c.on_notice(pid.as_raw(), Notice::Ready);
    }
}

/// A preforked core with `n` workers accepting: phase Running.
fn zygote_running(n: u32) -> Core<Fake> {
    let mut c = zygote_started(n);
    c.on_zygote_ready(last_zygote(&c));
    all_ready(&mut c, 0);
    assert_eq!(c.phase, MasterPhase::Running);
    c
}

#[test]
fn workers_are_forked_once_the_zygote_is_ready() {
    let mut c = zygote_started(2);
    assert_eq!(c.os.zygotes.len(), 1);
    assert!(c.os.spawned.is_empty(), "no worker before the zygote is ready");
    assert!(c.slots.iter().all(|s| s.awaiting_zygote));
    let z = last_zygote(&c);
    c.on_zygote_ready(z);
    assert_eq!(c.os.spawned.len(), 2);
    assert!(c.os.spawned.iter().all(|(_, r)| r.zygote == Some(z)));
    all_ready(&mut c, 0);
    assert_eq!(c.phase, MasterPhase::Running);
    // A crash respawn forks from the same zygote.
    let pid = last_spawn(&c);
    exited(&mut c, pid, 1);
    advance(&mut c, Duration::from_millis(100));
    assert_eq!(c.os.spawned.last().map(|(_, r)| r.zygote), Some(Some(z)));
}

#[test]
fn a_dead_zygote_leaves_the_workers_and_is_restarted_before_respawns() {
    let mut c = zygote_running(2);
    let z1 = last_zygote(&c);
    let workers: Vec<Pid> = c.table.workers().map(|p| p.pid).collect();
    advance(&mut c, Duration::from_secs(1));
    let now = c.os.now();
    assert!(c.on_exit(z1, &WaitStatus::Signaled(z1, Signal::SIGKILL, false), now));
    assert_eq!(c.table.workers().map(|p| p.pid).collect::<Vec<_>>(), workers, "workers keep serving");
    assert_eq!(c.phase, MasterPhase::Running);
    // It had been ready for 1 s only: restarted after the first backoff step.
    assert_eq!(c.zygotes.restart_at, Some(now + Duration::from_millis(100)));
    // A worker dying meanwhile waits for the new zygote.
    exited(&mut c, workers[0], 1);
    advance(&mut c, Duration::from_millis(100));
    assert_eq!(c.os.zygotes.len(), 2);
    assert_eq!(c.zygotes.restarts, 1);
    assert!(c.slots[0].awaiting_zygote, "the respawn waits for the zygote");
    let spawned = c.os.spawned.len();
    let z2 = last_zygote(&c);
    c.on_zygote_ready(z2);
    assert_eq!(c.os.spawned.len(), spawned + 1);
    assert_eq!(c.os.spawned.last().map(|(_, r)| r.zygote), Some(Some(z2)));
}

#[test]
fn a_zygote_failing_during_startup_stops_the_instance() {
    for (code, expected) in [(1, exit::STARTUP_FAILED), (78, exit::CONFIG)] {
        let mut c = zygote_started(2);
        let z = last_zygote(&c);
        exited(&mut c, z, code);
        assert!(matches!(c.phase, MasterPhase::Exited { code } if code == expected), "{:?}", c.phase);
        assert!(c.os.spawned.is_empty());
    }
}

#[test]
fn a_chain_reload_forks_replacements_from_a_new_zygote_then_retires_the_old() {
    let mut c = zygote_running(2);
    let z1 = last_zygote(&c);
    let spawned = c.os.spawned.len();
    c.request_reload("SIGHUP");
    assert_eq!(c.phase, MasterPhase::Reloading);
    assert_eq!(c.os.zygotes.len(), 2, "the new code's zygote starts first");
    assert_eq!(c.os.spawned.len(), spawned, "no replacement before it is ready");
    let z2 = last_zygote(&c);
    c.on_zygote_ready(z2);
    for _ in 0..2 {
        let (pid, req) = c.os.spawned.last().cloned().expect("a replacement");
        assert_eq!(req.zygote, Some(z2));
        c.on_notice(pid.as_raw(), Notice::Ready);
        let old: Vec<Pid> = c.table.retiring().map(|p| p.pid).collect();
        for o in old {
            exited(&mut c, o, 0);
        }
    }
    assert_eq!(c.phase, MasterPhase::Running);
    assert_eq!(c.os.spawned.len(), spawned + 2);
    assert_eq!(c.os.retired_zygotes, vec![z1], "the old zygote retires once nothing needs it");
    assert_eq!(c.zygotes.current, 2);
    exited(&mut c, z1, 0);
    assert_eq!(c.counters.reloads_ok, 1);
}

#[test]
fn a_reload_whose_zygote_fails_is_aborted_and_the_old_zygote_stays() {
    let mut c = zygote_running(2);
    let z1 = last_zygote(&c);
    c.request_reload("SIGHUP");
    let z2 = last_zygote(&c);
    exited(&mut c, z2, 1);
    assert_eq!(c.phase, MasterPhase::Running);
    assert_eq!(c.counters.reloads_aborted, 1);
    assert_eq!(c.zygotes.current, 1);
    assert!(c.os.retired_zygotes.is_empty());
    // Late: the same after chain-reload-timeout.
    c.request_reload("SIGHUP");
    let z3 = last_zygote(&c);
    assert_ne!(z3, z1);
    advance(&mut c, RELOAD_TIMEOUT);
    assert_eq!(c.counters.reloads_aborted, 2);
    assert_eq!(c.os.retired_zygotes, vec![z3]);
    assert_eq!(c.table.find(z1).map(|p| p.state), Some(ProcState::Running));
}

#[test]
fn a_drain_stops_the_zygote_at_once() {
    let mut c = zygote_running(1);
    let z = last_zygote(&c);
    c.begin_drain(false, "SIGTERM");
    assert_eq!(c.os.retired_zygotes, vec![z]);
    exited(&mut c, z, 0);
    advance(&mut c, DRAIN_DELAY);
    let w = last_spawn(&c);
    exited(&mut c, w, 0);
    assert!(matches!(c.phase, MasterPhase::Exited { code: 0 }), "{:?}", c.phase);
}

/// Drives a rollout to its end: each replacement reports ready, each old
/// worker exits. Returns the requests of the replacements, in order.
fn run_rollout(c: &mut Core<Fake>) -> Vec<WorkerRequest> {
    let mut done = Vec::new();
    while let Some((pid, req)) = c.os.spawned.last().cloned() {
        if !c.table.find(pid).is_some_and(|p| p.state == ProcState::Starting) {
            break;
        }
        done.push(req);
        c.on_notice(pid.as_raw(), Notice::Ready);
        let old: Vec<Pid> = c.table.retiring().map(|p| p.pid).collect();
        for o in old {
            exited(c, o, 0);
        }
        if c.phase == MasterPhase::Running {
            break;
        }
    }
    done
}

/// Found in review: a restart of the old code's zygote still pending when
/// a reload promoted the new one started a third zygote over it; slots
/// waiting for the old one were never forked.
#[test]
fn a_reload_promoting_its_zygote_cancels_a_pending_restart_and_forks_waiting_slots() {
    let mut c = zygote_running(2);
    let z1 = last_zygote(&c);
    c.request_reload("SIGHUP");
    let z2 = last_zygote(&c);
    // The current zygote dies; its restart is scheduled, slot 1's worker dies too.
    let now = c.os.now();
    assert!(c.on_exit(z1, &WaitStatus::Signaled(z1, Signal::SIGKILL, false), now));
    assert!(c.zygotes.restart_at.is_some());
    let w1 = c.table.worker(1).map(|p| p.pid).unwrap();
    exited(&mut c, w1, 1);
    advance(&mut c, Duration::from_millis(100));
    let z3 = last_zygote(&c);
    assert_ne!(z3, z2, "the restart started");
    assert!(c.slots[0].awaiting_zygote);
    // The new code's zygote is ready: the rollout runs, slot 1 (down) is skipped.
    c.on_zygote_ready(z2);
    let replacements = run_rollout(&mut c);
    assert!(replacements.iter().all(|r| r.zygote == Some(z2)), "{replacements:?}");
    assert_eq!(c.phase, MasterPhase::Running);
    assert_eq!(c.zygotes.current, 2);
    assert_eq!(c.zygotes.restart_at, None, "the pending restart is moot");
    assert!(c.os.retired_zygotes.contains(&z3), "the restarting old-code zygote retires");
    let zygotes = c.os.zygotes.len();
    advance(&mut c, Duration::from_secs(60));
    assert_eq!(c.os.zygotes.len(), zygotes, "no zygote started after the promotion");
    assert!(!c.slots[0].awaiting_zygote, "the waiting slot was forked from the new zygote");
    assert_eq!(
        c.table.worker(1).and_then(|w| c.os.spawned.iter().find(|(p, _)| *p == w.pid)).map(|(_, r)| r.zygote),
        Some(Some(z2))
    );
}

/// Found in review: a reload asked for while a recycle was replacing a
/// slot counted that replacement (started from the code before the
/// request) as reloaded.
#[test]
fn a_reload_during_a_recycle_replaces_the_recycled_slot_again() {
    let mut c = running(2);
    c.recycle(1, super::core::Recycle::Lifetime);
    let now = c.os.now();
    c.settle(now);
    let first = last_spawn(&c);
    assert_eq!(c.table.replacement(1).map(|p| p.pid), Some(first));
    c.request_reload("SIGHUP");
    let replaced_slot1 = run_rollout(&mut c).iter().filter(|r| r.slot == 1).count();
    assert_eq!(c.phase, MasterPhase::Running);
    assert_eq!(replaced_slot1, 2, "slot 1: the recycle's replacement, then the reload's");
}

/// A zygote that never becomes ready after a restart is killed after
/// chain-reload-timeout, and zygotes failing to start are a crash loop.
#[test]
fn a_restarted_zygote_that_hangs_is_killed_and_repeated_failures_are_a_crash_loop() {
    let mut c = zygote_running(1);
    let z1 = last_zygote(&c);
    exited(&mut c, z1, 1);
    advance(&mut c, Duration::from_millis(100));
    let z2 = last_zygote(&c);
    advance(&mut c, RELOAD_TIMEOUT);
    assert!(signalled(&c, z2).contains(&Signal::SIGKILL), "a hung restart is killed");
    for _ in 0..5 {
        let z = last_zygote(&c);
        exited(&mut c, z, 1);
        advance(&mut c, Duration::from_secs(30));
    }
    assert!(c.crash_loop.as_deref().is_some_and(|m| m.contains("zygote failed to start")), "{:?}", c.crash_loop);
    let z = last_zygote(&c);
    c.on_zygote_ready(z);
    assert_eq!(c.crash_loop, None);
}

#[test]
fn a_stop_first_recycle_stops_the_worker_then_refills_its_slot() {
    let mut c = running(2);
    let old = c.table.worker(1).unwrap().pid;
    let spawns = c.os.spawned.len();
    let now = c.os.now();
    c.recycle_stop_first(1, super::core::Recycle::CgroupMemory, now);
    assert_eq!(signalled(&c, old), vec![Signal::SIGHUP], "stopped gracefully first");
    assert_eq!(c.os.spawned.len(), spawns, "nothing starts while it stops");
    assert_eq!(c.counters.recycles[super::core::Recycle::CgroupMemory as usize], 1);
    // A second request while it stops changes nothing.
    let p2 = c.table.worker(2).unwrap().pid;
    c.recycle_stop_first(2, super::core::Recycle::CgroupMemory, now);
    assert!(signalled(&c, p2).is_empty());
    exited(&mut c, old, 0);
    advance(&mut c, Duration::ZERO);
    assert_eq!(c.os.spawned.len(), spawns + 1, "the slot is refilled once the old worker exited");
    assert_eq!(c.os.spawned.last().map(|(_, r)| r.slot), Some(1));
    assert_eq!(c.phase, MasterPhase::Running);
}

#[test]
fn recycles_are_counted_by_reason_and_a_scaled_away_slot_is_not_refilled() {
    let mut c = running(2);
    c.recycle(2, super::core::Recycle::Rss);
    assert_eq!(c.counters.recycles, [0, 1, 0, 0, 0]);
    let mut c = running(2);
    let p2 = c.table.worker(2).unwrap().pid;
    c.scale_down();
    let spawns = c.os.spawned.len();
    exited(&mut c, p2, 0);
    advance(&mut c, Duration::from_secs(1));
    assert_eq!(c.os.spawned.len(), spawns, "slot 2 is gone");
}

#[test]
fn a_worker_that_never_reports_accepting_is_warned_about_once() {
    let mut c = started(2);
    let (p1, p2) = (c.os.spawned[0].0, c.os.spawned[1].0);
    c.on_notice(p1.as_raw(), Notice::Ready);
    assert_eq!(c.next_deadline(), Some(c.table.find(p2).unwrap().started + Duration::from_secs(30)));
    advance(&mut c, Duration::from_secs(29));
    assert!(!c.table.find(p2).unwrap().slow_start_warned);
    advance(&mut c, Duration::from_secs(1));
    assert!(c.table.find(p2).unwrap().slow_start_warned);
    assert!(!c.table.find(p1).unwrap().slow_start_warned, "the accepting one is not");
    assert_eq!(c.next_deadline(), None, "warned once: nothing more is due");
}

#[test]
fn a_worker_asking_for_a_replacement_gets_one_once() {
    use super::core::Recycle;
    let mut c = running(2);
    let spawns = c.os.spawned.len();
    let old = c.table.worker(1).unwrap().pid;
    c.on_notice(old.as_raw(), Notice::MaxRequests);
    c.on_notice(old.as_raw(), Notice::MaxRequests);
    c.on_notice(old.as_raw(), Notice::Harakiri);
    advance(&mut c, Duration::ZERO);
    assert_eq!(c.os.spawned.len(), spawns + 1, "one replacement, started first");
    assert!(signalled(&c, old).is_empty(), "the old worker serves until the replacement accepts");
    assert_eq!(c.counters.recycles[Recycle::MaxRequests as usize], 1);
    assert_eq!(c.counters.recycles[Recycle::Harakiri as usize], 0);
    let new = last_spawn(&c);
    // The replacement itself asking is not acted on before it took over.
    c.on_notice(new.as_raw(), Notice::Harakiri);
    c.on_notice(new.as_raw(), Notice::Ready);
    assert_eq!(signalled(&c, old), vec![Signal::SIGHUP]);
    assert_eq!(c.counters.recycles[Recycle::Harakiri as usize], 0);
    exited(&mut c, old, 0);
    // Once it serves the slot, it may ask.
    c.on_notice(new.as_raw(), Notice::Harakiri);
    advance(&mut c, Duration::ZERO);
    assert_eq!(c.counters.recycles[Recycle::Harakiri as usize], 1);
    assert_eq!(c.os.spawned.len(), spawns + 2);
}

/// Request-metrics rows: every live worker process holds its own (a
/// replacement never shares its old worker's), and a reaped process's
/// row is handed out again.
#[test]
fn each_live_worker_process_holds_its_own_http_row() {
    let mut c = running(2);
    let rows = |c: &Core<Fake>| {
        let mut r: Vec<u32> = c.table.iter().filter_map(|p| p.http_row).collect();
        r.sort_unstable();
        r
    };
    assert_eq!(rows(&c), vec![0, 1]);
    c.request_reload("SIGHUP");
    let (pid, req) = c.os.spawned.last().cloned().unwrap();
    assert_eq!(req.http_row, Some(2), "the replacement of slot 1 starts while its worker (row 0) serves");
    assert_eq!(rows(&c), vec![0, 1, 2]);
    c.on_notice(pid.as_raw(), Notice::Ready);
    let old: Vec<Pid> = c.table.retiring().map(|p| p.pid).collect();
    exited(&mut c, old[0], 0);
    // Slot 2's replacement gets the row slot 1's old worker gave back.
    assert_eq!(c.os.spawned.last().unwrap().1.http_row, Some(0));
    run_rollout(&mut c);
    assert_eq!(rows(&c).len(), 2);
    assert_eq!(c.http_rows_used, 3);
    // A worker killed: the lowest free row goes to its respawn (the master zeroes the gauge).
    assert_eq!(rows(&c), vec![0, 2]);
    let w = c.table.worker(1).map(|p| p.pid).unwrap();
    exited(&mut c, w, 1);
    advance(&mut c, Duration::from_secs(1));
    assert_eq!(c.table.worker(1).and_then(|p| p.http_row), Some(1));
    assert_eq!(c.http_rows_used, 3);
}
