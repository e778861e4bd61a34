//! The command line, built from the option table: every option is a
//! `--name VALUE` flag (booleans take an optional value), plus the flags
//! that pick sources and modes. `--help` is generated from the same table.

use clap::{Arg, ArgAction, Command};

use super::options::{Kind, OPTIONS};
use super::{Entry, Origin, Sources};

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// Run the master with these sources.
    Run(Sources),
}

fn command() -> Command {
    let mut cmd = Command::new("podmaster")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Container init and process manager for Python services (uWSGI worker-override compatible)")
        .after_help(
            "Sources, lowest precedence first: UWSGI_*/PODMASTER_* environment variables, config files \
             in the order given, command-line options.",
        )
        .arg(
            Arg::new("ini")
                .long("ini")
                .value_name("FILE[:section]")
                .action(ArgAction::Append)
                .help("uWSGI ini file to load ([uwsgi] section unless one is named)"),
        )
        .arg(
            Arg::new("config-files")
                .value_name("CONFIG")
                .action(ArgAction::Append)
                .help("config file loaded by its extension (.ini)"),
        );
    for o in OPTIONS {
        let mut arg = Arg::new(o.name).long(o.name).action(ArgAction::Append).help(o.help);
        for a in o.aliases {
            arg = arg.visible_alias(*a);
        }
        arg = match o.kind {
            Kind::Bool => arg.num_args(0..=1).default_missing_value("true").value_name("BOOL"),
            Kind::Uint => arg.value_name("N"),
            Kind::Seconds => arg.value_name("SECONDS"),
            Kind::Text => arg.value_name("VALUE"),
        };
        if let Some(d) = o.default {
            arg = arg.help(format!("{} [default: {d}]", o.help));
        }
        cmd = cmd.arg(arg);
    }
    cmd
}

/// Parses `args` (without the program name). `Err` carries clap's own
/// message and whether it is a request for help/version (exit 0).
pub fn parse(args: Vec<String>) -> Result<Invocation, clap::Error> {
    let m = command().try_get_matches_from(std::iter::once("podmaster".to_owned()).chain(args))?;
    let mut sources = Sources::default();
    // Config files keep their command-line order, whichever flag named them.
    let mut files: Vec<(usize, String)> = Vec::new();
    for id in ["ini", "config-files"] {
        if let (Some(vals), Some(idx)) = (m.get_many::<String>(id), m.indices_of(id)) {
            files.extend(idx.zip(vals.cloned()));
        }
    }
    files.sort_by_key(|(i, _)| *i);
    sources.files = files.into_iter().map(|(_, f)| f).collect();
    for o in OPTIONS {
        if let Some(vals) = m.get_many::<String>(o.name) {
            for v in vals {
                sources.cli.push(Entry {
                    key: o.name.to_owned(),
                    value: v.clone(),
                    origin: Origin::Cli(o.name.into()),
                });
            }
        }
    }
    Ok(Invocation::Run(sources))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Sources {
        match parse(args.iter().map(|s| s.to_string()).collect()).unwrap() {
            Invocation::Run(s) => s,
        }
    }

    #[test]
    fn files_keep_order_and_options_become_entries() {
        let s = run(&["a.ini", "--ini", "b.ini:x", "--processes", "3", "--master", "--home", "/v"]);
        assert_eq!(s.files, vec!["a.ini", "b.ini:x"]);
        let kv: Vec<_> = s.cli.iter().map(|e| (e.key.as_str(), e.value.as_str())).collect();
        assert_eq!(kv, vec![("master", "true"), ("processes", "3"), ("virtualenv", "/v")]);
        assert_eq!(s.cli[1].origin.to_string(), "--processes");
    }

    #[test]
    fn unknown_flag_is_an_error() {
        assert!(parse(vec!["--procesess".into(), "3".into()]).is_err());
    }
}
