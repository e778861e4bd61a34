//! The option table: every option podmaster understands is declared here
//! once, with its name, aliases, value kind, whether it repeats, its
//! default, its help and how it applies to the [`Config`]. The CLI (and
//! `--help`), the ini and YAML readers, environment variables,
//! [`Config::resolve`] and `--check-config` all read this table; nothing
//! else in the crate spells an option name as a string to parse.
//!
//! The declarations are split by concern, one file each: [`sockets`],
//! [`workers`], `wsgi`, `requests`, [`lifecycle`], [`logging`]. Adding an option is one entry
//! in one of them (plus a test); the tests below check that every entry
//! is complete and that its default applies.

mod lifecycle;
pub mod logging;
pub(super) mod requests;
pub mod resources;
mod sockets;
pub mod uwsgi;
pub mod workers;
mod wsgi;

use super::{Config, ConfigError, Entry, Origin};

/// What a value must look like; checked by the option's applier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `true` when given bare; false/off/no/0 (any case) are false.
    Bool,
    /// A whole number.
    Uint,
    /// Seconds, whole or fractional (`0.5`).
    Seconds,
    /// Free text (paths, addresses, signal names: checked when applied).
    Text,
}

/// How one value of an option changes the configuration: parses and
/// checks `entry.value`, and sets (a scalar) or extends (a list) the
/// field(s) the option controls. Errors name the entry.
pub type Apply = fn(&mut Config, &Entry) -> Result<(), ConfigError>;

/// One option, declared once.
#[derive(Debug, Clone, Copy)]
pub struct OptDef {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub kind: Kind,
    /// Repeatable options accumulate across sources; scalars: last one wins.
    pub repeatable: bool,
    /// Applied first, with origin `default`, when no source sets the
    /// option; shown in `--help` and by `--check-config`.
    pub default: Option<&'static str>,
    pub help: &'static str,
    pub apply: Apply,
}

impl OptDef {
    /// A scalar option without aliases or default.
    pub const fn new(name: &'static str, kind: Kind, help: &'static str, apply: Apply) -> OptDef {
        OptDef { name, aliases: &[], kind, repeatable: false, default: None, help, apply }
    }

    pub const fn aliases(mut self, aliases: &'static [&'static str]) -> OptDef {
        self.aliases = aliases;
        self
    }

    pub const fn repeatable(mut self) -> OptDef {
        self.repeatable = true;
        self
    }

    pub const fn default(mut self, value: &'static str) -> OptDef {
        self.default = Some(value);
        self
    }
}

/// The table, in `--help` order: the concern files one after the other.
const PARTS: [&[OptDef]; 7] = [
    sockets::OPTIONS,
    workers::OPTIONS,
    wsgi::OPTIONS,
    requests::OPTIONS,
    resources::OPTIONS,
    lifecycle::OPTIONS,
    logging::OPTIONS,
];

const COUNT: usize = {
    let (mut n, mut i) = (0, 0);
    while i < PARTS.len() {
        n += PARTS[i].len();
        i += 1;
    }
    n
};

/// The parts joined into one array at compile time.
const fn join<const N: usize>(parts: &[&[OptDef]]) -> [OptDef; N] {
    let mut out = [parts[0][0]; N];
    let (mut k, mut i) = (0, 0);
    while i < parts.len() {
        let mut j = 0;
        while j < parts[i].len() {
            out[k] = parts[i][j];
            k += 1;
            j += 1;
        }
        i += 1;
    }
    assert!(k == N, "COUNT and the parts disagree");
    out
}

static ALL: [OptDef; COUNT] = join(&PARTS);

/// Every option podmaster understands.
pub static OPTIONS: &[OptDef] = &ALL;

/// Finds an option by its name or one of its aliases.
pub fn lookup(name: &str) -> Option<&'static OptDef> {
    OPTIONS.iter().find(|o| o.name == name || o.aliases.contains(&name))
}

/// The default of every option that `entries` do not set, as entries
/// with origin `default`: the lowest-precedence source. (A default that
/// a source overrides is left out: for a scalar the result is the same,
/// and a repeatable option's values replace its default, not extend it.)
pub fn defaults(entries: &[Entry]) -> Vec<Entry> {
    let set: Vec<&str> =
        entries.iter().filter(|e| !e.placeholder).filter_map(|e| lookup(&e.key)).map(|o| o.name).collect();
    OPTIONS
        .iter()
        .filter(|o| !set.contains(&o.name))
        .filter_map(|o| Some(Entry::new(o.name, o.default?, Origin::Default)))
        .collect()
}

/// The known option closest to `name`, for "did you mean" hints.
pub fn suggest(name: &str) -> Option<&'static str> {
    let mut best: Option<(usize, &'static str)> = None;
    for o in OPTIONS {
        for candidate in std::iter::once(&o.name).chain(o.aliases.iter()) {
            let d = edit_distance(name, candidate);
            if d <= (candidate.len() / 3).max(2) && best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, o.name));
            }
        }
    }
    best.map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// What a `static-expires*` option matches by, and whether it counts
/// from the file's mtime; None for other options.
pub fn expires_kind(name: &str) -> Option<(super::ExpiresOn, bool)> {
    requests::EXPIRES.iter().find(|(n, ..)| *n == name).map(|(_, on, mtime, _)| (*on, *mtime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for o in OPTIONS {
            for n in std::iter::once(&o.name).chain(o.aliases.iter()) {
                assert!(seen.insert(*n), "{n} declared twice");
                assert!(uwsgi::ignored(n).is_none() && uwsgi::refused(n).is_none(), "{n} also listed as uWSGI-only");
            }
        }
    }

    #[test]
    fn aliases_resolve_to_canonical() {
        assert_eq!(lookup("home").unwrap().name, "virtualenv");
        assert_eq!(lookup("processes").unwrap().name, "processes");
        assert!(lookup("procesess").is_none());
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("procesess"), Some("processes"));
        assert_eq!(suggest("sockets"), Some("socket"));
        assert_eq!(suggest("zzzzzzzzzzzz"), None);
    }

    /// Adding an option is one declaration: this checks that each one is
    /// complete, that its default applies cleanly through its own applier,
    /// that its applier agrees with its kind, and that every source can
    /// name it (CLI flag, `UWSGI_*` variable).
    #[test]
    fn every_declaration_is_complete_and_its_default_applies() {
        let cli = |o: &OptDef, v: &str| Entry::new(o.name, v, Origin::Cli(o.name.into()));
        for o in OPTIONS {
            assert!(
                !o.name.is_empty() && o.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{}",
                o.name
            );
            assert!(!o.help.is_empty() && !o.help.ends_with('.'), "{}: help", o.name);
            if let Some(d) = o.default {
                assert!(!o.repeatable, "{}: a repeatable option starts empty", o.name);
                let mut c = Config::blank();
                (o.apply)(&mut c, &Entry::new(o.name, d, Origin::Default))
                    .unwrap_or_else(|e| panic!("{}: default {d:?}: {e}", o.name));
            }
            let refused = |v: &str| (o.apply)(&mut Config::blank(), &cli(o, v)).unwrap_err().message;
            match o.kind {
                Kind::Bool => {
                    for v in ["true", "false", "off", ""] {
                        (o.apply)(&mut Config::blank(), &cli(o, v)).unwrap();
                    }
                }
                Kind::Uint => assert!(refused("abc").starts_with("expected a whole number"), "{}", o.name),
                Kind::Seconds => assert!(refused("abc").starts_with("expected seconds"), "{}", o.name),
                Kind::Text => {}
            }
            let var = format!("UWSGI_{}", o.name.to_ascii_uppercase().replace('-', "_"));
            assert_eq!(crate::config::env_option(&var).map(|d| d.name), Some(o.name));
            let args = vec![format!("--{}", o.name), o.default.unwrap_or("x").to_owned()];
            assert!(super::super::cli::parse(args).is_ok(), "--{}", o.name);
        }
    }

    #[test]
    fn defaults_fill_only_what_no_source_sets() {
        let set = [Entry::new("home", "/v", Origin::Cli("home".into())), Entry::new("processes", "2", Origin::Default)];
        let d = defaults(&set);
        assert!(d.iter().all(|e| e.origin == Origin::Default && e.key != "processes"));
        assert_eq!(d.len(), OPTIONS.iter().filter(|o| o.default.is_some()).count() - 1);
        assert!(d.iter().any(|e| e.key == "worker-reload-mercy" && e.value == "25"));
    }
}
