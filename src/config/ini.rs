//! uWSGI-style ini files, read with rust-ini.
//!
//! rust-ini does the section / key / value split and keeps repeated keys in
//! order. uWSGI's rules that rust-ini does not know are applied around it:
//! a line pass before parsing turns comment lines (`;` or `#`, also
//! indented) and the lines of other sections into blank lines and a bare
//! key into `key = true` (line numbers are preserved, and the same pass
//! records each key's line for error messages). The lines of the section
//! then run in order (`walk`): configuration logic (`if-*` ... `endif`,
//! `for*` ... `endfor`, `logic`) decides which lines apply and how often;
//! each value that applies is expanded by [`super::placeholders`]; `include`
//! and `ini` splice other files (or `:section`s of this one) in place,
//! `set-placeholder`/`set-ph` define variables, `print` prints. An inline
//! `;` stays part of the value, as in uWSGI.
//!
//! A value that cannot be expanded is reported and the next line is read,
//! so one run reports every such problem of a file; a file that cannot be
//! read, an include cycle, or a limit stops that file (a limit stops the
//! whole load). Limits, per load of one source: [`MAX_FILE_BYTES`] per
//! file, [`MAX_INCLUDE_DEPTH`] and [`MAX_FILES`] for includes, the value
//! limits of [`super::placeholders`], `logic::MAX_REPETITIONS` and
//! `logic::MAX_BLOCK_NESTING` for logic, `walk::MAX_LINE_RUNS` lines
//! run, `walk::MAX_FAILURES` values that fail, `glob::MAX_GLOB_MATCHES`
//! and the exec:// bounds of [`super::placeholders::exec`].

mod glob;
mod logic;
mod walk;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use ini::{Ini, ParseOption};

use super::placeholders::exec::ExecBudget;
use super::placeholders::magic::FileMagic;
use super::{ConfigError, Entry, Origin};
pub use logic::is_logic_key;

/// Files larger than this are refused before reading: a config file is
/// never megabytes long, and refusing early keeps errors instant.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Includes deeper than this are certainly a mistake (cycles are caught
/// earlier, this bounds long chains).
pub const MAX_INCLUDE_DEPTH: usize = 16;
/// Files one configuration may read in all (includes included): a file
/// that includes another a hundred times, nested, is refused early.
pub const MAX_FILES: usize = 256;

/// The state of one load of an ini source: the include chain being read
/// (cycle detection), and what the whole load has used of its limits.
#[derive(Debug, Default)]
pub struct Chain {
    /// (real path, section) of each file being read, outermost first.
    stack: Vec<(PathBuf, String)>,
    files: usize,
    /// The first file of the load (the uppercase magic variables).
    top: Option<FileMagic>,
    /// `for` bodies run, lines run, values that failed.
    repetitions: usize,
    runs: usize,
    failures: usize,
    /// Keys whose value failed to expand: a placeholder naming one is a
    /// consequence of that error, not a new one.
    failed: HashSet<String>,
    exec: ExecBudget,
    /// Bytes of values expanded so far (with those of earlier sources).
    bytes: Option<usize>,
    /// A limit was hit: nothing more is read.
    stopped: bool,
}

/// One section of one file, as the loader reads it.
#[derive(Clone, Copy)]
struct Src<'a> {
    text: &'a str,
    /// The name shown in errors.
    shown: &'a Path,
    /// Its real path (`%d`, `%p`, relative paths, cycle detection).
    abs: &'a Path,
    /// The name as written (`%o`).
    given: &'a str,
    section: &'a str,
}

/// Loads `FILE` or `FILE:section` and appends its entries. Every value
/// that failed is reported in the one error returned (the entries of the
/// lines that worked are appended all the same).
pub fn load_spec(spec: &str, entries: &mut Vec<Entry>) -> Result<(), ConfigError> {
    let (path, section) = split_spec(spec);
    let section = section.unwrap_or("uwsgi");
    if path == STDIN {
        // `--ini -`: standard input, placed in the working directory (for
        // `%d` and relative includes).
        let text = stdin_text()?;
        let abs = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")).join(STDIN_SHOWN);
        return load_text(&text, Path::new(STDIN_SHOWN), &abs, section, entries, &mut Chain::default());
    }
    load_file(&PathBuf::from(path), path, section, entries, &mut Chain::default())
}

/// The source name for standard input (`--ini -`, `--yaml -`).
pub const STDIN: &str = "-";
/// How standard input is named in errors.
pub const STDIN_SHOWN: &str = "<stdin>";

/// Standard input as config text, read once (a second `-` source, or a
/// reload's re-read, sees the same text), with a config file's checks.
pub fn stdin_text() -> Result<String, ConfigError> {
    use std::io::Read;
    static TEXT: std::sync::OnceLock<Result<String, ConfigError>> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let mut bytes = Vec::new();
        let read = std::io::stdin().lock().take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes);
        let shown = Path::new(STDIN_SHOWN);
        if let Err(e) = read {
            return Err(ConfigError::new(None, None, format!("{STDIN_SHOWN}: cannot read: {e}")));
        }
        if bytes.len() as u64 > MAX_FILE_BYTES {
            let msg = format!("{STDIN_SHOWN}: over the {MAX_FILE_BYTES}-byte limit for a config file");
            return Err(ConfigError::new(None, None, msg));
        }
        check_text(bytes, shown)
    })
    .clone()
}

/// `app.ini:prod` names section `prod`; a path that exists as written wins.
pub fn split_spec(spec: &str) -> (&str, Option<&str>) {
    if Path::new(spec).exists() {
        return (spec, None);
    }
    match spec.rsplit_once(':') {
        Some((p, s)) if !s.is_empty() && !s.contains('/') => (p, Some(s)),
        _ => (spec, None),
    }
}

/// Reads a config file as text, refusing what cannot be a config: too
/// big, not UTF-8, NUL bytes. Errors name the file (and line if known).
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file_err = |msg: String| ConfigError::new(None, None, format!("{}: {msg}", path.display()));
    // Opened first and checked as opened (a name checked, then opened,
    // could be swapped for a FIFO in between); O_NONBLOCK so opening a
    // FIFO cannot block the master's loop.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| file_err(format!("cannot read config file: {e}")))?;
    let meta = file.metadata().map_err(|e| file_err(format!("cannot read config file: {e}")))?;
    if !meta.is_file() {
        return Err(file_err("not a regular file".into()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(file_err(format!("config file is {} bytes, over the {MAX_FILE_BYTES}-byte limit", meta.len())));
    }
    // Files in /proc say they are empty and are not: the read is bounded too.
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| file_err(format!("cannot read config file: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(file_err(format!("config file is over the {MAX_FILE_BYTES}-byte limit")));
    }
    check_text(bytes, path)
}

/// UTF-8 and NUL checks for text from a file or an embedded document.
pub fn check_text(bytes: Vec<u8>, shown: &Path) -> Result<String, ConfigError> {
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()].iter().filter(|b| **b == b'\n').count();
        ConfigError::new(Some(Origin::File { path: shown.to_owned(), line }), None, "not valid UTF-8")
    })?;
    if let Some(pos) = text.find('\0') {
        let line = 1 + text[..pos].matches('\n').count();
        return Err(ConfigError::new(Some(Origin::File { path: shown.to_owned(), line }), None, "NUL byte in file"));
    }
    Ok(text)
}

fn load_file(
    path: &Path,
    given: &str,
    section: &str,
    entries: &mut Vec<Entry>,
    chain: &mut Chain,
) -> Result<(), ConfigError> {
    let text = read_text(path)?;
    let abs = std::fs::canonicalize(path)
        .map_err(|e| ConfigError::new(None, None, format!("{}: cannot resolve path: {e}", path.display())))?;
    load_section(Src { text: &text, shown: path, abs: &abs, given, section }, entries, chain)
}

/// Parses ini `text` shown as `shown` in errors; `abs` is the real file
/// it came from (for `%d`, `%p`, relative includes and cycle detection).
pub fn load_text(
    text: &str,
    shown: &Path,
    abs: &Path,
    section: &str,
    entries: &mut Vec<Entry>,
    chain: &mut Chain,
) -> Result<(), ConfigError> {
    let given = shown.display().to_string();
    load_section(Src { text, shown, abs, given: &given, section }, entries, chain)
}

fn load_section(src: Src, entries: &mut Vec<Entry>, chain: &mut Chain) -> Result<(), ConfigError> {
    let at = |line: usize| Some(Origin::File { path: src.shown.to_owned(), line });
    if chain.stopped {
        return Ok(());
    }
    chain.files += 1;
    if chain.files > MAX_FILES {
        chain.stopped = true;
        return Err(ConfigError::new(
            at(0),
            None,
            format!("more than {MAX_FILES} config files read (includes included)"),
        ));
    }
    if chain.stack.iter().any(|(p, s)| p == src.abs && s == src.section) {
        return Err(ConfigError::new(
            at(0),
            None,
            "include cycle: this file includes itself (directly or through others)",
        ));
    }
    if chain.stack.len() >= MAX_INCLUDE_DEPTH {
        return Err(ConfigError::new(at(0), None, format!("includes nested deeper than {MAX_INCLUDE_DEPTH} levels")));
    }
    let lines = section_lines(&src)?;
    let this = FileMagic {
        shown: src.shown.to_owned(),
        abs: src.abs.to_owned(),
        given: src.given.to_owned(),
        section: src.section.to_owned(),
    };
    let top = chain.top.get_or_insert_with(|| this.clone()).clone();
    chain.stack.push((src.abs.to_owned(), src.section.to_owned()));
    let errors = walk::run(src, &lines, super::placeholders::magic::Magic { this, top }, entries, chain);
    chain.stack.pop();
    ConfigError::all(errors)
}

/// The `key = value` lines of the section `src` names, in order, each
/// with its line number.
fn section_lines(src: &Src) -> Result<Vec<logic::Line>, ConfigError> {
    let at = |line: usize| Some(Origin::File { path: src.shown.to_owned(), line });
    let (prepared, numbers) = prepare(src.text, src.section, src.shown)?;
    let opt = ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        enabled_indented_mutiline_value: false,
        enabled_preserve_key_leading_whitespace: false,
    };
    let ini =
        Ini::load_from_str_opt(&prepared, opt).map_err(|e| ConfigError::new(at(e.line), None, e.msg.to_string()))?;
    let mut found = false;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut lines = Vec::new();
    for props in ini.section_all(Some(WANTED)) {
        found = true;
        for (key, raw) in props.iter() {
            let n = seen.entry(key).or_default();
            let line = numbers.get(key).and_then(|v| v.get(*n)).copied().unwrap_or(0);
            *n += 1;
            lines.push(logic::Line { key: key.to_owned(), raw: raw.to_owned(), line });
        }
    }
    if !found {
        return Err(ConfigError::new(at(0), None, format!("no [{}] section in this file", src.section)));
    }
    Ok(lines)
}

/// Per key, the line of each occurrence in order.
type Lines = HashMap<String, Vec<usize>>;

/// The name the line pass gives the wanted section in the text it hands
/// to rust-ini, whatever the file calls it.
const WANTED: &str = "wanted";

/// The line pass described in the module doc, for section `section` of
/// the file shown as `shown`. Only that section reaches rust-ini, as
/// `[WANTED]` headers and lines of exactly `key=value`; every other line
/// becomes a blank line, so line numbers stay the file's and no other
/// section's text can be misread into this one. Returns that text and,
/// per key, the line of each occurrence in order.
///
/// rust-ini reads some text differently from uWSGI even with escapes off
/// (it splits a key at `:`, lets `\` swallow the character after it,
/// joins a line ending in `\` with the next, and ends a line at a lone
/// `\r`); the pass refuses or rewrites those lines so an entry always
/// names the line it came from.
fn prepare(text: &str, section: &str, shown: &Path) -> Result<(String, Lines), ConfigError> {
    let mut out = String::with_capacity(text.len() + 64);
    let mut lines: Lines = Lines::new();
    let mut inside = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(rest) = line.strip_prefix('[') {
            inside = rest.split(']').next().unwrap_or("").trim() == section;
            if inside {
                out.push('[');
                out.push_str(WANTED);
                out.push(']');
            }
            out.push('\n');
            continue;
        }
        if !inside || line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            out.push('\n');
            continue;
        }
        let origin = Some(Origin::File { path: shown.to_owned(), line: i + 1 });
        let (key, rest) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v)),
            None => (line, None),
        };
        if line.contains('\r') {
            return Err(ConfigError::new(
                origin,
                Some(key),
                "carriage return inside a line; end lines with \\n or \\r\\n",
            ));
        }
        if key.contains([':', '\\']) {
            return Err(ConfigError::new(origin, Some(key), "`:` and `\\` cannot appear in a key"));
        }
        lines.entry(key.to_owned()).or_default().push(i + 1);
        // uWSGI splits at the first `=` only; rewritten as exactly
        // `key=value`, the line has no `:` before that `=` for rust-ini
        // to split at.
        let value = rest.map(str::trim).unwrap_or("true");
        out.push_str(key);
        out.push('=');
        out.push_str(value);
        if value.ends_with('\\') {
            // A `\` before `\r` is kept as written (and the `\r` trimmed);
            // before `\n` rust-ini would join the next line to this value.
            out.push('\r');
        }
        out.push('\n');
    }
    Ok((out, lines))
}

#[cfg(test)]
mod limit_tests;
#[cfg(test)]
mod logic_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::File::create(&p).unwrap().write_all(text.as_bytes()).unwrap();
        p
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("podmaster-ini-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn load(path: &Path) -> Result<Vec<(String, String, usize)>, String> {
        let mut v = Vec::new();
        load_spec(path.to_str().unwrap(), &mut v).map_err(|e| e.to_string())?;
        Ok(v.into_iter()
            .map(|e| {
                let line = match e.origin {
                    Origin::File { line, .. } => line,
                    _ => 0,
                };
                (e.key, e.value, line)
            })
            .collect())
    }

    #[test]
    fn uwsgi_rules() {
        let d = tmpdir("rules");
        let p = write(
            &d,
            "app.ini",
            "; comment\n[other]\nprocesses = 9\n[uwsgi]\n# another\nsocket = 127.0.0.1:3031\n  ; indented comment\n\
             socket = :3032\nmaster\nprocesses = 4 ; not a comment\nchdir = %d\nname = %n\n",
        );
        let got = load(&p).unwrap();
        let dir = format!("{}/", std::fs::canonicalize(&d).unwrap().display());
        assert_eq!(
            got,
            vec![
                ("socket".into(), "127.0.0.1:3031".into(), 6),
                ("socket".into(), ":3032".into(), 8),
                ("master".into(), "true".into(), 9),
                ("processes".into(), "4 ; not a comment".into(), 10),
                ("chdir".into(), dir, 11),
                ("name".into(), "app".into(), 12),
            ]
        );
    }

    #[test]
    fn sections_placeholders_env_and_files() {
        let d = tmpdir("ph");
        write(&d, "secret.txt", "s3cr3t\n");
        // SAFETY: test-only; no other test reads this variable.
        unsafe { std::env::set_var("PODMASTER_INI_TEST_VAR", "from-env") };
        let p = write(
            &d,
            "a.ini",
            "[prod]\nbase = /srv\nchdir = %(base)/app\nx = $(PODMASTER_INI_TEST_VAR)\n\
             y = $(PODMASTER_INI_UNSET:-dflt)\nz = @(secret.txt)\npct = 100%%\n",
        );
        let got = load(Path::new(&format!("{}:prod", p.display()))).unwrap();
        let vals: Vec<_> = got.iter().map(|(k, v, _)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            vals,
            vec![
                ("base", "/srv"),
                ("chdir", "/srv/app"),
                ("x", "from-env"),
                ("y", "dflt"),
                ("z", "s3cr3t"),
                ("pct", "100%")
            ]
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let d = tmpdir("err");
        let p = write(&d, "e.ini", "[uwsgi]\nprocesses = 2\nchdir = $(PODMASTER_INI_SURELY_UNSET)\n");
        let err = load(&p).unwrap_err();
        assert!(err.starts_with(&format!("{}:3: chdir: environment variable", p.display())), "{err}");

        let p = write(&d, "nosec.ini", "[app]\nprocesses = 2\n");
        assert_eq!(load(&p).unwrap_err(), format!("{}:0: no [uwsgi] section in this file", p.display()));

        let missing = d.join("missing.ini");
        assert!(load(&missing).unwrap_err().contains("cannot read config file"));

        let p = write(&d, "bin.ini", "[uwsgi]\nprocesses = \u{0}\n");
        assert_eq!(load(&p).unwrap_err(), format!("{}:2: NUL byte in file", p.display()));
    }

    /// Found by the property tests (tests/properties.rs): rust-ini read
    /// these lines differently from the line pass.
    #[test]
    fn line_pass_regressions() {
        let d = tmpdir("lp");
        // A value ending in `\` swallowed the next line into itself.
        let p = write(&d, "bs.ini", "[uwsgi]\nsocket = \\\nlisten = 7\n");
        assert_eq!(load(&p).unwrap(), vec![("socket".into(), "\\".into(), 2), ("listen".into(), "7".into(), 3)]);
        // A `:` in a key split it there: key `a`, reported at line 0.
        let p = write(&d, "colon.ini", "[uwsgi]\na:=\n");
        assert_eq!(load(&p).unwrap_err(), format!("{}:2: a:: `:` and `\\` cannot appear in a key", p.display()));
        // A lone `\r` ended the line for rust-ini only.
        let p = write(&d, "cr.ini", "[uwsgi]\nsocket=a\r\u{a1}\\\nsocket=\n");
        assert!(load(&p).unwrap_err().starts_with(&format!("{}:2: socket: carriage return", p.display())));
        // `[` alone: rust-ini's error named line 2 of a 1-line file.
        let p = write(&d, "open.ini", "[");
        assert_eq!(load(&p).unwrap_err(), format!("{}:0: no [uwsgi] section in this file", p.display()));
        // Other sections never reach rust-ini: a stray `\` there cannot
        // swallow the `[uwsgi]` header that follows.
        let p = write(&d, "other.ini", "[app]\nweird\\\n[uwsgi] junk\nprocesses = 4\n");
        assert_eq!(load(&p).unwrap(), vec![("processes".into(), "4".into(), 4)]);
    }

    /// Found by the property tests: `@(fifo)` blocked forever in open(2)
    /// and `@(/dev/zero)` read until memory ran out.
    #[test]
    fn at_file_refuses_what_is_not_a_regular_file() {
        let d = tmpdir("at");
        nix::unistd::mkfifo(&d.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for (target, expect) in
            [("fifo", "not a regular file"), ("/dev/zero", "not a regular file"), (".", "not a regular file")]
        {
            let p = write(&d, "at.ini", &format!("[uwsgi]\nchdir = @({target})\n"));
            let err = load(&p).unwrap_err();
            assert!(err.starts_with(&format!("{}:2: chdir: @({target}): ", p.display())), "{err}");
            assert!(err.ends_with(expect), "{err}");
        }
    }

    #[test]
    fn include_splices_and_cycles_fail() {
        let d = tmpdir("inc");
        write(&d, "b.ini", "[uwsgi]\nprocesses = 3\n");
        let a = write(&d, "a.ini", "[uwsgi]\nsocket = :1\ninclude = b.ini\nlisten = 5\n");
        let keys: Vec<_> = load(&a).unwrap().into_iter().map(|(k, _, _)| k).collect();
        assert_eq!(keys, vec!["socket", "processes", "listen"]);

        write(&d, "c.ini", "[uwsgi]\ninclude = d.ini\n");
        write(&d, "d.ini", "[uwsgi]\nini = c.ini\n");
        let err = load(&d.join("c.ini")).unwrap_err();
        assert!(err.contains("include cycle"), "{err}");
    }
}
