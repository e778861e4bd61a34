//! The command line, built from the option table: every option is a
//! `--name VALUE` flag (booleans take an optional value), plus the flags
//! that pick sources and modes. `--help` is generated from the same table.

use clap::{Arg, ArgAction, Command};

use super::options::{Kind, OPTIONS};
use super::{ConfigError, Entry, Origin, Source, Sources};

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// Run the master with these sources.
    Run(Sources),
    /// `--check-config`: validate, print the effective configuration, exit.
    Check(Sources),
    /// `-- COMMAND ARGS...`: init mode.
    Init(Sources, Vec<String>),
}

fn command() -> Command {
    let mut cmd =
        Command::new("podmaster")
            // `podmaster 0.1.0 (Python 3.11.7)`: the embedded interpreter is part of what was built.
            .version(concat!(env!("CARGO_PKG_VERSION"), " (Python ", env!("PODMASTER_PY_VERSION_FULL"), ")"))
            .about("Container init and process manager for Python services (uWSGI worker-override compatible)")
            .after_help(
                "Sources, lowest precedence first: built-in defaults, UWSGI_*/PODMASTER_* environment variables, \
             config files in the order given, command-line options.",
            )
            .arg(
                Arg::new("ini")
                    .long("ini")
                    .value_name("FILE[:section]")
                    .action(ArgAction::Append)
                    .help("uWSGI ini file to load ([uwsgi] section unless one is named)"),
            )
            .arg(
                Arg::new("yaml")
                    .long("yaml")
                    .visible_alias("yml")
                    .value_name("FILE[:section|:key]")
                    .action(ArgAction::Append)
                    .help("uWSGI YAML file (`uwsgi:` root) or Kubernetes ConfigMap manifest"),
            )
            .arg(
                Arg::new("json")
                    .long("json")
                    .value_name("FILE[:section]")
                    .action(ArgAction::Append)
                    .help("JSON file with the same shape as the YAML one"),
            )
            .arg(
                Arg::new("config-dir")
                    .long("config-dir")
                    .value_name("DIR")
                    .action(ArgAction::Append)
                    .help("ConfigMap projected as a directory: one file per option (kubelet's ..data layout)"),
            )
            .arg(
                Arg::new("check-config").long("check-config").action(ArgAction::SetTrue).help(
                    "validate the configuration, print each effective option with its origin, and exit (0 or 78)",
                ),
            )
            .arg(
                Arg::new("config-files")
                    .value_name("CONFIG")
                    .action(ArgAction::Append)
                    .help("config file loaded by its extension (.ini, .yaml, .yml, .json)"),
            )
            .arg(
                Arg::new("command").value_name("COMMAND").num_args(1..).last(true).allow_hyphen_values(true).help(
                    "init mode: run COMMAND as the only child, forward signals, reap zombies, pass its exit code",
                ),
            );
    for o in OPTIONS {
        let mut help = o.help.to_owned();
        if !o.aliases.is_empty() {
            let also: Vec<String> = o.aliases.iter().map(|a| format!("--{a}")).collect();
            help += &format!(" (also {})", also.join(", "));
        }
        if let Some(d) = o.default {
            help += &format!(" [default: {d}]");
        }
        cmd = cmd.arg(option_arg(o.name, o.kind).help(help));
        // Each alias is an argument of its own, hidden from --help (the
        // option's help names it): the entry keeps the name as written, as
        // from a file (`--http-socket` speaks HTTP, `--socket` uwsgi).
        for a in o.aliases {
            cmd = cmd.arg(option_arg(a, o.kind).hide(true));
        }
    }
    cmd
}

fn option_arg(name: &'static str, kind: Kind) -> Arg {
    let arg = Arg::new(name).long(name).action(ArgAction::Append);
    match kind {
        Kind::Bool => arg.num_args(0..=1).default_missing_value("true").value_name("BOOL"),
        Kind::Uint => arg.value_name("N"),
        Kind::Seconds => arg.value_name("SECONDS"),
        Kind::Text => arg.value_name("VALUE"),
    }
}

/// A command-line problem: clap's own (help, version, usage errors) or a
/// config source it cannot classify.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Clap(clap::Error),
    #[error(transparent)]
    Config(ConfigError),
}

/// Parses `args` (without the program name).
pub fn parse(args: Vec<String>) -> Result<Invocation, CliError> {
    let m =
        command().try_get_matches_from(std::iter::once("podmaster".to_owned()).chain(args)).map_err(CliError::Clap)?;
    let mut sources = Sources::default();
    // Config sources keep their command-line order, whichever flag named them.
    let mut files: Vec<(usize, Source)> = Vec::new();
    for id in ["ini", "yaml", "json", "config-dir", "config-files"] {
        if let (Some(vals), Some(idx)) = (m.get_many::<String>(id), m.indices_of(id)) {
            for (i, v) in idx.zip(vals) {
                let src = match id {
                    "ini" => Source::Ini(v.clone()),
                    "yaml" => Source::Yaml(v.clone()),
                    "json" => Source::Json(v.clone()),
                    "config-dir" => Source::Dir(v.into()),
                    _ => Source::by_extension(v).map_err(CliError::Config)?,
                };
                files.push((i, src));
            }
        }
    }
    files.sort_by_key(|(i, _)| *i);
    sources.files = files.into_iter().map(|(_, f)| f).collect();
    // Options in command-line order, whatever name each was given by (the
    // order of `--socket` and `--http-socket` is the sockets' fd order).
    let mut given: Vec<(usize, Entry)> = Vec::new();
    for name in OPTIONS.iter().flat_map(|o| std::iter::once(o.name).chain(o.aliases.iter().copied())) {
        if let (Some(vals), Some(idx)) = (m.get_many::<String>(name), m.indices_of(name)) {
            for (i, v) in idx.zip(vals) {
                given.push((i, Entry::new(name, v.clone(), Origin::Cli(name.into()))));
            }
        }
    }
    given.sort_by_key(|(i, _)| *i);
    sources.cli.extend(given.into_iter().map(|(_, e)| e));
    if let Some(cmd) = m.get_many::<String>("command") {
        return Ok(Invocation::Init(sources, cmd.cloned().collect()));
    }
    Ok(if m.get_flag("check-config") { Invocation::Check(sources) } else { Invocation::Run(sources) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Sources {
        match parse(args.iter().map(|s| s.to_string()).collect()).unwrap() {
            Invocation::Run(s) | Invocation::Check(s) | Invocation::Init(s, _) => s,
        }
    }

    #[test]
    fn files_keep_order_and_options_become_entries() {
        let s = run(&[
            "a.ini",
            "--yaml",
            "c.yaml",
            "--ini",
            "b.ini:x",
            "--processes",
            "3",
            "--master",
            "--home",
            "/v",
            "d.json",
        ]);
        assert_eq!(
            s.files,
            vec![
                Source::Ini("a.ini".into()),
                Source::Yaml("c.yaml".into()),
                Source::Ini("b.ini:x".into()),
                Source::Json("d.json".into())
            ]
        );
        let kv: Vec<_> = s.cli.iter().map(|e| (e.key.as_str(), e.value.as_str())).collect();
        // In command-line order, each under the name it was given by.
        assert_eq!(kv, vec![("processes", "3"), ("master", "true"), ("home", "/v")]);
        assert_eq!(s.cli[0].origin.to_string(), "--processes");
    }

    #[test]
    fn trailing_command_is_init_mode() {
        let args = ["--exit-grace", "1", "--", "sh", "-c", "exit 3"].iter().map(|s| s.to_string()).collect();
        match parse(args).unwrap() {
            Invocation::Init(s, cmd) => {
                assert_eq!(cmd, vec!["sh", "-c", "exit 3"]);
                assert_eq!(s.cli[0].key, "exit-grace");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_flag_and_unknown_extension_are_errors() {
        assert!(matches!(parse(vec!["--procesess".into(), "3".into()]), Err(CliError::Clap(_))));
        assert!(matches!(parse(vec!["app.conf".into()]), Err(CliError::Config(_))));
    }
}
