//! uWSGI configuration logic, magic variables and placeholder maths in ini
//! files, end to end: `podmaster --check-config --ini FILE` on a file as a
//! Helm chart renders it (`if-env`, `for`, `%k` maths, `set-ph`, `print`),
//! every bad value of a file reported in one run, the issue's doubling
//! attack, YAML refusing logic keys; then generated inputs: ini texts made
//! of logic keys and placeholders, and values full of `%`, must never
//! panic, must finish quickly, and must either load or fail with errors
//! that each name a file and line.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::Config as PtConfig;

use podmaster::config::{ConfigError, Entry, Origin, ini, yaml};

use common::*;

/// `podmaster --check-config --ini FILE` with `env`: (exit code, stdout, stderr).
fn check(path: &Path, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("--check-config").arg("--ini").arg(path).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx.recv_timeout(DEADLINE).expect("--check-config did not finish").unwrap();
    let s = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code(), s(out.stdout), s(out.stderr))
}

fn cores() -> usize {
    std::thread::available_parallelism().unwrap().get()
}

#[test]
fn helm_rendered_ini_with_logic_and_maths() {
    let d = TempDir::new("logic-helm");
    std::fs::create_dir(d.path().join("conf.d")).unwrap();
    d.write("conf.d/10-listen.ini", "[uwsgi]\nlisten = 256\n");
    d.write("conf.d/20-drain.ini", "[uwsgi]\ndrain-delay = 3\n");
    // As a chart's template renders it: a value block, env-driven
    // switches, sockets from a list, workers from the CPU count.
    let ini = d.write(
        "uwsgi.ini",
        &format!(
            "# Source: app/templates/configmap.yaml\n[uwsgi]\n\
             set-ph = ports=18001 18002\n\
             set-ph = per_core=2\n\
             python-worker-override = {script}\n\
             for = %(ports)\n\
             socket = 127.0.0.1:%(_)\n\
             endfor =\n\
             processes = %(%k * per_core)\n\
             if-env = APP_PROBE_PORT\n\
             probe-socket = 127.0.0.1:%(_)\n\
             print = probes on %(_)\n\
             endif =\n\
             if-not-env = APP_DEBUG\n\
             log-level = warn\n\
             else =\n\
             log-level = debug\n\
             endif =\n\
             for-glob = conf.d/*.ini\n\
             include = %(_)\n\
             endfor =\n\
             if-opt = drain-delay=3\n\
             worker-reload-mercy = %(drain-delay + 20)\n\
             endif =\n\
             max-worker-lifetime = %(3600 * 24)\n",
            script = example_script()
        ),
    );
    let (code, out, err) = check(&ini, &[("APP_PROBE_PORT", "19000"), ("APP_DEBUG", "")]);
    assert_eq!(code, Some(0), "{err}\n{out}");
    let at = |line: usize| format!("  # {}:{line}", ini.display());
    for want in [
        format!("socket = 127.0.0.1:18001{}", at(7)),
        format!("socket = 127.0.0.1:18002{}", at(7)),
        format!("processes = {}{}", 2 * cores(), at(9)),
        format!("probe-socket = 127.0.0.1:19000{}", at(11)),
        format!("log-level = warn{}", at(15)),
        format!("listen = 256  # {}:2", d.path().join("conf.d/10-listen.ini").display()),
        format!("worker-reload-mercy = 23{}", at(23)),
        format!("max-worker-lifetime = 86400{}", at(25)),
    ] {
        assert!(out.lines().any(|l| l == want), "no line {want:?} in:\n{out}");
    }
    assert!(out.ends_with("configuration OK\n"), "{out}");
    // The definitions are shown (as `--set-ph` ones are), the placeholders
    // themselves are not options.
    assert!(out.lines().any(|l| l == format!("set-placeholder = per_core=2{}", at(4))), "{out}");
    assert!(!out.lines().any(|l| l.starts_with("ports ") || l.starts_with("per_core ")), "{out}");
    assert!(err.contains("podmaster: print: probes on 19000\n"), "print goes to stderr: {err}");
    assert!(!out.contains("print"), "{out}");

    // Switched the other way by the environment alone.
    let (code, out, err) = check(&ini, &[("APP_DEBUG", "1")]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.lines().any(|l| l == format!("log-level = debug{}", at(17))), "{out}");
    assert!(!out.contains("probe-socket = 127.0.0.1:19000") && !err.contains("print:"), "{out}{err}");
}

#[test]
fn every_bad_value_is_reported_in_one_run() {
    let d = TempDir::new("logic-many");
    let ini = d.write(
        "app.ini",
        &format!(
            "[uwsgi]\npython-worker-override = {}\nsocket = 127.0.0.1:0\nprocesses = %(workers + 1)\n\
             listen = %(%k / 0)\nchdir = %q\nfor = a\nendif\nif-env = HOME\n",
            example_script()
        ),
    );
    let (code, _, err) = check(&ini, &[]);
    assert_eq!(code, Some(78), "{err}");
    let p = ini.display();
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        [
            format!("podmaster: {p}:4: processes: placeholder %(workers) refers to a key that is not set before it"),
            format!("podmaster: {p}:5: listen: %(%k / 0): division by zero"),
            format!("podmaster: {p}:6: chdir: unknown magic variable %q (write %% for a literal %)"),
            format!("podmaster: {p}:8: endif: closes the for at line 7, which takes endfor"),
            format!("podmaster: {p}:9: if-env: this block is never closed (add endif)"),
        ]
    );
}

#[test]
fn the_doubling_attack_fails_fast_with_one_line() {
    let d = TempDir::new("logic-double");
    let mut text = format!("[uwsgi]\npython-worker-override = {}\nsocket = 127.0.0.1:0\n", example_script());
    text += &format!("v1 = {}\n", "x".repeat(4096));
    for i in 2..=28 {
        text += &format!("v{i} = %(v{})%(v{})\n", i - 1, i - 1);
    }
    let ini = d.write("bomb.ini", &text);
    let t = Instant::now();
    let (code, _, err) = check(&ini, &[]);
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    assert_eq!(code, Some(78));
    // 4096 · 2^4 = 65 536 is the largest value allowed; v6 doubles it.
    assert_eq!(
        err,
        format!("podmaster: {}:9: v6: the value grows to more than 65536 bytes once expanded\n", ini.display())
    );
}

#[test]
fn yaml_refuses_logic_keys() {
    let d = TempDir::new("logic-yaml");
    let y = d.write("a.yaml", "uwsgi:\n  processes: 2\n  if-env: HOME\n  endif: true\n");
    let mut entries = Vec::new();
    let err = yaml::load_yaml_spec(y.to_str().unwrap(), &mut entries).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}: uwsgi.if-env: configuration logic (if-*, for, endif, ...) is supported in ini files only; \
             put these lines in an ini file (a ConfigMap can hold one as uwsgi.ini)",
            y.display()
        )
    );
    let cm = d.write("cm.yaml", "apiVersion: v1\nkind: ConfigMap\ndata:\n  for: \"a b\"\n");
    let err = yaml::load_yaml_spec(cm.to_str().unwrap(), &mut Vec::new()).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}: data.for: configuration logic", cm.display())), "{err}");
    // An ini document inside a ConfigMap has it all.
    let cm = d.write(
        "cm-ini.yaml",
        "apiVersion: v1\nkind: ConfigMap\ndata:\n  uwsgi.ini: |\n    [uwsgi]\n    for = 1 2\n    listen = %(_)\n    endfor\n",
    );
    let mut entries = Vec::new();
    yaml::load_yaml_spec(cm.to_str().unwrap(), &mut entries).unwrap();
    let got: Vec<&str> = entries.iter().map(|e| e.value.as_str()).collect();
    assert_eq!(got, ["1", "2"]);
}

// ---------------------------------------------------------------------------
// Generated inputs

/// Longest one generated case may take (a debug build on a busy machine).
const CASE_DEADLINE: Duration = Duration::from_secs(2);

/// [`bounded_within`] [`CASE_DEADLINE`].
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    bounded_within("load", CASE_DEADLINE, f)
}

fn cases(n: u32) -> PtConfig {
    proptest_cases(n)
}

/// A directory with a file, a subdirectory and a list for the generated
/// configs to test and loop over (built once, only read).
fn fixture() -> &'static PathBuf {
    static F: OnceLock<PathBuf> = OnceLock::new();
    F.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("podmaster-logic-props-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("list.txt"), "one\ntwo\n").unwrap();
        std::fs::write(d.join("inc.ini"), "[uwsgi]\nlisten = 5\n[other]\nx = %(_)\n").unwrap();
        std::fs::canonicalize(d).unwrap()
    })
}

fn shown() -> PathBuf {
    fixture().join("c.ini")
}

fn load(text: &str) -> (Vec<Entry>, Result<(), ConfigError>) {
    let mut entries = Vec::new();
    let r = ini::load_text(text, &shown(), &shown(), "uwsgi", &mut entries, &mut ini::Chain::default());
    (entries, r)
}

fn logic_line() -> impl Strategy<Value = String> {
    let opener = select(vec![
        "if-env = PATH",
        "if-env = PODMASTER_PROPS_UNSET",
        "if-not-env = HOME",
        "if-exists = sub",
        "if-not-file = list.txt",
        "if-dir = %(_)",
        "if-opt = k",
        "if-not-opt = k=1",
        "if-reload",
        "for = a b c",
        "for = %(_) %(k)",
        "for-times = 7",
        "for-times = %(k + 2)",
        "for-glob = *",
        "for-readline = list.txt",
        "for-readline = missing.txt",
    ]);
    let closer = select(vec!["endif", "endfor", "end", "else", "endif =", "end-for ="]);
    let value = select(vec![
        "%(_)",
        "%(k)",
        "%(k + 1)",
        "%(_ k)",
        "%(k * %k)",
        "%(k / 0)",
        "%q",
        "%k",
        "%d%n",
        "50%",
        "100%%",
        "% x",
        "$(PATH)",
        "$(PODMASTER_PROPS_UNSET)",
        "$(PODMASTER_PROPS_UNSET:-d)",
        "@(list.txt)",
        "%(",
        "plain",
        "",
    ]);
    let key = select(vec!["k", "listen", "socket", "name", "x"]);
    prop_oneof![
        3 => opener.prop_map(String::from),
        3 => closer.prop_map(String::from),
        4 => (key, value.clone()).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => value.prop_map(|v| format!("set-ph = k={v}")),
        1 => select(vec!["ini = :other", "include = inc.ini", "include = :uwsgi", "ini = inc.ini:other"]).prop_map(String::from),
        1 => select(vec!["[uwsgi]", "[other]", "; comment"]).prop_map(String::from),
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    /// Texts of logic keys and placeholders: no panic, a bounded time, and
    /// every error one line naming a file of the fixture (and a real line
    /// of this one); every entry names a line that exists.
    #[test]
    fn logic_texts_load_or_fail_cleanly(lines in prop::collection::vec(logic_line(), 0..24)) {
        let text = format!("[uwsgi]\n{}\n", lines.join("\n"));
        let t = text.clone();
        let (entries, result) = bounded(move || load(&t));
        let nlines = text.lines().count();
        if let Err(e) = result {
            for one in e.into_each() {
                let s = one.to_string();
                prop_assert!(!s.contains('\n'), "{s:?}");
                match &one.origin {
                    Some(Origin::File { path, line }) if *path == shown() => {
                        prop_assert!(*line <= nlines, "{s}: line {line} of {nlines}");
                    }
                    _ => prop_assert!(s.starts_with(&fixture().display().to_string()), "{s}"),
                }
            }
        }
        for e in &entries {
            if let Origin::File { path, line } = &e.origin {
                if *path == shown() {
                    prop_assert!(*line >= 2 && *line <= nlines, "{:?} at {line} of {nlines}", e.key);
                }
            }
        }
    }
}

/// One piece of a value with `%` in it, and what it expands to (`None`:
/// the value is an error).
fn percent_piece() -> impl Strategy<Value = (String, Option<String>)> {
    let dir = fixture().display().to_string();
    let k = cores().to_string();
    let fixed: Vec<(String, Option<String>)> = vec![
        ("%%".into(), Some("%".into())),
        ("% ".into(), Some("% ".into())),
        ("%-".into(), Some("%-".into())),
        ("%.".into(), Some("%.".into())),
        ("%/".into(), Some("%/".into())),
        ("%d".into(), Some(format!("{dir}/"))),
        ("%n".into(), Some("c".into())),
        ("%e".into(), Some("ini".into())),
        ("%s".into(), Some("c.ini".into())),
        ("%x".into(), Some("uwsgi".into())),
        ("%k".into(), Some(k.clone())),
        ("%(%k * 2)".into(), Some((2 * cores()).to_string())),
        ("%(7 - 2 * 3)".into(), Some("15".into())),
        ("%(7 / 0)".into(), None),
        ("%(nope)".into(), None),
        ("%q".into(), None),
        ("%Z".into(), None),
        ("%w".into(), None),
        ("%b".into(), None),
    ];
    prop_oneof![
        2 => "[A-Za-z0-9 ._:/-]{1,6}".prop_map(|s| (s.clone(), Some(s))),
        3 => select(fixed),
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    /// A value made of text and `%` sequences either expands to what each
    /// piece gives or fails with one error at its line; a trailing `%`
    /// stays a `%`.
    #[test]
    fn percent_values_expand_or_error_at_their_line(
        pieces in prop::collection::vec(percent_piece(), 1..6),
        trailing in any::<bool>(),
    ) {
        let mut written: String = pieces.iter().map(|(w, _)| w.as_str()).collect();
        let mut want: Option<String> =
            pieces.iter().try_fold(String::new(), |acc, (_, e)| e.as_ref().map(|e| acc + e));
        if trailing {
            written.push('%');
            want = want.map(|w| w + "%");
        }
        let text = format!("[uwsgi]\nchdir = {written}\n");
        let (entries, result) = bounded(move || load(&text));
        match (result, want) {
            (Ok(()), Some(want)) => {
                let got = entries.iter().find(|e| e.key == "chdir").map(|e| e.value.clone());
                // Lines are trimmed: a value ending in a space loses it.
                prop_assert_eq!(got.as_deref(), Some(want.trim()), "written {:?}", written);
            }
            (Err(e), None) => {
                prop_assert_eq!(e.count(), 1, "{}", e);
                let s = e.to_string();
                prop_assert!(s.starts_with(&format!("{}:2: chdir: ", shown().display())), "{s}");
            }
            (Ok(()), None) => prop_assert!(false, "{written:?} should have failed"),
            (Err(e), Some(want)) => prop_assert!(false, "{written:?} should give {want:?}: {e}"),
        }
    }
}

/// The README's example of this section loads and does what it says.
#[test]
fn readme_example_loads() {
    let readme = std::fs::read_to_string(format!("{ROOT}/README.md")).unwrap();
    let section = &readme[readme.find("### Config logic and magic variables").unwrap()..];
    let start = section.find("```ini\n").unwrap() + "```ini\n".len();
    let example = &section[start..start + section[start..].find("```").unwrap()];
    let d = TempDir::new("logic-readme");
    let ini = d.write("app.ini", example);
    let mut entries = Vec::new();
    ini::load_spec(ini.to_str().unwrap(), &mut entries).unwrap();
    let values = |k: &str| entries.iter().filter(|e| e.key == k).map(|e| e.value.clone()).collect::<Vec<_>>();
    assert_eq!(values("socket"), ["127.0.0.1:8001", "127.0.0.1:8002"]);
    assert_eq!(values("processes"), [(2 * cores()).to_string()]);
}
