//! The bounds of one load, each reached by a small file: the issue's
//! placeholder doubling, loops in loops, deep nesting, lines run, failed
//! values, entries, bytes; and exec:// from an ini file.

use std::time::{Duration, Instant};

use super::logic::{MAX_BLOCK_NESTING, MAX_REPETITIONS};
use super::logic_tests::{fixture, load_in};
use super::walk::{MAX_FAILURES, MAX_LINE_RUNS};
use crate::config::placeholders::{MAX_ENTRIES, MAX_TOTAL_BYTES, MAX_VALUE_BYTES};

#[test]
fn placeholder_doubling_fails_at_once_with_one_line() {
    let d = fixture("double");
    let p = d.join("c.ini").display().to_string();
    let mut text = format!("[uwsgi]\nv1 = {}\n", "x".repeat(1000));
    for i in 2..=28 {
        text += &format!("v{i} = %(v{})%(v{})\n", i - 1, i - 1);
    }
    let t = Instant::now();
    let got = load_in(&d, &text, None);
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    // 1000 · 2^6 = 64 000 fits; v8 would be 128 000 bytes.
    assert_eq!(got.1, [format!("{p}:9: v8: the value grows to more than {MAX_VALUE_BYTES} bytes once expanded")]);
    assert_eq!(got.0.len(), 7);
}

#[test]
fn loops_in_loops_are_bounded() {
    let d = fixture("nested-for");
    let p = d.join("c.ini").display().to_string();
    let text = "[uwsgi]\nfor-times = 200\nfor-times = 100\nif-dir = file.txt\nendif\nendfor\nendfor\nlisten = 1\n";
    let got = load_in(&d, text, None);
    let why = format!("for loops repeat their bodies more than {MAX_REPETITIONS} times in all");
    assert_eq!(got.1, [format!("{p}:3: for-times: {why}")]);
    assert!(got.0.is_empty(), "the load stopped there: {:?}", got.0);
    // Deeper still: every level multiplies, the same bound holds.
    let deep = format!("[uwsgi]\n{}x = 1\n{}", "for = a b c d e f g h i j\n".repeat(8), "endfor\n".repeat(8));
    let t = Instant::now();
    let got = load_in(&d, &deep, None);
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    assert_eq!(got.1.len(), 1, "{:?}", got.1);
    assert!(got.1[0].ends_with(&why), "{:?}", got.1);
    let got = load_in(&d, "[uwsgi]\nfor-times = 10001\nendfor\n", None);
    assert_eq!(got.1, [format!("{p}:2: for-times: 10001 is more than the {MAX_REPETITIONS} repetitions allowed")]);
}

#[test]
fn nesting_is_bounded() {
    let d = fixture("deep");
    let p = d.join("c.ini").display().to_string();
    let n = MAX_BLOCK_NESTING + 1;
    let text = format!("[uwsgi]\n{}{}", "if-dir = sub\n".repeat(n), "endif\n".repeat(n));
    let got = load_in(&d, &text, None);
    assert_eq!(got.1, [format!("{p}:{}: if-dir: blocks nested more than {MAX_BLOCK_NESTING} deep", n + 1)]);
}

#[test]
fn lines_run_failures_entries_and_bytes_are_bounded() {
    let d = fixture("runs");
    let p = d.join("c.ini").display().to_string();
    // Ten tests that are false, ten thousand times.
    let text = format!("[uwsgi]\nfor-times = 10000\n{}endfor\n", "if-dir = file.txt\nendif\n".repeat(10));
    let got = load_in(&d, &text, None);
    assert_eq!(got.1.len(), 1, "{:?}", got.1);
    assert!(
        got.1[0].starts_with(&format!("{p}:"))
            && got.1[0]
                .ends_with(&format!("if-dir: more than {MAX_LINE_RUNS} lines run (loops included); stopped reading")),
        "{:?}",
        got.1
    );

    let got = load_in(&d, "[uwsgi]\nfor-times = 2000\nx = %(nope)\nendfor\n", None);
    assert_eq!(
        got.1,
        [
            format!("{p}:3: x: placeholder %(nope) refers to a key that is not set before it"),
            format!("{p}:3: x: more than {MAX_FAILURES} values could not be expanded; stopped reading"),
        ]
    );

    let got = load_in(&d, "[uwsgi]\nfor-times = 5001\na = %(_)\nb = %(_)\nendfor\n", None);
    assert_eq!(got.1, [format!("{p}:3: a: more than {MAX_ENTRIES} options in the configuration")]);
    assert_eq!(got.0.len(), MAX_ENTRIES);

    let text = format!("[uwsgi]\na = {}\nfor-times = 300\nv = %(a)\nendfor\n", "x".repeat(60_000));
    let got = load_in(&d, &text, None);
    assert_eq!(
        got.1,
        [format!("{p}:4: v: the configuration holds more than {MAX_TOTAL_BYTES} bytes of values once expanded")]
    );
}

#[test]
fn exec_from_an_ini_file() {
    let d = fixture("exec");
    let p = d.join("c.ini").display().to_string();
    let text = "[uwsgi]\nsocket = :@(exec://echo 80$((40 + 40)))\nchdir = @(exec://echo oops >&2; exit 2)\n\
                for = a b\nname = @(exec://echo %(_))\nendfor\n";
    let got = load_in(&d, text, None);
    assert_eq!(got.1, [format!("{p}:3: chdir: @(exec://echo oops >&2; exit 2): exited with status 2")]);
    assert_eq!(
        got.0,
        [("socket".into(), ":8080".into(), 2), ("name".into(), "a".into(), 5), ("name".into(), "b".into(), 5)]
    );
}
