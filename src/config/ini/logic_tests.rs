//! Configuration logic in ini files, one table per rule: every test true
//! and false with its `%(_)`, `else`, nesting, each loop, `set-ph`,
//! `:section` includes, print, and every structural error with its exact
//! line. Limits are in `limit_tests`.

use super::*;

/// A directory with what the tests look at: a file, a directory, a list.
pub(super) fn fixture(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("podmaster-logic-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::create_dir_all(d.join("conf.d")).unwrap();
    std::fs::write(d.join("file.txt"), "text\n").unwrap();
    std::fs::write(d.join("hosts.txt"), "alpha\n\n  beta  \r\ngamma").unwrap();
    std::fs::write(d.join("conf.d/b.ini"), "[uwsgi]\nlisten = 2\n").unwrap();
    std::fs::write(d.join("conf.d/a.ini"), "[uwsgi]\nlisten = 1\n").unwrap();
    std::fs::canonicalize(d).unwrap()
}

/// Entries as (key, value, line) and the errors, one line each.
pub(super) type Loaded = (Vec<(String, String, usize)>, Vec<String>);

/// Loads `text` as `c.ini` in `dir` (section `uwsgi`, or `FILE:section`).
pub(super) fn load_in(dir: &Path, text: &str, section: Option<&str>) -> Loaded {
    let p = dir.join("c.ini");
    std::fs::write(&p, text).unwrap();
    let spec = match section {
        Some(s) => format!("{}:{s}", p.display()),
        None => p.display().to_string(),
    };
    let mut entries = Vec::new();
    let errors = match load_spec(&spec, &mut entries) {
        Ok(()) => Vec::new(),
        Err(e) => e.into_each().iter().map(ToString::to_string).collect(),
    };
    let got = entries
        .into_iter()
        .map(|e| {
            let line = if let Origin::File { line, .. } = e.origin { line } else { 0 };
            (e.key, e.value, line)
        })
        .collect();
    (got, errors)
}

fn values(loaded: &Loaded, key: &str) -> Vec<String> {
    loaded.0.iter().filter(|(k, _, _)| k == key).map(|(_, v, _)| v.clone()).collect()
}

const UNSET: &str = "PODMASTER_LOGIC_TEST_SURELY_UNSET";

fn set_test_env() {
    // SAFETY: test-only variables that no other test reads or writes;
    // set to the same values by every caller.
    unsafe {
        std::env::set_var("PODMASTER_LOGIC_TEST_VAL", "prod");
        std::env::set_var("PODMASTER_LOGIC_TEST_EMPTY", "");
    }
}

#[test]
fn every_test_true_and_false_with_its_context() {
    set_test_env();
    let d = fixture("tests");
    let host = nix::unistd::gethostname().unwrap().to_string_lossy().into_owned();
    let (val, empty) = ("PODMASTER_LOGIC_TEST_VAL", "PODMASTER_LOGIC_TEST_EMPTY");
    let abs_file = d.join("file.txt").display().to_string();
    // (opener, `%(_)` in the body when it applies; None: skipped)
    let cases: Vec<(String, Option<&str>)> = vec![
        (format!("if-env = {val}"), Some("prod")),
        (format!("ifenv = {val}"), Some("prod")),
        (format!("if-env = {empty}"), None),
        (format!("if-env = {UNSET}"), None),
        (format!("if-env = {val}=prod"), Some("prod")),
        (format!("if-env = {val}=dev"), None),
        (format!("if-env = {empty}="), Some("")),
        (format!("if-not-env = {UNSET}"), Some("")),
        (format!("if-not-env = {empty}"), Some("")),
        (format!("if-not-env = {val}"), None),
        (format!("if-not-env = {val}=dev"), Some("prod")),
        (format!("if-not-env = {val}=prod"), None),
        ("if-exists = sub".into(), Some("sub")),
        ("if-exists = file.txt".into(), Some("file.txt")),
        (format!("if-exists = {abs_file}"), Some(&abs_file)),
        ("ifexists = missing".into(), None),
        ("if-not-exists = missing".into(), Some("missing")),
        ("if-not-exists = sub".into(), None),
        ("if-file = file.txt".into(), Some("file.txt")),
        ("if-file = sub".into(), None),
        ("if-not-file = sub".into(), Some("sub")),
        ("if-not-file = file.txt".into(), None),
        ("if-dir = sub".into(), Some("sub")),
        ("if-directory = sub".into(), Some("sub")),
        ("ifdir = file.txt".into(), None),
        ("if-not-dir = file.txt".into(), Some("file.txt")),
        ("if-not-dir = sub".into(), None),
        ("if-opt = processes".into(), Some("4")),
        ("if-opt = processes=4".into(), Some("4")),
        ("if-opt = processes=5".into(), None),
        ("if-opt = mode=blue".into(), Some("blue")),
        ("if-opt = nope".into(), None),
        ("if-not-opt = nope".into(), Some("")),
        ("if-not-opt = processes".into(), None),
        ("if-not-opt = processes=5".into(), Some("4")),
        (format!("if-hostname = {host}"), Some(&host)),
        ("if-hostname = not-this-host".into(), None),
        ("if-not-hostname = not-this-host".into(), Some("not-this-host")),
    ];
    for (opener, want) in cases {
        let text = format!("[uwsgi]\nprocesses = 4\nset-ph = mode=blue\n{opener}\nlisten = [%(_)]\nendif\nafter = 1\n");
        let got = load_in(&d, &text, None);
        assert!(got.1.is_empty(), "{opener}: {:?}", got.1);
        let want: Vec<String> = want.map(|w| format!("[{w}]")).into_iter().collect();
        assert_eq!(values(&got, "listen"), want, "{opener}");
        assert_eq!(values(&got, "after"), ["1"], "{opener}");
    }
}

#[test]
fn else_branches_and_nesting() {
    let d = fixture("nest");
    let cases = [
        (format!("if-env = {UNSET}\na = then\nelse\na = else %(_)\nendif\n"), vec!["else %(_)"]),
        ("if-exists = sub\na = then %(_)\nelse =\na = else\nend-if =\n".into(), vec!["then sub"]),
        ("for = x y\nif-exists = sub\na = %(_)\nendif\na = %(_)\nendfor\n".into(), vec!["sub", "x", "sub", "y"]),
        (
            "if-dir = sub\nfor = 1 2\nfor-times = 2\na = %(_)\nend\na = o%(_)\nendfor\na = %(_)\nendif\n".into(),
            vec!["1", "2", "o1", "1", "2", "o2", "sub"],
        ),
        (format!("if-env = {UNSET}\nif-exists = sub\na = 1\nelse\na = 2\nendif\nelse\na = 3\nendif\n"), vec!["3"]),
    ];
    for (body, want) in cases {
        let got = load_in(&d, &format!("[uwsgi]\n{body}"), None);
        if body.contains("else %(_)") {
            // `%(_)` has no value in an else branch outside any block.
            assert_eq!(got.1.len(), 1, "{body}: {:?}", got.1);
            assert!(got.1[0].ends_with("a: %(_) has a value only inside an if-* or for block"), "{:?}", got.1);
            continue;
        }
        assert!(got.1.is_empty(), "{body}: {:?}", got.1);
        assert_eq!(values(&got, "a"), want, "{body}");
    }
}

#[test]
fn loops_give_each_item() {
    let d = fixture("loops");
    let cases = [
        (
            "for = 3031 3032  3033\nsocket = 127.0.0.1:%(_)\nendfor",
            "socket",
            vec!["127.0.0.1:3031", "127.0.0.1:3032", "127.0.0.1:3033"],
        ),
        ("for =\nsocket = never\nendfor", "socket", vec![]),
        ("for-glob = conf.d/*.ini\ninclude = %(_)\nendfor", "listen", vec!["1", "2"]),
        ("for-glob = conf.d/*.yaml\nsocket = %(_)\nendfor", "socket", vec![]),
        ("for-glob = *\nsocket = %(_)\nendfor", "socket", vec!["c.ini", "conf.d/", "file.txt", "hosts.txt", "sub/"]),
        ("for-readline = hosts.txt\nsocket = %(_):80\nendfor", "socket", vec!["alpha:80", "beta:80", "gamma:80"]),
        ("for-times = 3\nsocket = :%(_ + 8000)\nendfor", "socket", vec![":8001", ":8002", ":8003"]),
        ("for-times = 0\nsocket = never\nendfor", "socket", vec![]),
        ("set-ph = ports=1 2\nfor = %(ports)\nsocket = :%(_)\nend-for", "socket", vec![":1", ":2"]),
    ];
    for (body, key, want) in cases {
        let got = load_in(&d, &format!("[uwsgi]\n{body}\n"), None);
        assert!(got.1.is_empty(), "{body}: {:?}", got.1);
        assert_eq!(values(&got, key), want, "{body}");
    }
    // Each repetition names the body's own line.
    let got = load_in(&d, "[uwsgi]\nfor = a b\nsocket = :%(_)\nendfor\n", None);
    assert_eq!(got.0, [("socket".into(), ":a".into(), 3), ("socket".into(), ":b".into(), 3)]);
}

#[test]
fn skipped_bodies_are_not_expanded() {
    let d = fixture("skip");
    let text = format!(
        "[uwsgi]\nif-env = {UNSET}\nchdir = $({UNSET})\nx = %q %(nope) @(missing) %(1 / 0)\n\
         for = %(nope)\nendfor\nendif\nfor =\ny = %(nope)\nendfor\nprocesses = 2\n"
    );
    let got = load_in(&d, &text, None);
    assert!(got.1.is_empty(), "{:?}", got.1);
    assert_eq!(got.0, [("processes".into(), "2".into(), 11)]);
}

#[test]
fn set_placeholder_print_and_sections() {
    let d = fixture("setph");
    let text = "[uwsgi]\nset-placeholder = base=/srv/app\nset-ph = port = 8080\nchdir = %(base)\n\
                print = starting %n in %(base)\nini = :extra\ninclude = :extra\nset-ph = base=/other\n\
                [extra]\nsocket = :%(port)\n";
    let got = load_in(&d, text, None);
    assert!(got.1.is_empty(), "{:?}", got.1);
    // The definitions stay what they are (option entries, checked when
    // resolved); %(NAME) reads the first one, as uWSGI does.
    assert_eq!(values(&got, "set-placeholder"), ["base=/srv/app"]);
    assert_eq!(values(&got, "set-ph"), ["port = 8080", "base=/other"]);
    assert_eq!(values(&got, "chdir"), ["/srv/app"]);
    assert_eq!(values(&got, "socket"), [":8080", ":8080"]);
    assert!(values(&got, "print").is_empty(), "print sets nothing");
    // A placeholder named like an option, and one an if-opt tests.
    let text = "[uwsgi]\nset-ph = processes=9\nlisten = %(processes)\nif-opt = processes=9\nname = %(_)\nendif\n";
    let named = load_in(&d, text, None);
    assert!(named.1.is_empty(), "{:?}", named.1);
    assert_eq!((values(&named, "listen"), values(&named, "name")), (vec!["9".into()], vec!["9".into()]));
    // `FILE:section` reads that section, `%x` names it.
    let p = d.join("c.ini");
    let got = load_in(&d, "[uwsgi]\nname = u\n[prod]\nname = %x-%o\n", Some("prod"));
    assert_eq!(got.0, [("name".into(), format!("prod-{}", p.display()), 4)]);
}

#[test]
fn structural_errors_name_their_line() {
    let d = fixture("struct");
    let p = d.join("c.ini").display().to_string();
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("endif", vec![format!("{p}:2: endif: no if-* block is open here")]),
        ("endfor =", vec![format!("{p}:2: endfor: no for block is open here")]),
        ("end", vec![format!("{p}:2: end: no block is open here")]),
        ("else", vec![format!("{p}:2: else: no if-* block is open here")]),
        ("if-exists = sub\nx = 1", vec![format!("{p}:2: if-exists: this block is never closed (add endif)")]),
        ("for = a\nfor = b\nendfor", vec![format!("{p}:2: for: this block is never closed (add endfor)")]),
        ("for = a\nx = %(_)\nendif", vec![format!("{p}:4: endif: closes the for at line 2, which takes endfor")]),
        ("if-dir = sub\nendfor", vec![format!("{p}:3: endfor: closes the if-dir at line 2, which takes endif")]),
        (
            "for = a\nelse\nendfor",
            vec![format!("{p}:3: else: else belongs to an if-* block, not to the for at line 2")],
        ),
        ("if-dir = sub\nelse\nelse\nendif", vec![format!("{p}:4: else: the if-dir at line 2 already has an else")]),
        (
            "if-reload\nx = 1\nendif",
            vec![format!("{p}:2: if-reload: not supported: podmaster reads its configuration afresh at every reload")],
        ),
        (
            "if-plugin = python3\nx = 1\nendif",
            vec![format!("{p}:2: if-plugin: not supported: podmaster has no plugins")],
        ),
        ("if-env =\nendif", vec![format!("{p}:2: if-env: needs a value to test")]),
        ("for-times = x\nendfor", vec![format!("{p}:2: for-times: expected a whole number, found \"x\"")]),
        ("for-glob =\nendfor", vec![format!("{p}:2: for-glob: needs a pattern")]),
        (
            "for-readline = missing.txt\nendfor",
            vec![format!(
                "{p}:2: for-readline: {}/missing.txt: cannot read config file: No such file or directory (os error 2)",
                d.display()
            )],
        ),
        ("ini = :nosuch", vec![format!("{p}:0: no [nosuch] section in this file")]),
        (
            "include = :uwsgi",
            vec![format!("{p}:0: include cycle: this file includes itself (directly or through others)")],
        ),
    ];
    for (body, want) in cases {
        let got = load_in(&d, &format!("[uwsgi]\n{body}\n"), None);
        assert_eq!(got.1, want, "{body}");
    }
    // A body left open still runs (so its own problems are reported too).
    let got = load_in(&d, "[uwsgi]\nif-dir = sub\nlisten = %(nope)\n", None);
    assert_eq!(
        got.1,
        [
            format!("{p}:2: if-dir: this block is never closed (add endif)"),
            format!("{p}:3: listen: placeholder %(nope) refers to a key that is not set before it"),
        ]
    );
}

#[test]
fn every_bad_value_of_a_file_is_reported_and_good_lines_kept() {
    let d = fixture("many");
    let p = d.join("c.ini").display().to_string();
    let text = format!(
        "[uwsgi]\nprocesses = %(nope)\nsocket = :1\nchdir = $({UNSET})\nlisten = %(processes * 2)\n\
         x = %q\ny = %(3 / 0)\nz = @(missing.txt)\nfor = a b\nw = %(_)%(gone)\nendfor\nlisten = 9\n"
    );
    let got = load_in(&d, &text, None);
    let missing = d.join("missing.txt");
    assert_eq!(
        got.1,
        [
            format!("{p}:2: processes: placeholder %(nope) refers to a key that is not set before it"),
            format!("{p}:4: chdir: environment variable {UNSET} is not set (use $({UNSET}:-default) for a fallback)"),
            // Its value failed at line 2: not reported again.
            format!("{p}:6: x: unknown magic variable %q (write %% for a literal %)"),
            format!("{p}:7: y: %(3 / 0): division by zero"),
            format!(
                "{p}:8: z: @(missing.txt): {}: cannot read config file: No such file or directory (os error 2)",
                missing.display()
            ),
            // Once, though the loop ran the line twice.
            format!("{p}:10: w: placeholder %(gone) refers to a key that is not set before it"),
        ]
    );
    assert_eq!(got.0, [("socket".into(), ":1".into(), 3), ("listen".into(), "9".into(), 12)]);
}
