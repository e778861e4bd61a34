//! A corpus of malformed configurations fed to the real binary. Each must
//! give exit 78 and exactly one line naming where the problem is, never a
//! panic, never a started worker, and finish promptly.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

enum Input {
    /// File name and contents, passed as `FLAG path`.
    File(&'static str, &'static str, Vec<u8>),
    /// Raw command-line arguments (paths relative to the scratch dir).
    Args(Vec<String>),
    /// A directory of files (name, contents) passed with --config-dir.
    Dir(Vec<(&'static str, &'static str)>),
}

struct Case {
    name: &'static str,
    input: Input,
    /// Text the single error line must contain (besides the origin).
    expect: &'static str,
}

fn ini(name: &'static str, body: &str, expect: &'static str) -> Case {
    Case { name, input: Input::File("c.ini", "--ini", format!("[uwsgi]\n{body}\n").into_bytes()), expect }
}

fn raw(name: &'static str, file: &'static str, flag: &'static str, bytes: Vec<u8>, expect: &'static str) -> Case {
    Case { name, input: Input::File(file, flag, bytes), expect }
}

fn yaml(name: &'static str, body: &str, expect: &'static str) -> Case {
    raw(name, "c.yaml", "--yaml", body.as_bytes().to_vec(), expect)
}

fn corpus() -> Vec<Case> {
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut bad_utf8_line3 = b"[uwsgi]\nprocesses = 2\nchdir = /srv/".to_vec();
    bad_utf8_line3.extend([0xff, 0xfe, b'\n']);
    let huge_line = format!("processes = {}", "9".repeat(2 * 1024 * 1024));
    let ten_mb = vec![b'#'; 10 * 1024 * 1024];
    let deep_yaml = format!("uwsgi: {}{}", "[".repeat(20_000), "]".repeat(20_000));
    let deep_json = format!("{{\"uwsgi\": {}{}}}", "[".repeat(20_000), "]".repeat(20_000));
    let laughs = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n\
                  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n\
                  uwsgi: {processes: *h}\n";
    vec![
        raw("binary garbage ini", "c.ini", "--ini", garbage.clone(), "not valid UTF-8"),
        raw("NUL byte", "c.ini", "--ini", b"[uwsgi]\nprocesses = 2\0\n".to_vec(), "NUL byte"),
        raw("invalid UTF-8 on line 3", "c.ini", "--ini", bad_utf8_line3, ":3: not valid UTF-8"),
        ini("2 MB line", &huge_line, "processes: expected a whole number"),
        raw("10 MB file", "c.ini", "--ini", ten_mb, "over the 4194304-byte limit"),
        raw("empty file", "c.ini", "--ini", vec![], "no [uwsgi] section"),
        raw("other section only", "c.ini", "--ini", b"[app]\nprocesses = 1\n".to_vec(), "no [uwsgi] section"),
        ini("include cycle via other", "include = d.ini", "include cycle"),
        ini("include itself", "include = c.ini", "include cycle"),
        ini("include missing", "include = nope.ini", "cannot read config file"),
        ini("unknown key", "procesess = 4", "unknown option; did you mean `processes`?"),
        ini("unknown key no hint", "zzzzzz = 1", "zzzzzz: unknown option"),
        ini("unsupported uWSGI option", "emperor = /etc/uwsgi/vassals", "not supported by podmaster"),
        ini("harakiri", "harakiri = 30", "harakiri needs podmaster's WSGI worker"),
        ini("processes zero", "processes = 0", "expected 1 to 1024 workers"),
        ini("processes negative", "processes = -1", "expected a whole number"),
        ini("worker-nice 20", "worker-nice = 20", "expected a nice increment from 0 to 19"),
        ini("worker-nice negative", "worker-nice = -5", "worker-nice: expected a whole number"),
        ini("processes overflow", "processes = 99999999999999999999999", "expected a whole number"),
        ini("listen not a number", "listen = lots", "listen: expected a whole number"),
        ini("negative drain-delay", "drain-delay = -5", "expected seconds"),
        ini("infinite mercy", "worker-reload-mercy = inf", "expected seconds"),
        ini("unknown signal", "worker-stop-signal = SIGFOO", "unknown signal"),
        ini("SIGKILL as stop signal", "worker-stop-signal = KILL", "cannot be a graceful stop signal"),
        ini("ready-workers 150%", "ready-workers = 150%", "expected a percentage"),
        ini("ready-workers words", "ready-workers = most", "expected a number of workers"),
        ini("ready mode maybe", "worker-ready-mode = maybe", "expected `notify` or `spawn`"),
        ini("port out of range", "socket = 1.2.3.4:99999", "is not a number from 0 to 65535"),
        ini("unclosed IPv6", "socket = [::1", "expected [IPv6-address]:port"),
        ini("empty socket", "socket =", "empty socket address"),
        ini("UNIX path too long", &format!("socket = /tmp/{}", "s".repeat(120)), "the limit is 107"),
        ini("unset env var", "chdir = $(PODMASTER_CORPUS_UNSET)", "PODMASTER_CORPUS_UNSET is not set"),
        ini("undefined placeholder", "chdir = %(nothing)", "placeholder %(nothing)"),
        ini("missing @file", "chdir = @(missing.txt)", "missing.txt"),
        ini("unclosed $(", "chdir = $(HOME", "unclosed `$(`"),
        yaml("invalid YAML", "uwsgi: [\n", "invalid YAML"),
        yaml("deeply nested YAML", &deep_yaml, ":1: nested deeper than 100 levels"),
        yaml("billion laughs", laughs, "YAML aliases"),
        yaml("uwsgi is a scalar", "uwsgi: 5\n", "expected a mapping of options"),
        yaml("option is a mapping", "uwsgi:\n  processes: {a: 1}\n", "expected a value or a list"),
        yaml("no uwsgi key", "app:\n  processes: 2\n", "no `uwsgi:` mapping"),
        yaml("YAML bad value", "uwsgi:\n  processes: many\n", "uwsgi.processes: expected a whole number"),
        yaml("ConfigMap without data", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "no `data` mapping"),
        yaml(
            "ConfigMap int value",
            "apiVersion: v1\nkind: ConfigMap\ndata:\n  processes: 2\n",
            "data.processes: ConfigMap data values must be strings",
        ),
        yaml(
            "ConfigMap bad option",
            "apiVersion: v1\nkind: ConfigMap\ndata:\n  processes: \"abc\"\n",
            "data.processes: expected a whole number",
        ),
        yaml(
            "ConfigMap embedded ini bad",
            "apiVersion: v1\nkind: ConfigMap\ndata:\n  uwsgi.ini: |\n    [uwsgi]\n    processes = x\n",
            "[data.uwsgi.ini]:2: processes: expected a whole number",
        ),
        yaml("ConfigMap unknown option", "apiVersion: v1\nkind: ConfigMap\ndata:\n  proceses: \"2\"\n", "did you mean"),
        raw("binary garbage YAML", "c.yaml", "--yaml", garbage, "not valid UTF-8"),
        raw("invalid JSON", "c.json", "--json", b"{\"uwsgi\": ".to_vec(), "invalid JSON"),
        raw("deeply nested JSON", "c.json", "--json", deep_json.into_bytes(), ":1: nested deeper than 100 levels"),
        raw("JSON root array", "c.json", "--json", b"[1, 2]".to_vec(), "no `uwsgi:` mapping"),
        Case {
            name: "missing config dir",
            input: Input::Args(vec!["--config-dir".into(), "nodir".into()]),
            expect: "cannot read config directory",
        },
        Case {
            name: "config dir bad value",
            input: Input::Dir(vec![("processes", "abc\n")]),
            expect: "processes:1: processes: expected a whole number",
        },
        Case { name: "config dir unknown key", input: Input::Dir(vec![("wrokers", "4\n")]), expect: "unknown option" },
        Case {
            name: "unknown extension",
            input: Input::Args(vec!["app.conf".into()]),
            expect: "cannot tell the config format",
        },
        Case {
            name: "ini is a directory",
            input: Input::Args(vec!["--ini".into(), ".".into()]),
            expect: "not a regular file",
        },
    ]
}

fn args_for(case: &Case, dir: &Path) -> (Vec<String>, String) {
    let d = |p: &str| dir.join(p).display().to_string();
    match &case.input {
        Input::File(name, flag, bytes) => {
            std::fs::write(dir.join(name), bytes).unwrap();
            (vec![flag.to_string(), d(name)], d(name))
        }
        Input::Args(a) => {
            let v: Vec<String> = a.iter().map(|x| if x.starts_with('-') { x.clone() } else { d(x) }).collect();
            let origin = v.last().cloned().unwrap();
            (v, origin)
        }
        Input::Dir(files) => {
            let cm = dir.join("cm");
            std::fs::create_dir_all(&cm).unwrap();
            for (n, t) in files {
                std::fs::write(cm.join(n), t).unwrap();
            }
            (vec!["--config-dir".into(), cm.display().to_string()], cm.display().to_string())
        }
    }
}

#[test]
fn malformed_inputs_exit_78_with_one_line_naming_the_origin() {
    let cases = corpus();
    assert!(cases.len() >= 40, "corpus has {} cases", cases.len());
    let mut slowest = (Duration::ZERO, "");
    let mut failures = Vec::new();
    for case in &cases {
        let dir = TempDir::new("corpus");
        // A second file for the include-cycle case.
        std::fs::write(dir.path().join("d.ini"), "[uwsgi]\ninclude = c.ini\n").unwrap();
        let (args, origin) = args_for(case, dir.path());
        let started = Instant::now();
        let mut cmd = Command::new(BIN);
        // A valid worker and socket on the command line, so that only the
        // malformed source can be what fails.
        cmd.args(&args)
            .args(["--python-worker-override", &example_script(), "--socket", "127.0.0.1:0"])
            .current_dir(dir.path())
            .env_remove("PODMASTER_CORPUS_UNSET")
            .stdin(Stdio::null());
        let mut inst = Instance::spawn(cmd, dir.path().join("stderr.log"));
        let st = inst.wait_exit(Duration::from_secs(10));
        let took = started.elapsed();
        if took > slowest.0 {
            slowest = (took, case.name);
        }
        let err = inst.logs();
        let lines: Vec<&str> = err.lines().collect();
        let ok = st.code() == Some(78)
            && lines.len() == 1
            && lines[0].starts_with("podmaster: ")
            && lines[0].contains(case.expect)
            && (lines[0].contains(&origin)
                || lines[0].contains(origin.trim_start_matches(&format!("{}/", dir.path().display()))))
            && lines[0].chars().count() < 600
            && !err.contains("worker spawned");
        eprintln!("{:>28}: {}", case.name, lines.first().copied().unwrap_or("").chars().take(160).collect::<String>());
        if !ok {
            failures.push(format!(
                "{}: exit {:?}, stderr:\n{}",
                case.name,
                st.code(),
                err.chars().take(600).collect::<String>()
            ));
        }
    }
    eprintln!("corpus: {} cases, slowest {:?} ({})", cases.len(), slowest.0, slowest.1);
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n---\n"));
}
