//! Property tests for every parser that reads bytes from outside the
//! process (issue 12, "Trust boundaries"): the ini front end (line pass,
//! rust-ini, placeholders), the YAML/JSON front end (`uwsgi:` mappings,
//! ConfigMap manifests, the nesting pre-check), environment variables and
//! command-line values, socket specs, the socket-activation variables and
//! `LISTEN_FDNAMES`, and every typed option value.
//!
//! Properties: no panic; every case finishes within [`CASE_DEADLINE`] (run
//! on a helper thread, so a hang fails the case instead of stalling the
//! suite); a configuration error is one line that starts with the origin
//! (`file:line: key`, `file: uwsgi.key`, `file: data.key`, `env VAR`,
//! `--flag`); and a valid value written in any source comes back unchanged
//! from [`Config::resolve`]. Case counts are modest so the whole file runs in
//! a few seconds in a debug build; `PROPTEST_CASES` raises them for a soak.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::signal::Signal;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::ValueTree;
use proptest::test_runner::Config as PtConfig;

use podmaster::config::options::{Kind, OPTIONS};
use podmaster::config::{self, Config, ConfigError, Entry, MemoryMark, ReadyWorkers, Source, Sources, cli, ini, yaml};
use podmaster::sockets::{self, SocketSpec};

use common::{TempDir, bounded_within, proptest_cases};

/// Longest one case may take. Parsing a config takes microseconds to a few
/// milliseconds; a second means a hang or a blow-up, with room to spare
/// for a debug build on a loaded CI machine.
const CASE_DEADLINE: Duration = Duration::from_secs(1);

/// [`bounded_within`] [`CASE_DEADLINE`].
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    bounded_within(what, CASE_DEADLINE, f)
}

fn cases(n: u32) -> PtConfig {
    proptest_cases(n)
}

/// Files the generated configs point at: includes, `@(file)` targets (a
/// FIFO, a directory and a device among them), and the file name shown in
/// errors. Built once; the tests only read it.
struct Fixture {
    _dir: TempDir,
    /// Canonical directory of every file below (`%d` without the slash).
    dir: PathBuf,
    /// `@(name)` targets that read fine: (name as written, expansion).
    files: Vec<(String, String)>,
    /// `@(name)` targets that must be refused with an error, not read.
    bad_files: Vec<String>,
    /// Set environment variables with UTF-8 values: (name, value).
    env: Vec<(String, String)>,
    hostname: String,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = TempDir::new("props");
        let dir = std::fs::canonicalize(tmp.path()).unwrap();
        let w = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        w("inc.ini", "[uwsgi]\nprocesses = 3\n[other]\nlisten = 5\n");
        w("self.ini", "[uwsgi]\ninclude = self.ini\n");
        w("one.txt", "one\n");
        w("two.txt", "two words");
        w("literal.txt", "%(x)$(Y)@(z)\n");
        w("empty.txt", "");
        std::fs::create_dir(dir.join("sub")).unwrap();
        nix::unistd::mkfifo(&dir.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let files = vec![
            ("one.txt".to_string(), "one".to_string()),
            ("two.txt".into(), "two words".into()),
            ("literal.txt".into(), "%(x)$(Y)@(z)".into()),
            ("empty.txt".into(), String::new()),
            (dir.join("one.txt").display().to_string(), "one".into()),
        ];
        let bad_files = ["missing.txt", "sub", "fifo", "/dev/zero", "/dev/urandom"].map(String::from).to_vec();
        // Variables that are set in any test run; their values are read,
        // not assumed. None is changed (no set_var in this file).
        let env: Vec<(String, String)> = ["PATH", "HOME", "CARGO_MANIFEST_DIR", "CARGO_PKG_NAME"]
            .iter()
            .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?)))
            .filter(|(_, v)| !v.contains(')'))
            .collect();
        assert!(!env.is_empty(), "none of PATH, HOME, CARGO_MANIFEST_DIR is set");
        assert!(std::env::var_os(UNSET_VAR).is_none(), "{UNSET_VAR} is set");
        let hostname = nix::unistd::gethostname().unwrap().to_string_lossy().into_owned();
        Fixture { _dir: tmp, dir, files, bad_files, env, hostname }
    })
}

/// An environment variable no test run sets.
const UNSET_VAR: &str = "PODMASTER_PROPTEST_SURELY_UNSET";

/// The file name ini text is shown as in errors, inside the fixture dir.
fn shown_ini() -> PathBuf {
    fixture().dir.join("c.ini")
}

/// Parses ini `text` as file `c.ini` of the fixture directory, section `uwsgi`.
fn load_ini(text: &str) -> Result<Vec<Entry>, ConfigError> {
    let shown = shown_ini();
    let mut entries = Vec::new();
    ini::load_text(text, &shown, &shown, "uwsgi", &mut entries, &mut ini::Chain::default())?;
    Ok(entries)
}

/// A unique scratch file name in the fixture directory.
fn scratch(ext: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    fixture().dir.join(format!("case-{n}.{ext}"))
}

/// A YAML or JSON spec loader (`yaml::load_yaml_spec`, `yaml::load_json_spec`).
type Loader = fn(&str, &mut Vec<Entry>) -> Result<(), ConfigError>;

/// Writes `text` to a fresh file and loads it with `load` (a YAML or JSON
/// spec loader); the file is removed afterwards.
fn load_doc(ext: &str, text: &str, sel: Option<&str>, load: Loader) -> (PathBuf, Result<Vec<Entry>, ConfigError>) {
    let path = scratch(ext);
    std::fs::write(&path, text).unwrap();
    let spec = match sel {
        Some(s) => format!("{}:{s}", path.display()),
        None => path.display().to_string(),
    };
    let mut entries = Vec::new();
    let r = load(&spec, &mut entries).map(|()| entries);
    let _ = std::fs::remove_file(&path);
    (path, r)
}

/// Like [`assert_origin`] for a document that may include the fixture's
/// ini files: an error inside one of those names that file instead.
fn assert_doc_origin(err: &ConfigError, doc: &std::path::Path) -> Result<(), TestCaseError> {
    let included = ["inc.ini", "self.ini"].map(|n| fixture().dir.join(n).display().to_string());
    for one in err.clone().into_each() {
        match included.iter().find(|p| one.to_string().starts_with(p.as_str())) {
            Some(p) => assert_origin(&one, p)?,
            None => assert_origin(&one, &doc.display().to_string())?,
        }
    }
    Ok(())
}

/// Each problem an error reports must be one line starting with `prefix`
/// (its origin).
fn assert_origin(err: &ConfigError, prefix: &str) -> Result<(), TestCaseError> {
    for one in err.clone().into_each() {
        let text = one.to_string();
        prop_assert!(!text.contains('\n'), "error spans lines: {text:?}");
        prop_assert!(text.starts_with(prefix), "error {text:?} does not start with {prefix:?}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Generators

/// Every name the option table knows, aliases included.
fn option_names() -> Vec<&'static str> {
    OPTIONS.iter().flat_map(|o| std::iter::once(o.name).chain(o.aliases.iter().copied())).collect()
}

/// Text without `%`, `$`, `@`, parentheses or line breaks, not starting or
/// ending with whitespace: survives the ini line pass and expansion as is.
fn plain_text() -> impl Strategy<Value = String> {
    "[A-Za-z0-9/._,:;#=+~éß日本-]([A-Za-z0-9 /._,:;#=+~éß日本-]{0,10}[A-Za-z0-9/._,:;#=+~éß日本-])?"
}

/// A command line for `worker-exec`/`attach-daemon`/`pyargv`, as argv and
/// as written with single quotes (a `'` inside a word is written `'\''`).
fn argv() -> impl Strategy<Value = (Vec<String>, String)> {
    prop::collection::vec("[^\n\r\u{0}]{0,8}", 1..5).prop_map(|words| {
        let line = words.iter().map(|w| format!("'{}'", w.replace('\'', r"'\''"))).collect::<Vec<_>>().join(" ");
        (words, line)
    })
}

/// Seconds as written and as the Duration they must become, within
/// `0..=365 days` (`positive`: above 0).
fn seconds(positive: bool) -> impl Strategy<Value = (String, Duration)> {
    let lo = if positive { 1 } else { 0 };
    prop_oneof![
        (lo..=31_536_000u32).prop_map(f64::from),
        (lo..=1_000_000u32).prop_map(|ms| f64::from(ms) / 1000.0),
        (1e-6f64..=31_536_000.0),
    ]
    .prop_map(|s| (format!("{s}"), Duration::from_secs_f64(s)))
}

/// A boolean as written (uWSGI's spellings, any case) and its meaning.
fn boolean() -> impl Strategy<Value = (String, bool)> {
    (select(vec!["true", "false", "on", "off", "yes", "no", "1", "0", "TRUE", "Off", "No", "enabled"]), any::<bool>())
        .prop_map(|(w, upper)| {
            let w = if upper { w.to_ascii_uppercase() } else { w.to_string() };
            let on = !matches!(w.to_ascii_lowercase().as_str(), "false" | "off" | "no" | "0");
            (w, on)
        })
}

fn signal() -> impl Strategy<Value = (String, Signal)> {
    let sigs: Vec<Signal> = Signal::iterator().filter(|s| !matches!(s, Signal::SIGKILL | Signal::SIGSTOP)).collect();
    (select(sigs), 0..4u8).prop_map(|(s, form)| {
        let name = s.as_str();
        let w = match form {
            0 => name.to_string(),
            1 => name.trim_start_matches("SIG").to_string(),
            2 => name.trim_start_matches("SIG").to_ascii_lowercase(),
            _ => (s as i32).to_string(),
        };
        (w, s)
    })
}

/// A valid socket spec that survives ini expansion (no `%`, `$`, `@(`),
/// as written and as parsed.
fn socket_spec() -> impl Strategy<Value = (String, SocketSpec)> {
    let label = "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?";
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| {
            let host = std::net::Ipv4Addr::from(ip).to_string();
            (format!("{host}:{port}"), SocketSpec::Tcp { host, port })
        }),
        any::<u16>().prop_map(|port| (format!(":{port}"), SocketSpec::Tcp { host: String::new(), port })),
        (prop::collection::vec(label, 1..4), any::<u16>()).prop_map(|(labels, port)| {
            let host = labels.join(".");
            (format!("{host}:{port}"), SocketSpec::Tcp { host, port })
        }),
        (any::<[u16; 8]>(), any::<u16>(), any::<bool>()).prop_map(|(seg, port, long)| {
            let ip = std::net::Ipv6Addr::from(seg);
            // The long form is accepted and shown in canonical form.
            let written =
                if long { seg.iter().map(|s| format!("{s:x}")).collect::<Vec<_>>().join(":") } else { ip.to_string() };
            (format!("[{written}]:{port}"), SocketSpec::Tcp { host: ip.to_string(), port })
        }),
        "/[A-Za-z0-9._:/-]{0,100}".prop_map(|p| (p.clone(), SocketSpec::Unix(PathBuf::from(p)))),
        "[A-Za-z0-9._:/-]{1,100}".prop_map(|n| (format!("@{n}"), SocketSpec::Abstract(n))),
        (0..=i32::MAX).prop_map(|n| (format!("fd://{n}"), SocketSpec::Fd(n))),
        "[A-Za-z0-9._:/-]{1,30}".prop_map(|n| (format!("sd://{n}"), SocketSpec::Sd(n))),
    ]
}

/// A valid value for option `name` (canonical name) as written, and what
/// [`observe`] must report for it after resolution.
fn valid_value(name: &'static str) -> BoxedStrategy<(String, String)> {
    let dbg = |v: &dyn std::fmt::Debug| format!("{v:?}");
    let path = || plain_text().prop_map(|p| (p.clone(), format!("{:?}", PathBuf::from(p))));
    match name {
        "socket" => socket_spec().prop_map(move |(w, s)| (w.clone(), dbg(&(w, s)))).boxed(),
        "master" => boolean().prop_map(|(w, _)| (w, "()".into())).boxed(),
        "reuse-port"
        | "reload-on-config-change"
        | "forward-to-group"
        | "lazy-apps"
        | "manage-script-name"
        | "need-app"
        | "harakiri-verbose"
        | "static-gzip-all"
        | "disable-logging"
        | "log-4xx"
        | "log-5xx" => boolean().prop_map(move |(w, b)| (w, dbg(&b))).boxed(),
        "max-requests" => (1..=u64::MAX).prop_map(move |n| (n.to_string(), dbg(&Some(n)))).boxed(),
        "max-requests-delta" => (0..=u64::MAX).prop_map(move |n| (n.to_string(), dbg(&n))).boxed(),
        "harakiri" => seconds(true).prop_map(move |(w, d)| (w, dbg(&Some(d)))).boxed(),
        // `/prefix=pkg.mod` (a module) or `/prefix=dir` (static files).
        "mount" => ("/[a-z]{1,6}", "[a-z_][a-z0-9_]{0,6}(\\.[a-z_][a-z0-9_]{0,6}){0,2}")
            .prop_map(move |(p, m)| (format!("{p}={m}"), dbg(&(p, m))))
            .boxed(),
        "static-map" => ("/[a-z]{1,6}", "/[a-z]{1,8}")
            .prop_map(move |(p, d)| (format!("{p}={d}"), dbg(&(p, std::path::PathBuf::from(d)))))
            .boxed(),
        // `REGEX SECONDS` (the regex may hold spaces) or `TYPE=SECONDS`.
        "static-expires"
        | "static-expires-mtime"
        | "static-expires-uri"
        | "static-expires-uri-mtime"
        | "static-expires-path-info"
        | "static-expires-path-info-mtime"
        | "static-expires-type"
        | "static-expires-type-mtime" => {
            let (on, from_mtime) = config::options::expires_kind(name).unwrap();
            let pattern = if on == config::ExpiresOn::Type {
                "[a-z]{1,6}/[a-z.+-]{1,10}".boxed()
            } else {
                // Starts with a character (a value's leading blanks are
                // trimmed), may hold a space (the seconds are the last word).
                "\\^?[a-z/]{1,6}( [a-z]{1,3})?(\\.\\*|\\\\\\.[a-z]{1,4}|\\[0-9a-f\\]\\+)?\\$?".boxed()
            };
            (pattern, 0..=315_360_000u64)
                .prop_map(move |(p, n)| {
                    let sep = if on == config::ExpiresOn::Type { "=" } else { " " };
                    let rule = config::ExpiresRule { on, pattern: p.clone(), seconds: n, from_mtime };
                    (format!("{p}{sep}{n}"), dbg(&rule))
                })
                .boxed()
        }
        // Dotted module names, as `import` takes them, with stray blanks around.
        "shared-import" => (prop::collection::vec("[A-Za-z_][A-Za-z0-9_]{0,8}", 1..4), " {0,2}")
            .prop_map(move |(parts, pad)| {
                let name = parts.join(".");
                (format!("{pad}{name}{pad}"), dbg(&name))
            })
            .boxed(),
        "processes" => prop_oneof![
            (1..=1024u32).prop_map(move |n| (n.to_string(), dbg(&(n, false)))),
            Just(("auto".to_string(), dbg(&(1u32, true)))),
        ]
        .boxed(),
        "max-processes" => (1..=1024u32).prop_map(move |n| (n.to_string(), dbg(&Some(n)))).boxed(),
        "worker-nice" => (0..=19i32).prop_map(move |n| (n.to_string(), dbg(&n))).boxed(),
        "worker-ready-warning" => seconds(false).prop_map(move |(w, d)| (w, dbg(&d))).boxed(),
        "pidfile" => path().boxed(),
        "env" => ("[A-Z_][A-Z0-9_]{0,10}", "[a-z0-9 =._-]{0,20}")
            .prop_map(move |(k, v)| (format!("{k}={v}"), dbg(&(k, v))))
            .boxed(),
        "set-placeholder" => ("[a-z][a-z0-9_]{0,10}", "[a-z0-9._-]{0,20}")
            .prop_map(move |(k, v)| (format!("{k}={v}"), "()".to_string()))
            .boxed(),
        "reload-on-cgroup-memory" => prop_oneof![
            (1..=99u32).prop_map(move |p| (format!("{p}%"), dbg(&Some(MemoryMark::Percent(p))))),
            (1..=1u64 << 20, select(vec![("M", 20u32), ("Mi", 20), ("G", 30), ("Gi", 30)])).prop_map(
                move |(n, (suffix, shift))| (format!("{n}{suffix}"), dbg(&Some(MemoryMark::Bytes(n << shift))))
            ),
        ]
        .boxed(),
        "listen" => (1..=i32::MAX).prop_map(move |n| (n.to_string(), dbg(&n))).boxed(),
        "max-failed-starts" => (1..=u32::MAX).prop_map(move |n| (n.to_string(), dbg(&n))).boxed(),
        "reload-on-rss" => (1..=1u64 << 30).prop_map(move |mb| (mb.to_string(), dbg(&Some(mb << 20)))).boxed(),
        "python-worker-override" | "chdir" | "virtualenv" | "pythonpath" | "touch-reload" | "touch-chain-reload" => {
            path().boxed()
        }
        "probe-socket" => plain_text().prop_map(move |p| (p.clone(), dbg(&Some(p)))).boxed(),
        "ready-workers" => prop_oneof![
            (1..=u32::MAX).prop_map(move |n| (n.to_string(), dbg(&ReadyWorkers::Count(n)))),
            (1..=100u32, any::<bool>()).prop_map(move |(p, sp)| {
                (format!("{p}{}%", if sp { " " } else { "" }), dbg(&ReadyWorkers::Percent(p)))
            }),
        ]
        .boxed(),
        "drain-delay" | "worker-reload-mercy" | "max-worker-lifetime-delta" | "exit-grace" => {
            seconds(false).prop_map(move |(w, d)| (w, dbg(&d))).boxed()
        }
        "chain-reload-timeout"
        | "respawn-backoff-max"
        | "config-check-interval"
        | "cgroup-check-interval"
        | "liveness-timeout" => seconds(true).prop_map(move |(w, d)| (w, dbg(&d))).boxed(),
        "max-worker-lifetime" => seconds(true).prop_map(move |(w, d)| (w, dbg(&Some(d)))).boxed(),
        "worker-stop-signal" => signal().prop_map(move |(w, s)| (w, dbg(&Some(s)))).boxed(),
        "chmod-socket" => prop_oneof![
            (0..=0o7777u32).prop_map(move |m| (format!("{m:o}"), dbg(&Some(m)))),
            (0..=0o7777u32).prop_map(move |m| (format!("0{m:o}"), dbg(&Some(m)))),
            Just(("true".to_string(), dbg(&Some(0o666u32)))),
        ]
        .boxed(),
        "chown-socket" => (any::<u32>(), prop::option::of(any::<u32>()))
            .prop_map(move |(u, g)| {
                let w = match g {
                    Some(g) => format!("{u}:{g}"),
                    None => u.to_string(),
                };
                (w, dbg(&Some((i64::from(u), g.map_or(-1, i64::from)))))
            })
            .boxed(),
        "uid" => any::<u32>().prop_map(move |u| (u.to_string(), dbg(&Some(u)))).boxed(),
        "gid" => any::<u32>().prop_map(move |g| (g.to_string(), dbg(&Some(g)))).boxed(),
        "log-format" => select(vec!["text", "json"]).prop_map(move |f| (f.to_string(), f.to_string())).boxed(),
        "log-level" => (select(vec!["error", "warn", "info", "debug", "trace"]), any::<bool>())
            .prop_map(move |(l, up)| (if up { l.to_ascii_uppercase() } else { l.to_string() }, l.to_string()))
            .boxed(),
        "worker-ready-mode" => {
            select(vec!["notify", "spawn"]).prop_map(move |m| (m.to_string(), m.to_string())).boxed()
        }
        "metric" => {
            ("[A-Za-z0-9_.-]{1,20}", prop::option::of(select(vec!["counter", "gauge", "absolute"])), any::<i64>())
                .prop_map(move |(n, t, init)| {
                    let mut w = format!("name={n}");
                    if let Some(t) = t {
                        w += &format!(",type={t}");
                    }
                    w += &format!(",initial_value={init}");
                    (w, dbg(&(n, t != Some("gauge") && t != Some("absolute"), init)))
                })
                .boxed()
        }
        "worker-exec" => argv().prop_map(move |(a, w)| (w, dbg(&Some(a)))).boxed(),
        "attach-daemon" | "pyargv" => argv().prop_map(move |(a, w)| (w, dbg(&a))).boxed(),
        // `pkg.mod` or `pkg.mod:callable`, as uWSGI's `module` takes them.
        "module" => {
            (prop::collection::vec("[A-Za-z_][A-Za-z0-9_]{0,8}", 1..4), prop::option::of("[A-Za-z_][a-z0-9_]{0,6}"))
                .prop_map(move |(parts, call)| {
                    let name = parts.join(".");
                    let written = call.as_ref().map_or(name.clone(), |c| format!("{name}:{c}"));
                    (written, dbg(&(Some(name), call)))
                })
                .boxed()
        }
        "wsgi-file" => path().boxed(),
        "callable" => "[A-Za-z_][A-Za-z0-9_]{0,10}".prop_map(move |c| (c.clone(), c)).boxed(),
        "threads" => (1..=1024u32).prop_map(move |n| (n.to_string(), dbg(&n))).boxed(),
        "buffer-size" => (512..=65535usize).prop_map(move |n| (n.to_string(), dbg(&n))).boxed(),
        "limit-post" => (0..=u64::MAX).prop_map(move |n| (n.to_string(), dbg(&(n > 0).then_some(n)))).boxed(),
        other => panic!("option {other} has no value generator: add one to valid_value"),
    }
}

/// What resolution made of option `name`, in the form [`valid_value`] uses.
fn observe(cfg: &Config, name: &str) -> String {
    let dbg = |v: &dyn std::fmt::Debug| format!("{v:?}");
    match name {
        "socket" => cfg.sockets.last().map(|s| dbg(&(s.name.clone(), s.spec.clone()))).unwrap_or_default(),
        "master" => "()".into(),
        "reuse-port" => dbg(&cfg.reuse_port),
        "reload-on-config-change" => dbg(&cfg.reload_on_config_change),
        "forward-to-group" => dbg(&cfg.forward_to_group),
        "lazy-apps" => dbg(&cfg.lazy_apps),
        "manage-script-name" => dbg(&cfg.manage_script_name),
        "need-app" => dbg(&cfg.need_app),
        "harakiri-verbose" => dbg(&cfg.harakiri_verbose),
        "static-gzip-all" => dbg(&cfg.static_gzip_all),
        "max-requests" => dbg(&cfg.max_requests),
        "max-requests-delta" => dbg(&cfg.max_requests_delta),
        "harakiri" => dbg(&cfg.harakiri),
        "mount" => {
            let m = cfg.mounts.last().unwrap();
            match &m.source {
                podmaster::config::AppSource::Module(name) => dbg(&(m.prefix.clone(), name.clone())),
                other => dbg(other),
            }
        }
        "static-map" => dbg(cfg.static_maps.last().unwrap()),
        n if n.starts_with("static-expires") => dbg(cfg.static_expires.last().unwrap()),
        "shared-import" => dbg(cfg.shared_imports.last().unwrap()),
        "processes" => dbg(&(cfg.processes, cfg.processes_auto)),
        "max-processes" => dbg(&cfg.max_processes),
        "worker-nice" => dbg(&cfg.worker_nice),
        "worker-ready-warning" => dbg(&cfg.worker_ready_warning),
        "pidfile" => dbg(cfg.pidfile.as_ref().unwrap()),
        "env" => dbg(cfg.env.last().unwrap()),
        "set-placeholder" => "()".into(),
        "reload-on-cgroup-memory" => dbg(&cfg.cgroup_memory_mark),
        "cgroup-check-interval" => dbg(&cfg.cgroup_check_interval),
        "listen" => dbg(&cfg.listen),
        "max-failed-starts" => dbg(&cfg.max_failed_starts),
        "reload-on-rss" => dbg(&cfg.reload_on_rss),
        "python-worker-override" => dbg(cfg.script.as_ref().unwrap()),
        "chdir" => dbg(cfg.chdir.as_ref().unwrap()),
        "virtualenv" => dbg(cfg.virtualenv.as_ref().unwrap()),
        "pythonpath" => dbg(cfg.pythonpath.last().unwrap()),
        "touch-reload" | "touch-chain-reload" => dbg(cfg.touch_reload.last().unwrap()),
        "probe-socket" => dbg(&cfg.probe_socket),
        "ready-workers" => dbg(&cfg.ready_workers),
        "drain-delay" => dbg(&cfg.drain_delay),
        "worker-reload-mercy" => dbg(&cfg.worker_reload_mercy),
        "max-worker-lifetime-delta" => dbg(&cfg.max_worker_lifetime_delta),
        "exit-grace" => dbg(&cfg.exit_grace),
        "chain-reload-timeout" => dbg(&cfg.chain_reload_timeout),
        "respawn-backoff-max" => dbg(&cfg.respawn_backoff_max),
        "config-check-interval" => dbg(&cfg.config_check_interval),
        "liveness-timeout" => dbg(&cfg.liveness_timeout),
        "max-worker-lifetime" => dbg(&cfg.max_worker_lifetime),
        "worker-stop-signal" => dbg(&cfg.worker_stop_signal),
        "chmod-socket" => dbg(&cfg.chmod_socket),
        "chown-socket" => dbg(&cfg.chown_socket),
        "uid" => dbg(&cfg.creds.map(|c| c.uid)),
        "gid" => dbg(&cfg.creds.map(|c| c.gid)),
        "log-format" => dbg(&cfg.log_format).to_ascii_lowercase(),
        "disable-logging" => dbg(&cfg.access_log.disabled),
        "log-4xx" => dbg(&cfg.access_log.log_4xx),
        "log-5xx" => dbg(&cfg.access_log.log_5xx),
        "log-level" => cfg.log_level.clone(),
        "worker-ready-mode" => dbg(&cfg.ready_mode).to_ascii_lowercase(),
        "metric" => cfg.metrics.last().map(|m| dbg(&(m.name.clone(), m.counter, m.initial))).unwrap_or_default(),
        "worker-exec" => dbg(&cfg.command),
        "attach-daemon" => dbg(cfg.attach_daemons.last().unwrap()),
        "pyargv" => dbg(&cfg.pyargv),
        "module" => dbg(&(cfg.module.clone(), cfg.module_callable.clone())),
        "wsgi-file" => dbg(cfg.wsgi_file.as_ref().unwrap()),
        "callable" => cfg.callable.clone(),
        "threads" => dbg(&cfg.threads),
        "buffer-size" => dbg(&cfg.buffer_size),
        "limit-post" => dbg(&cfg.limit_post),
        other => panic!("option {other} is not observed: add it to observe"),
    }
}

/// An option (any of its names), a valid value as written, and the
/// expected observation.
fn option_with_valid_value() -> impl Strategy<Value = (&'static str, &'static str, String, String)> {
    select(option_names()).prop_flat_map(|written_name| {
        let canonical = config::options::lookup(written_name).unwrap().name;
        valid_value(canonical).prop_map(move |(w, e)| (written_name, canonical, w, e))
    })
}

/// Values that trip number, float and string parsers: the environment
/// attack list plus near misses of every typed form.
fn hostile_value() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "",
            " ",
            "NaN",
            "nan",
            "-nan",
            "inf",
            "-inf",
            "infinity",
            "1e309",
            "-1",
            "-0",
            "+0",
            "0",
            "00",
            "-9223372036854775809",
            "9223372036854775808",
            "18446744073709551616",
            "4294967296",
            "2147483648",
            "1024",
            "1025",
            "0x10",
            "0o17",
            "1_000",
            "1e3",
            "0.5",
            "-0.5",
            "31536000",
            "31536000.0001",
            "5%",
            "0%",
            "100%",
            "101%",
            "-5%",
            "%",
            "%%",
            "%(",
            "$(",
            "@(",
            "$(X:-)",
            "%d%n%p%h",
            "SIGKILL",
            "KILL",
            "STOP",
            "0",
            "9",
            "65",
            "true",
            "false",
            "name=",
            "name=x,type=",
            "name=x,initial_value=1e3",
            "'",
            "\"",
            "\\",
            "fd://",
            "fd://-1",
            "sd://",
            "@",
            "[::1]",
            "[::1]:",
            ":",
            ":99999",
            "a b:80",
            "root:nosuchgroup",
            "nosuchuser",
            "7777",
            "8000",
            "777777",
        ])
        .prop_map(String::from),
        "[^\n\r]{0,40}",
        "[0-9.eE+-]{1,30}",
        "[0-9]{15,40}",
        "[\u{1}-\u{1f}\u{7f}]{1,8}",
    ]
}

// ---------------------------------------------------------------------------
// Values round-trip through every source

/// The ways an option can be written, with the origin its errors show.
#[derive(Debug, Clone, Copy)]
enum Src {
    Ini,
    /// `include =` of another ini file.
    IniInclude,
    /// `uwsgi:` mapping, written by serde_yaml (strings quoted as needed).
    Yaml,
    /// `uwsgi:` mapping with the value as a bare YAML scalar (numbers,
    /// booleans): only for values that stay the same text.
    YamlBare,
    Json,
    /// ConfigMap whose `data` keys are options.
    ConfigMapData,
    /// ConfigMap whose `data.uwsgi.ini` is an ini document.
    ConfigMapIni,
    /// ConfigMap projected as a directory (one file per key).
    Dir,
    Env,
    Cli,
}

fn sources() -> impl Strategy<Value = Src> {
    select(vec![
        Src::Ini,
        Src::IniInclude,
        Src::Yaml,
        Src::YamlBare,
        Src::Json,
        Src::ConfigMapData,
        Src::ConfigMapIni,
        Src::Dir,
        Src::Env,
        Src::Cli,
    ])
}

/// Whether `value` survives `src` unchanged (line-based sources trim it
/// and cannot hold a line break; files expand `%`/`$`/`@` placeholders;
/// bare YAML scalars must stay the same text).
fn representable(src: Src, value: &str) -> bool {
    let one_line = !value.contains(['\n', '\r']) && value.trim() == value && !value.is_empty();
    let no_sigils = !value.contains(['%', '$', '@']);
    match src {
        Src::Ini | Src::IniInclude | Src::ConfigMapIni => one_line && no_sigils,
        Src::Yaml | Src::Json => no_sigils,
        Src::YamlBare => value.bytes().all(|b| b.is_ascii_digit()) || value == "true" || value == "false",
        Src::ConfigMapData | Src::Dir => one_line,
        Src::Env | Src::Cli => !value.contains('\0'),
    }
}

/// A ConfigMap manifest with one `data` entry, written by serde_yaml (which
/// escapes what YAML cannot hold raw, DEL and C1 controls included).
fn configmap(key: &str, value: &str) -> String {
    let mut data = serde_yaml::Mapping::new();
    data.insert(key.into(), value.into());
    let mut cm = serde_yaml::Mapping::new();
    cm.insert("apiVersion".into(), "v1".into());
    cm.insert("kind".into(), "ConfigMap".into());
    cm.insert("data".into(), data.into());
    serde_yaml::to_string(&cm).unwrap()
}

/// Reads `key = value` from `src` into entries, and the origin prefix an
/// error about it must start with (`key` as written, from every source). Files are written
/// to a scratch directory removed afterwards.
fn read_from(src: Src, key: &str, value: &str) -> (Result<Vec<Entry>, ConfigError>, String) {
    let q = |s: &str| serde_json::to_string(s).unwrap();
    match src {
        Src::Ini => {
            let r = load_ini(&format!("[uwsgi]\n{key} = {value}\n"));
            (r, format!("{}:2: {key}: ", shown_ini().display()))
        }
        Src::IniInclude => {
            let inc = scratch("ini");
            std::fs::write(&inc, format!("; included\n[uwsgi]\n{key} = {value}\n")).unwrap();
            let r = load_ini(&format!("[uwsgi]\ninclude = {}\n", inc.file_name().unwrap().to_str().unwrap()));
            let _ = std::fs::remove_file(&inc);
            (r, format!("{}:3: {key}: ", inc.display()))
        }
        Src::Yaml | Src::YamlBare => {
            let text = match src {
                Src::Yaml => {
                    let mut inner = serde_yaml::Mapping::new();
                    inner.insert(key.into(), value.into());
                    let mut doc = serde_yaml::Mapping::new();
                    doc.insert("uwsgi".into(), inner.into());
                    serde_yaml::to_string(&doc).unwrap()
                }
                _ => format!("uwsgi:\n  {key}: {value}\n"),
            };
            let (path, r) = load_doc("yaml", &text, None, yaml::load_yaml_spec);
            (r, format!("{}: uwsgi.{key}: ", path.display()))
        }
        Src::Json => {
            let text = format!("{{\"uwsgi\": {{{}: {}}}}}", q(key), q(value));
            let (path, r) = load_doc("json", &text, None, yaml::load_json_spec);
            (r, format!("{}: uwsgi.{key}: ", path.display()))
        }
        Src::ConfigMapData => {
            let (path, r) = load_doc("yaml", &configmap(key, value), None, yaml::load_yaml_spec);
            (r, format!("{}: data.{key}: ", path.display()))
        }
        Src::ConfigMapIni => {
            let doc = format!("[uwsgi]\n{key} = {value}\n");
            let (path, r) = load_doc("yaml", &configmap("uwsgi.ini", &doc), None, yaml::load_yaml_spec);
            (r, format!("{}[data.uwsgi.ini]:2: {key}: ", path.display()))
        }
        Src::Dir => {
            let dir = scratch("d");
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join(key), format!("{value}\n")).unwrap();
            let mut entries = Vec::new();
            let r = yaml::load_dir(&dir, &mut entries).map(|()| entries);
            let _ = std::fs::remove_dir_all(&dir);
            (r, format!("{}:1: {key}: ", dir.join(key).display()))
        }
        Src::Env => {
            let var = format!("UWSGI_{}", key.to_ascii_uppercase().replace('-', "_"));
            let sources = Sources::default();
            let r = config::load(&sources, std::iter::once((var.clone(), value.to_string())));
            // Errors name the option as written, as for a file.
            (r, format!("env {var}: {key}: "))
        }
        Src::Cli => {
            let r = match cli::parse(vec![format!("--{key}={value}")]) {
                Ok(cli::Invocation::Run(s)) => Ok(s.cli),
                Ok(other) => panic!("--{key}={value:?} parsed as {other:?}"),
                Err(cli::CliError::Config(e)) => Err(e),
                // clap's own usage errors name the flag; shown as a ConfigError here.
                Err(cli::CliError::Clap(e)) => {
                    Err(ConfigError::new(Some(config::Origin::Cli(key.into())), None, e.to_string()))
                }
            };
            (r, format!("--{key}: "))
        }
    }
}

proptest! {
    #![proptest_config(cases(256))]

    /// A valid value for any option, written in any source, resolves to
    /// the value that was generated.
    #[test]
    fn valid_values_round_trip_through_every_source(
        (key, canonical, written, expected) in option_with_valid_value(),
        src in sources(),
    ) {
        prop_assume!(representable(src, &written));
        let (k, w) = (key.to_string(), written.clone());
        let (read, _) = bounded("read", move || read_from(src, &k, &w));
        let entries = read.map_err(|e| TestCaseError::fail(format!("{src:?} {key} = {written:?}: {e}")))?;
        let cfg = Config::resolve(&entries)
            .map_err(|e| TestCaseError::fail(format!("{src:?} {key} = {written:?}: {e}")))?;
        prop_assert_eq!(observe(&cfg, canonical), expected, "{:?} {} = {:?}", src, key, written);
    }

    /// Any value for any option, from any source: resolution either takes
    /// it or fails with one line that starts with the value's origin.
    #[test]
    fn hostile_values_error_with_their_origin(
        key in select(option_names()),
        value in hostile_value(),
        src in sources(),
    ) {
        prop_assume!(!matches!(src, Src::YamlBare) && (!value.contains('\n') || matches!(src, Src::Env | Src::Cli)));
        prop_assume!(!value.contains('\0'));
        let (k, v) = (key.to_string(), value.clone());
        let (read, prefix) = bounded("read", move || read_from(src, &k, &v));
        match read {
            Err(e) => assert_origin(&e, &prefix)?,
            Ok(entries) => {
                let resolved = bounded("resolve", move || Config::resolve(&entries));
                if let Err(e) = resolved {
                    assert_origin(&e, &prefix)?;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The ini front end on arbitrary text

/// One line of an ini-like file: mostly plausible, sometimes anything.
fn ini_line() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        3 => select(option_names()).prop_map(String::from),
        1 => select(vec!["vacuum", "module", "include", "ini", "name", "base"]).prop_map(String::from),
        1 => "[a-z][a-z0-9_:.-]{0,10}",
        1 => "[^=\n\r]{0,12}",
    ];
    let value = prop_oneof![
        3 => "[^\n\r]{0,30}",
        1 => "[A-Za-z0-9 ]{0,4}[%$@][(]?[A-Za-z0-9_:. -]{0,8}[)]?[A-Za-z0-9 ]{0,4}",
        1 => select(vec!["%d", "%n", "%p", "%h", "%%", "%(base)", "$(PATH)", "$(HOME:-/x)", "@(one.txt)"])
            .prop_map(String::from),
        1 => "[^\n]{0,20}\\\\",
    ];
    let include = select(vec!["inc.ini", "inc.ini:other", "self.ini", "missing.ini", "sub", "fifo", "/dev/zero", ""]);
    prop_oneof![
        3 => Just("[uwsgi]".to_string()),
        1 => "[ \t]*\\[[^\n\r]{0,8}\\]?[^\n\r]{0,4}",
        1 => "[ \t]*[;#][^\n\r]{0,20}",
        8 => (key.clone(), "[ \t]{0,2}=[ \t]{0,2}", value).prop_map(|(k, eq, v)| format!("{k}{eq}{v}")),
        1 => key,
        1 => "[^\n]{0,40}",
        1 => (select(vec!["include", "ini"]), include).prop_map(|(k, v)| format!("{k} = {v}")),
    ]
}

fn ini_text() -> impl Strategy<Value = String> {
    (prop::collection::vec(ini_line(), 0..12), select(vec!["\n", "\r\n"]), any::<bool>()).prop_map(
        |(lines, eol, trailing)| {
            let mut t = lines.join(eol);
            if trailing {
                t.push_str(eol);
            }
            t
        },
    )
}

proptest! {
    #![proptest_config(cases(256))]

    /// Arbitrary ini text: no panic, bounded time; errors start with a
    /// file name and a line that exists; every entry read from the file
    /// names the line its key is on; resolution errors name that line too.
    #[test]
    fn ini_text_parses_or_errors_at_a_real_line(text in ini_text()) {
        let t = text.clone();
        let loaded = bounded("ini load", move || load_ini(&t));
        let shown = shown_ini();
        let nlines = text.lines().count();
        let line_ok = |line: usize| -> bool { line <= nlines.max(1) };
        match loaded {
            // Every problem of the file is reported: each one line.
            Err(all) => for e in all.into_each() {
                let s = e.to_string();
                prop_assert!(!s.contains('\n'), "{s:?}");
                match &e.origin {
                    Some(config::Origin::File { path, line }) if *path == shown => {
                        prop_assert!(line_ok(*line), "{s}: line {line} of {nlines}");
                        prop_assert!(e.key.is_none() || *line >= 1, "{s}: a key error at line 0");
                    }
                    Some(config::Origin::File { path, .. }) => {
                        prop_assert!(path.starts_with(&fixture().dir), "{s}");
                    }
                    _ => prop_assert!(s.starts_with(&fixture().dir.display().to_string()), "{s}"),
                }
            },
            Ok(entries) => {
                let lines: Vec<&str> = text.lines().collect();
                for e in &entries {
                    if let config::Origin::File { path, line } = &e.origin {
                        if *path == shown {
                            prop_assert!(*line >= 1 && *line <= nlines, "{:?} at line {line} of {nlines}", e.key);
                            let src = lines[*line - 1].trim_start();
                            prop_assert!(src.starts_with(&e.key), "entry {:?} says line {line}: {src:?}", e.key);
                        }
                    }
                }
                let resolved = bounded("resolve", move || Config::resolve(&entries));
                for e in resolved.err().map(ConfigError::into_each).unwrap_or_default() {
                    let s = e.to_string();
                    prop_assert!(!s.contains('\n'), "{s:?}");
                    prop_assert!(matches!(e.origin, Some(config::Origin::File { .. })), "{s}");
                    if let Some(config::Origin::File { path, line }) = &e.origin {
                        if *path == shown {
                            prop_assert!(*line >= 1 && line_ok(*line), "{s}");
                        }
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(cases(256))]

    /// A value (anything on one line without placeholders) is taken as
    /// written, trimmed, whatever it ends with, and the next line is
    /// still read as its own entry at its own line.
    #[test]
    fn ini_values_are_taken_verbatim(
        key in select(option_names()),
        value in prop_oneof!["[^\n\r%$@]{0,30}", "[^\n\r%$@]{0,10}\\\\", "[\\\\ ;#=:]{0,6}"],
        eol in select(vec!["\n", "\r\n"]),
    ) {
        let text = format!("[uwsgi]{eol}{key} = {value}{eol}listen = 7{eol}");
        let t = text.clone();
        let entries = bounded("ini load", move || load_ini(&t)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let got: Vec<(String, String, String)> =
            entries.iter().map(|e| (e.key.clone(), e.value.clone(), e.origin.to_string())).collect();
        let shown = shown_ini().display().to_string();
        prop_assert_eq!(
            got,
            vec![
                (key.to_string(), value.trim().to_string(), format!("{shown}:2")),
                ("listen".to_string(), "7".to_string(), format!("{shown}:3")),
            ],
            "{:?}", text
        );
    }
}

// ---------------------------------------------------------------------------
// Placeholders and magic variables

/// One piece of a value: literal text, or a placeholder.
#[derive(Debug, Clone)]
enum Piece {
    Lit(String),
    /// `%(pvarN)`: a key set earlier in the file.
    Var(usize),
    /// `$(VAR)` of a set variable.
    Env(usize),
    /// `$(VAR:-default)`, `VAR` set or not.
    EnvOr(Option<usize>, String),
    /// `@(file)` that reads fine.
    File(usize),
    /// `%d %n %p %h %%`.
    Magic(char),
    /// A sigil that starts nothing (`$-`, `@.`, `%,`).
    Lone(char, char),
    /// A piece that must make the value an error.
    Bad(BadPiece),
}

#[derive(Debug, Clone)]
enum BadPiece {
    UnknownKey,
    UnsetEnv,
    File(usize),
    Unclosed(char),
}

fn piece(nvars: usize) -> impl Strategy<Value = Piece> {
    let f = fixture();
    let (nenv, nfiles, nbad) = (f.env.len(), f.files.len(), f.bad_files.len());
    let default = "[A-Za-z0-9 :/.,=-]{0,8}";
    prop_oneof![
        4 => plain_text().prop_map(Piece::Lit),
        2 => (0..nvars.max(1)).prop_map(move |i| if nvars == 0 { Piece::Magic('%') } else { Piece::Var(i) }),
        1 => (0..nenv).prop_map(Piece::Env),
        1 => (prop::option::of(0..nenv), default).prop_map(|(i, d)| Piece::EnvOr(i, d)),
        1 => (0..nfiles).prop_map(Piece::File),
        2 => select(vec!['d', 'n', 'p', 'h', '%']).prop_map(Piece::Magic),
        1 => (select(vec!['$', '@', '%']), select(vec!['-', '.', ',', '/'])).prop_map(|(s, c)| Piece::Lone(s, c)),
        1 => prop_oneof![
            Just(BadPiece::UnknownKey),
            Just(BadPiece::UnsetEnv),
            (0..nbad).prop_map(BadPiece::File),
            select(vec!['%', '$', '@']).prop_map(BadPiece::Unclosed),
        ]
        .prop_map(Piece::Bad),
    ]
}

/// How a piece is written, and what it expands to (None: an error).
fn render(p: &Piece, vars: &[String]) -> (String, Option<String>) {
    let f = fixture();
    match p {
        Piece::Lit(s) => (s.clone(), Some(s.clone())),
        Piece::Var(i) => (format!("%(pvar{i})"), Some(vars[*i].clone())),
        Piece::Env(i) => (format!("$({})", f.env[*i].0), Some(f.env[*i].1.clone())),
        Piece::EnvOr(Some(i), d) => (format!("$({}:-{d})", f.env[*i].0), Some(f.env[*i].1.clone())),
        Piece::EnvOr(None, d) => (format!("$({UNSET_VAR}:-{d})"), Some(d.clone())),
        Piece::File(i) => (format!("@({})", f.files[*i].0), Some(f.files[*i].1.clone())),
        Piece::Magic(c) => {
            let v = match c {
                'd' => format!("{}/", f.dir.display()),
                'n' => "c".to_string(),
                'p' => shown_ini().display().to_string(),
                'h' => f.hostname.clone(),
                _ => "%".to_string(),
            };
            (format!("%{c}"), Some(v))
        }
        Piece::Lone(s, c) => (format!("{s}{c}"), Some(format!("{s}{c}"))),
        Piece::Bad(BadPiece::UnknownKey) => ("%(nosuchkey)".into(), None),
        Piece::Bad(BadPiece::UnsetEnv) => (format!("$({UNSET_VAR})"), None),
        Piece::Bad(BadPiece::File(i)) => (format!("@({})", f.bad_files[*i]), None),
        // Unclosed: nothing after it can close it (no `)` in any piece but
        // placeholders, and this one ends the value).
        Piece::Bad(BadPiece::Unclosed(s)) => (format!("{s}(abc"), None),
    }
}

fn placeholder_case() -> impl Strategy<Value = (Vec<String>, Vec<Piece>)> {
    prop::collection::vec(plain_text(), 0..4).prop_flat_map(|vars| {
        let n = vars.len();
        (Just(vars), prop::collection::vec(piece(n), 1..7))
    })
}

proptest! {
    #![proptest_config(cases(256))]

    /// `%(key)`, `$(VAR)`, `$(VAR:-default)`, `@(file)` and `%d %n %p %h %%`
    /// expand to what they name, in ini files and in YAML `uwsgi:`
    /// mappings; a placeholder that cannot expand (unknown key, unset
    /// variable, unreadable file, no `)`) is an error at the value's line.
    #[test]
    fn placeholders_expand_or_error_at_their_line((vars, pieces) in placeholder_case(), as_yaml in any::<bool>()) {
        // An unclosed placeholder swallows the rest: it must come last.
        let mut pieces = pieces;
        if let Some(i) = pieces.iter().position(|p| matches!(p, Piece::Bad(BadPiece::Unclosed(_)))) {
            pieces.truncate(i + 1);
        }
        let mut written = String::new();
        let mut expected = Some(String::new());
        for p in &pieces {
            let (w, e) = render(p, &vars);
            written += &w;
            expected = expected.zip(e).map(|(a, b)| a + &b);
        }
        let defs: String = vars.iter().enumerate().map(|(i, v)| format!("pvar{i} = {v}\n")).collect();
        let (origin_prefix, loaded) = if as_yaml {
            let mut inner = serde_yaml::Mapping::new();
            for (i, v) in vars.iter().enumerate() {
                inner.insert(format!("pvar{i}").into(), v.clone().into());
            }
            inner.insert("chdir".into(), written.clone().into());
            let mut doc = serde_yaml::Mapping::new();
            doc.insert("uwsgi".into(), inner.into());
            let text = serde_yaml::to_string(&doc).unwrap();
            // `%n` and `%p` then name this YAML file (same directory as
            // c.ini, so `%d` and relative `@(file)` are unchanged): the
            // expected value is recomputed below.
            let (path, r) = bounded("yaml load", move || load_doc("yaml", &text, None, yaml::load_yaml_spec));
            (format!("{}: uwsgi.chdir: ", path.display()), r.map(|e| (e, Some(path))))
        } else {
            let text = format!("[uwsgi]\n{defs}chdir = {written}\n");
            let r = bounded("ini load", move || load_ini(&text));
            (format!("{}:{}: chdir: ", shown_ini().display(), vars.len() + 2), r.map(|e| (e, None)))
        };
        match (loaded, expected) {
            (Ok((entries, yaml_path)), Some(mut want)) => {
                if let Some(p) = yaml_path {
                    // The magic variables of a YAML file name that file.
                    let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
                    want = String::new();
                    for piece in &pieces {
                        let (_, e) = render(piece, &vars);
                        want += &match piece {
                            Piece::Magic('n') => stem.clone(),
                            Piece::Magic('p') => p.display().to_string(),
                            _ => e.unwrap(),
                        };
                    }
                }
                let got = entries.iter().find(|e| e.key == "chdir").map(|e| e.value.clone());
                prop_assert_eq!(got.as_deref(), Some(want.as_str()), "written {:?}", written);
                // The pvarN helpers are not options; leave them out.
                let entries: Vec<Entry> = entries.into_iter().filter(|e| !e.key.starts_with("pvar")).collect();
                let cfg = Config::resolve(&entries).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(cfg.chdir, Some(PathBuf::from(want.trim())));
            }
            (Err(e), None) => assert_origin(&e, &origin_prefix)?,
            (Ok(_), None) => prop_assert!(false, "{written:?} should have been an error"),
            (Err(e), Some(want)) => prop_assert!(false, "{written:?} should expand to {want:?}, got error {e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// YAML and JSON documents

/// YAML-ish text: structure tokens, scalars, anchors, tags, junk.
fn yaml_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        4 => select(vec![
            "uwsgi:", "\n", "\n  ", "\n    ", "- ", ": ", "[", "]", "{", "}", ", ", "'", "\"", "&a ", "*a", "!!str ",
            "!!binary ", "---\n", "...\n", "kind: ConfigMap\n", "kind: List\n", "items:\n", "data:\n",
            "metadata: {name: app}\n", "apiVersion: v1\n", "uwsgi.ini: |\n", "? ", "|\n", ">\n", "~", "null",
            "<<: *a", "%YAML 1.2\n", "# c\n", "\t",
        ])
        .prop_map(String::from),
        2 => select(option_names()).prop_map(|n| format!("{n}: ")),
        3 => "[^\u{0}]{0,12}",
        1 => "[0-9.eE+-]{1,12}",
    ];
    prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(cases(256))]

    /// Arbitrary YAML text (alone, or as the `uwsgi.yaml` document of a
    /// ConfigMap) and arbitrary JSON text: no panic, bounded time; errors
    /// start with the file name; resolution errors with a document origin.
    #[test]
    fn yaml_and_json_text_parse_or_error_with_the_file(
        text in yaml_text(),
        sel in prop::option::of(select(vec!["uwsgi", "app", "uwsgi.ini", "x"])),
        wrap in any::<bool>(),
        json in any::<bool>(),
    ) {
        let text = if wrap {
            configmap("uwsgi.yaml", &text)
        } else {
            text
        };
        let (ext, load): (&str, Loader) =
            if json && !wrap { ("json", yaml::load_json_spec) } else { ("yaml", yaml::load_yaml_spec) };
        let t = text.clone();
        let (path, loaded) = bounded("document load", move || load_doc(ext, &t, sel, load));
        match loaded {
            Err(e) => assert_doc_origin(&e, &path)?,
            Ok(entries) => {
                if let Err(e) = bounded("resolve", move || Config::resolve(&entries)) {
                    assert_doc_origin(&e, &path)?;
                }
            }
        }
    }

    /// The nesting pre-check: flow collections nested up to 100 deep reach
    /// the YAML/JSON parser; deeper ones are refused with the line, in
    /// bounded time however deep.
    #[test]
    fn nesting_beyond_100_is_refused_with_its_line(
        depth in prop_oneof![0..=130usize, 95..=105usize, 1000..=50_000usize],
        open in select(vec!["[", "{\"k\": "]),
        lead in 0..3usize,
        json in any::<bool>(),
    ) {
        let close = if open == "[" { "]" } else { "}" };
        let body = format!("{}1{}", open.repeat(depth), close.repeat(depth));
        let text = if json {
            format!("{}{{\"uwsgi\": {{\"socket\": {body}}}}}", "\n".repeat(lead))
        } else {
            format!("{}uwsgi:\n  socket: {body}\n", "\n".repeat(lead))
        };
        let (ext, load): (&str, Loader) =
            if json { ("json", yaml::load_json_spec) } else { ("yaml", yaml::load_yaml_spec) };
        let (path, loaded) = bounded("nested load", move || load_doc(ext, &text, None, load));
        // The document's own `{` of the JSON form counts too.
        let total = depth + if json { 2 } else { 0 };
        let line = if json { lead + 1 } else { lead + 2 };
        match loaded {
            Err(e) if total > 100 => {
                prop_assert_eq!(
                    e.to_string(),
                    format!("{}:{line}: nested deeper than 100 levels", path.display())
                );
            }
            Err(e) => {
                let s = e.to_string();
                prop_assert!(!s.contains("nested deeper"), "depth {total}: {s}");
                assert_origin(&e, &path.display().to_string())?;
            }
            Ok(_) => prop_assert!(total <= 100, "depth {total} accepted"),
        }
    }

    /// ConfigMap manifests with arbitrary `data`: keys from the option
    /// table and the document keys, values of any text; selection by
    /// ConfigMap name or data key. Errors name the file (and `data.KEY`
    /// for values that are options).
    #[test]
    fn configmaps_with_arbitrary_data(
        data in prop::collection::vec(
            (
                prop_oneof![
                    select(option_names()).prop_map(String::from),
                    select(yaml::DOC_KEYS.to_vec()).prop_map(String::from),
                    "[a-z.]{1,10}",
                ],
                prop_oneof!["[^\u{0}]{0,40}", ini_text(), yaml_text()],
            ),
            0..5,
        ),
        name in select(vec!["app", "other"]),
        sel in prop::option::of(select(vec!["app", "other", "uwsgi.ini", "podmaster.yaml", "processes", "nokey"])),
        in_list in any::<bool>(),
    ) {
        let mut cm = serde_yaml::Mapping::new();
        cm.insert("apiVersion".into(), "v1".into());
        cm.insert("kind".into(), "ConfigMap".into());
        let mut md = serde_yaml::Mapping::new();
        md.insert("name".into(), name.into());
        cm.insert("metadata".into(), md.into());
        let mut d = serde_yaml::Mapping::new();
        for (k, v) in &data {
            d.insert(k.clone().into(), v.clone().into());
        }
        cm.insert("data".into(), d.into());
        let doc: serde_yaml::Value = if in_list {
            let mut list = serde_yaml::Mapping::new();
            list.insert("kind".into(), "List".into());
            list.insert("items".into(), vec![serde_yaml::Value::from(cm)].into());
            list.into()
        } else {
            cm.into()
        };
        let text = serde_yaml::to_string(&doc).unwrap();
        let (path, loaded) = bounded("configmap load", move || load_doc("yaml", &text, sel, yaml::load_yaml_spec));
        match loaded {
            Err(e) => assert_doc_origin(&e, &path)?,
            Ok(entries) => {
                if let Err(e) = bounded("resolve", move || Config::resolve(&entries)) {
                    assert_doc_origin(&e, &path)?;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Socket specs, LISTEN_FDNAMES, socket activation

proptest! {
    #![proptest_config(cases(512))]

    /// Any string: `SocketSpec::parse` answers (no panic, bounded time),
    /// and an accepted spec is accepted again in its canonical written
    /// form, as the same spec.
    #[test]
    fn socket_spec_any_string(s in prop_oneof![
        "[^\u{0}]{0,30}",
        "(fd|sd)://[^\u{0}]{0,12}",
        "@[^\u{0}]{0,120}",
        "\\[[0-9a-fA-F:.%]{0,45}\\]?:?[0-9+-]{0,7}",
        "[a-zA-Z0-9._-]{0,70}:[0-9+-]{0,7}",
        "/[^\u{0}]{100,115}",
    ]) {
        let input = s.clone();
        let parsed = bounded("SocketSpec::parse", move || SocketSpec::parse(&input));
        if let Ok(spec) = parsed {
            let canonical = match &spec {
                SocketSpec::Tcp { host, port } if host.contains(':') => format!("[{host}]:{port}"),
                SocketSpec::Tcp { host, port } => format!("{host}:{port}"),
                SocketSpec::Unix(p) => p.display().to_string(),
                SocketSpec::Abstract(n) => format!("@{n}"),
                SocketSpec::Fd(n) => format!("fd://{n}"),
                SocketSpec::Sd(n) => format!("sd://{n}"),
            };
            prop_assert_eq!(SocketSpec::parse(&canonical), Ok(spec), "{:?} -> {:?}", s, canonical);
        }
    }

    /// Valid specs of every form parse to what they say.
    #[test]
    fn socket_spec_valid_forms((written, spec) in socket_spec()) {
        prop_assert_eq!(SocketSpec::parse(&written), Ok(spec));
    }

    /// `worker::fdnames` then `sockets::decode_fdnames` gives back the same
    /// names, for any names (`:` and `\` and `\x3a` included); the encoded
    /// form always splits into exactly one part per name.
    #[test]
    fn fdnames_round_trip(names in prop::collection::vec(prop_oneof![
        "[^\u{0}]{0,12}",
        prop::collection::vec(select(vec![":", "\\", "\\x3a", "\\x5c", "\\X3A", "x3a", "a"]), 0..6)
            .prop_map(|parts| parts.concat()),
    ], 1..6)) {
        // One empty name encodes like no names at all (LISTEN_FDNAMES unset
        // or empty means "use the indices"); socket names are never empty.
        prop_assume!(names != [String::new()]);
        let encoded = podmaster::worker::fdnames(&names);
        prop_assert_eq!(encoded.split(':').count(), names.len());
        prop_assert_eq!(sockets::decode_fdnames(&encoded), names);
    }

    /// The activation variables, any text: no panic, bounded time; an
    /// error names the variable at fault (and stays one short line).
    #[test]
    fn activation_variables_any_text(
        pid in prop::option::of(prop_oneof![Just("4242".to_string()), "[0-9]{1,6}", hostile_value()]),
        fds in prop::option::of(prop_oneof!["[0-9]{1,5}", hostile_value()]),
        names in prop::option::of(prop_oneof!["[^\u{0}]{0,40}", "[a-z:\\\\]{0,20}", "[a-z]{1,3}(:[a-z]{1,3}){0,3}"]),
    ) {
        let mut env = Vec::new();
        for (k, v) in [("LISTEN_PID", &pid), ("LISTEN_FDS", &fds), ("LISTEN_FDNAMES", &names)] {
            if let Some(v) = v {
                env.push((k.to_string(), v.clone()));
            }
        }
        let e = env.clone();
        let r = bounded("activation_names", move || sockets::activation_names(&e, 4242));
        match r {
            Ok((got, notice)) => {
                if let Some(n) = &notice {
                    prop_assert!(n.starts_with("LISTEN_PID="), "{n}");
                    prop_assert!(got.is_empty());
                }
                let n: usize = fds.as_deref().map_or(0, |f| f.trim().parse().unwrap_or(0));
                if notice.is_none() && pid.is_some() {
                    prop_assert_eq!(got.len(), n);
                }
            }
            Err(m) => {
                let m = m.to_string();
                prop_assert!(m.starts_with("LISTEN_PID=") || m.starts_with("LISTEN_FDS=") || m.starts_with("LISTEN_FDNAMES "), "{m}");
                prop_assert!(!m.contains('\n') && m.chars().count() < 300, "{m:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Typed values outside a file: commands, metrics, signals, the command line

proptest! {
    #![proptest_config(cases(256))]

    /// A command line written with single quotes splits back into the
    /// words it was made of (worker-exec, attach-daemon, pyargv).
    #[test]
    fn split_command_round_trip(words in prop::collection::vec("[^\u{0}]{0,10}", 1..6)) {
        let line = words.iter().map(|w| format!("'{}'", w.replace('\'', r"'\''"))).collect::<Vec<_>>().join(" ");
        prop_assert_eq!(config::split_command(&line), Ok(words));
    }

    /// Any command line text: split or refused, never a panic.
    #[test]
    fn split_command_any_text(s in "[^\u{0}]{0,40}") {
        let _ = bounded("split_command", move || config::split_command(&s));
    }

    /// Signals by name, short name, any case, or number.
    #[test]
    fn signals_parse_in_every_form((written, sig) in signal()) {
        prop_assert_eq!(config::parse_signal(&written), Some(sig));
        prop_assert_eq!(config::parse_signal(&format!("  {}  ", written.to_ascii_lowercase())), Some(sig));
    }

    /// Any text as a signal: a signal or nothing, never a panic.
    #[test]
    fn signal_any_text(s in prop_oneof!["[^\u{0}]{0,12}", hostile_value()]) {
        let _ = bounded("parse_signal", move || config::parse_signal(&s));
    }

    /// Any command line: parsed or refused, never a panic; a config source
    /// the CLI cannot classify is an error naming it.
    #[test]
    fn command_line_any_args(args in prop::collection::vec(prop_oneof![
        select(option_names()).prop_map(|n| format!("--{n}")),
        select(vec!["--ini", "--yaml", "--json", "--config-dir", "--check-config", "--", "-x", "--help=1"])
            .prop_map(String::from),
        "[^\u{0}]{0,12}",
        "[a-z]{1,6}\\.(ini|yaml|json|conf)(:[a-z]{0,4})?",
    ], 0..6)) {
        let a = args.clone();
        let r = bounded("cli::parse", move || cli::parse(a));
        if let Err(cli::CliError::Config(e)) = r {
            let s = e.to_string();
            prop_assert!(!s.contains('\n') && args.iter().any(|a| e.message.contains(a.as_str())), "{s}");
        }
    }

    /// A bare config argument is classified by its extension (or refused).
    #[test]
    fn config_argument_by_extension(name in "[^\u{0}]{0,20}") {
        let n = name.clone();
        match bounded("by_extension", move || Source::by_extension(&n)) {
            Ok(Source::Ini(s) | Source::Yaml(s) | Source::Json(s)) => prop_assert_eq!(s, name),
            Ok(other) => prop_assert!(false, "{other:?}"),
            Err(e) => prop_assert!(e.message.contains(&name), "{e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Every option has a generator (so a new option cannot dodge the properties)

#[test]
fn every_option_has_a_value_generator_and_observer() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for o in OPTIONS {
        let (written, expected) = valid_value(o.name).new_tree(&mut runner).unwrap().current();
        let entries = vec![Entry::new(o.name, written.clone(), config::Origin::Cli(o.name.into()))];
        let cfg = Config::resolve(&entries).unwrap_or_else(|e| panic!("{}: {written:?}: {e}", o.name));
        assert_eq!(observe(&cfg, o.name), expected, "{} = {written:?}", o.name);
        // Each kind's generator stays within the kind.
        match o.kind {
            Kind::Uint => assert!(written.parse::<u64>().is_ok(), "{}: {written}", o.name),
            Kind::Seconds => assert!(written.parse::<f64>().is_ok(), "{}: {written}", o.name),
            Kind::Bool | Kind::Text => {}
        }
    }
}

// ---------------------------------------------------------------------------
// Regressions: inputs the properties found, kept as plain tests
