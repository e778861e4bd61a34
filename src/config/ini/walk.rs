//! Runs the lines of one section in order: logic blocks decide which lines
//! apply and how often, each line that applies is expanded and becomes an
//! entry (a `set-ph = NAME=VALUE` entry defines `%(NAME)` for the lines
//! after it, see [`super::super::placeholders::find`]), an include or a
//! `print`.
//!
//! A skipped body is not expanded (its placeholders cannot fail). A value
//! that fails to expand is reported and the walk goes on; a value that
//! names a key whose own value failed is not reported again. Limits
//! (entries, bytes, repetitions, lines run, failures) stop the whole load:
//! [`Chain::stopped`] makes every enclosing file stop too.

use std::collections::HashSet;

use super::super::placeholders::magic::Magic;
use super::super::placeholders::{
    ExpandError, Expander, MAX_ENTRIES, MAX_TOTAL_BYTES, REQUEST_LOG_KEYS, mark_used, resolve_in,
};
use super::logic::{self, Block, Line, MAX_REPETITIONS, Node, Opener};
use super::{Chain, Src, load_file, load_section, split_spec};
use crate::config::{ConfigError, Entry, Origin};

/// Lines run in one load, each repetition counted: bounds the work of
/// loops (10 000 repetitions of a ten-line body), whatever they hold.
pub const MAX_LINE_RUNS: usize = 100_000;
/// Values that fail in one load before it stops: a generated file with
/// thousands of broken lines is reported, not echoed line by line forever.
pub const MAX_FAILURES: usize = 1_000;

/// The walk stopped at a limit (the error is recorded).
struct Stop;

struct Walk<'w> {
    src: Src<'w>,
    lines: &'w [Line],
    magic: Magic,
    /// Each error with the index of the line it comes from here (an
    /// include's errors: the include line), to report them in line order.
    errors: Vec<(usize, ConfigError)>,
    /// (line index, message) of the errors recorded: a loop that runs a
    /// broken line a thousand times reports it once.
    said: HashSet<(usize, String)>,
}

/// Runs `lines` (one section of `src`); the errors found, in order.
pub(super) fn run(
    src: Src,
    lines: &[Line],
    magic: Magic,
    entries: &mut Vec<Entry>,
    chain: &mut Chain,
) -> Vec<ConfigError> {
    let mut w = Walk { src, lines, magic, errors: Vec::new(), said: HashSet::new() };
    match logic::parse(lines) {
        Err((i, why)) => w.error(i, why),
        Ok((tree, mistakes)) => {
            for (i, why) in mistakes {
                w.error(i, why);
            }
            let _stopped = w.nodes(&tree, None, entries, chain);
        }
    }
    // Structural mistakes were found first; the walk goes in line order.
    w.errors.sort_by_key(|(i, _)| *i);
    w.errors.into_iter().map(|(_, e)| e).collect()
}

impl Walk<'_> {
    fn origin(&self, i: usize) -> Origin {
        Origin::File { path: self.src.shown.to_owned(), line: self.lines[i].line }
    }

    fn error(&mut self, i: usize, why: impl Into<String>) {
        let why = why.into();
        if self.said.insert((i, why.clone())) {
            let e = ConfigError::new(Some(self.origin(i)), Some(&self.lines[i].key), why);
            self.errors.push((i, e));
        }
    }

    /// Records a limit error and stops the whole load.
    fn stop(&mut self, i: usize, why: impl Into<String>, chain: &mut Chain) -> Result<(), Stop> {
        self.error(i, why);
        chain.stopped = true;
        Err(Stop)
    }

    fn nodes(
        &mut self,
        nodes: &[Node],
        context: Option<&str>,
        entries: &mut Vec<Entry>,
        chain: &mut Chain,
    ) -> Result<(), Stop> {
        for node in nodes {
            match node {
                Node::Line(i) => self.line(*i, context, entries, chain)?,
                Node::Block(b) => self.block(b, context, entries, chain)?,
            }
        }
        Ok(())
    }

    /// Counts one line run against [`MAX_LINE_RUNS`].
    fn step(&mut self, i: usize, chain: &mut Chain) -> Result<(), Stop> {
        chain.runs += 1;
        if chain.runs > MAX_LINE_RUNS {
            return self.stop(
                i,
                format!("more than {MAX_LINE_RUNS} lines run (loops included); stopped reading"),
                chain,
            );
        }
        Ok(())
    }

    fn block(
        &mut self,
        b: &Block,
        context: Option<&str>,
        entries: &mut Vec<Entry>,
        chain: &mut Chain,
    ) -> Result<(), Stop> {
        self.step(b.at, chain)?;
        if let Opener::Refused(why) = b.opener {
            self.error(b.at, format!("not supported: {why}"));
            return Ok(());
        }
        let Some(arg) = self.expand(b.at, context, entries, chain)? else { return Ok(()) };
        let dir = self.src.abs.parent().unwrap_or(std::path::Path::new("/")).to_owned();
        match b.opener {
            Opener::If(test, negated) => match logic::test(test, negated, &arg, &dir, entries) {
                Ok((true, value)) => self.nodes(&b.body, Some(&value), entries, chain),
                // The else branch sees the enclosing `%(_)`, as in uWSGI.
                Ok((false, _)) => self.nodes(&b.otherwise, context, entries, chain),
                Err(why) => {
                    self.error(b.at, why);
                    Ok(())
                }
            },
            Opener::For(each) => {
                let items = match logic::items(each, &arg, &dir) {
                    Ok(items) => items,
                    Err(why) => {
                        self.error(b.at, why);
                        return Ok(());
                    }
                };
                chain.repetitions += items.len();
                if chain.repetitions > MAX_REPETITIONS {
                    let why = format!("for loops repeat their bodies more than {MAX_REPETITIONS} times in all");
                    return self.stop(b.at, why, chain);
                }
                for item in &items {
                    self.nodes(&b.body, Some(item), entries, chain)?;
                }
                Ok(())
            }
            Opener::Refused(_) => Ok(()),
        }
    }

    fn line(
        &mut self,
        i: usize,
        context: Option<&str>,
        entries: &mut Vec<Entry>,
        chain: &mut Chain,
    ) -> Result<(), Stop> {
        self.step(i, chain)?;
        let Some(value) = self.expand(i, context, entries, chain)? else { return Ok(()) };
        match self.lines[i].key.as_str() {
            "include" | "ini" => self.include(i, &value, entries, chain),
            // uWSGI prints to stdout; here stdout is `--check-config`'s
            // report, so prints go to stderr with podmaster's prefix.
            "print" => {
                eprintln!("podmaster: print: {value}");
                Ok(())
            }
            key => {
                entries.push(Entry::new(key, value, self.origin(i)));
                Ok(())
            }
        }
    }

    /// Expands line `i`'s value: `None` when it failed (reported).
    fn expand(
        &mut self,
        i: usize,
        context: Option<&str>,
        entries: &mut [Entry],
        chain: &mut Chain,
    ) -> Result<Option<String>, Stop> {
        if entries.len() >= MAX_ENTRIES {
            return self.stop(i, ExpandError::TooMany.to_string(), chain).map(|()| None);
        }
        let request_log = REQUEST_LOG_KEYS.contains(&self.lines[i].key.as_str());
        let exec = Some(&mut chain.exec);
        let mut ex =
            Expander { magic: &self.magic, context, failed: &chain.failed, exec, request_log, used: Vec::new() };
        let expanded = ex.expand(&self.lines[i].raw, entries);
        let used = std::mem::take(&mut ex.used);
        mark_used(entries, &used);
        match expanded {
            Ok(v) => {
                // `%(key)` may repeat earlier values, which may repeat
                // theirs: without this a small file expands into gigabytes.
                let bytes = chain.bytes.get_or_insert_with(|| entries.iter().map(|e| e.value.len()).sum());
                if *bytes + v.len() > MAX_TOTAL_BYTES {
                    return self.stop(i, ExpandError::TooMuch.to_string(), chain).map(|()| None);
                }
                *bytes += v.len();
                Ok(Some(v))
            }
            Err(e) => self.fail(i, e, chain).map(|()| None),
        }
    }

    /// Records a value that failed; stops past [`MAX_FAILURES`].
    fn fail(&mut self, i: usize, e: ExpandError, chain: &mut Chain) -> Result<(), Stop> {
        let l = &self.lines[i];
        // What the line would have defined: a placeholder naming it later
        // is a consequence of this error.
        let defined = match l.key.as_str() {
            "set-placeholder" | "set-ph" => {
                l.raw.split_once('=').map(|(n, _)| n.trim()).filter(|n| !n.contains(['%', '$', '@']))
            }
            key => Some(key),
        };
        if let Some(name) = defined {
            chain.failed.insert(name.to_owned());
        }
        if !matches!(e, ExpandError::Consequence(_)) {
            self.error(i, e.to_string());
        }
        chain.failures += 1;
        if chain.failures > MAX_FAILURES {
            let why = format!("more than {MAX_FAILURES} values could not be expanded; stopped reading");
            return self.stop(i, why, chain);
        }
        Ok(())
    }

    /// `include`/`ini = FILE`, `FILE:section` or `:section` (this file).
    fn include(&mut self, i: usize, value: &str, entries: &mut Vec<Entry>, chain: &mut Chain) -> Result<(), Stop> {
        let (inc, sec) = split_spec(value);
        let loaded = match (inc, sec) {
            ("", Some(section)) => load_section(Src { section, ..self.src }, entries, chain),
            ("", None) => {
                self.error(i, "expected FILE, FILE:section or :section");
                return Ok(());
            }
            (inc, sec) => {
                let path = resolve_in(self.src.abs, inc);
                load_file(&path, inc, sec.unwrap_or(self.src.section), entries, chain)
            }
        };
        if let Err(err) = loaded {
            for mut e in err.into_each() {
                if e.origin.is_none() {
                    e.origin = Some(self.origin(i));
                    e.key = Some(self.lines[i].key.clone());
                }
                self.errors.push((i, e));
            }
        }
        if chain.stopped { Err(Stop) } else { Ok(()) }
    }
}
