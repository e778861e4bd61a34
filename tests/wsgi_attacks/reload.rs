//! A chain reload and a drain under keep-alive load: 8 clients, each
//! sending requests in a loop on keep-alive connections, against 4
//! workers. A client whose connection the server closes between requests
//! (after an answer with `Connection: close`, or before any byte of the
//! next answer) sends again on a new connection, as HTTP clients do; an
//! answer cut short or wrong, or a new connection closed before its
//! answer, is a failure.

use super::common::*;
use super::*;

const CLIENTS: usize = 8;

fn hello_load(head: &Head, body: &[u8]) -> Result<(), String> {
    match (head.status, body) {
        (200, b"Hello, Load\n") => Ok(()),
        (s, b) => Err(format!("{s} {:?}", String::from_utf8_lossy(b))),
    }
}

/// 200 KB of the pattern (the answer to `/yield?204800`).
fn yielded(head: &Head, body: &[u8]) -> Result<(), String> {
    if head.status != 200 || body.len() != 204_800 {
        return Err(format!("{} with {} bytes", head.status, body.len()));
    }
    match body.iter().enumerate().find(|(i, b)| **b != pattern_byte(*i as u64)) {
        Some((i, _)) => Err(format!("wrong byte at {i}")),
        None => Ok(()),
    }
}

#[test]
fn a_chain_reload_under_keep_alive_load_loses_no_request() {
    let w = Wsgi::start("bulk", 4, "threads = 2", |c| c);
    let before = w.pids();
    assert_eq!(before.len(), 4);
    let load = KeepAliveLoad::start(&w.http, CLIENTS, "/Load", hello_load);
    load.wait_for_more(500);
    w.inst.signal(libc::SIGHUP);
    w.inst.wait_metric("podmaster_reloads_total{result=\"ok\"}", 1.0);
    load.wait_for_more(500);
    let report = load.finish();
    eprintln!("chain reload under load: {report:?}");
    assert_eq!((report.broken, report.lost_fresh, report.refused), (0, 0, 0), "{report:?}");
    let after = w.pids();
    assert_eq!(after.len(), 4);
    assert!(after.iter().all(|p| !before.contains(p)), "{before:?} -> {after:?}");
    assert_no_panic(&w);
}

#[test]
fn a_drain_under_keep_alive_load_finishes_every_answer_it_starts() {
    let mut w = Wsgi::start("bulk", 4, "threads = 2\ndrain-delay = 1", |c| c);
    let load = KeepAliveLoad::start(&w.http, CLIENTS, "/yield?204800", yielded);
    load.wait_for_more(200);
    let slow = std::thread::spawn({
        let a = w.http.clone();
        move || get(&a, "/slow?2")
    });
    wait_for("the slow request to be in flight", DEADLINE, || {
        w.inst.logs().contains("slow request started").then_some(())
    });
    w.inst.signal(libc::SIGTERM);
    assert_eq!(slow.join().unwrap(), Ok((200, b"slow done\n".to_vec())), "the request in flight");
    let st = w.inst.wait_exit(DEADLINE);
    let report = load.finish();
    eprintln!("drain under load: {report:?}");
    assert_eq!(st.code(), Some(0), "{}", w.inst.logs());
    assert_eq!(report.broken, 0, "{report:?}");
    assert!(report.ok > 200, "{report:?}");
    assert_no_panic(&w);
}
