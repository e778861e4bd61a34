//! Options about what the workers are: how many, what they run (a Python
//! script or a command), in which directory, environment and credentials,
//! which app metrics they declare, when they count as ready, and the side
//! processes supervised next to them.

use super::{Kind, OptDef};
use crate::config::metric::{MAX_METRICS, parse_metric};
use crate::config::values::{command, flag, lookup_group, lookup_user, one_of, path, seconds, strip_comment, whole_in};
use crate::config::{AtEntry, Config, ConfigError, Creds, Entry, ReadyMode, ReadyWorkers};

/// Table-like (one declaration per option), exempt from the 80-line limit.
pub(super) const OPTIONS: &[OptDef] = &[
    OptDef::new(
        "master",
        Kind::Bool,
        "accepted for uWSGI compatibility; podmaster always runs a master",
        |_, _| Ok(()),
    )
    .default("true"),
    OptDef::new(
        "processes",
        Kind::Uint,
        "number of workers, or `auto`: the CPUs the container may use (its cgroup's CPU quota, rounded up)",
        |c, e| {
            c.processes_auto = strip_comment(&e.value) == "auto";
            if c.processes_auto {
                // Sized from the cgroup at startup (`Config::size_workers`).
                c.processes = 1;
                return Ok(());
            }
            if strip_comment(&e.value).parse::<u64>().is_err() {
                return Err(ConfigError::at(e, format!("expected a whole number or `auto`, found {:?}", e.value)));
            }
            whole_in(e, 1..=1024, "1 to 1024 workers or `auto`").map(|n| c.processes = n as u32)
        },
    )
    .aliases(&["workers"])
    .default("1"),
    OptDef::new(
        "python-worker-override",
        Kind::Text,
        "Python script each worker runs as __main__ with the `uwsgi` module available",
        |c, e| {
            c.script = Some(path(e));
            Ok(())
        },
    )
    .aliases(&["worker-override"]),
    OptDef::new(
        "ready-workers",
        Kind::Text,
        "accepting workers needed for /readyz 200: a number or a percentage of processes",
        ready_workers,
    )
    .default("100%"),
    OptDef::new("uid", Kind::Text, "user the workers run as (name or number); sockets are bound before dropping", uid),
    OptDef::new("gid", Kind::Text, "group the workers run as (name or number; default: the uid's primary group)", gid),
    OptDef::new("chdir", Kind::Text, "directory the workers start in", |c, e| {
        c.chdir = Some(path(e));
        Ok(())
    }),
    OptDef::new("virtualenv", Kind::Text, "virtualenv whose site-packages the embedded interpreter uses", |c, e| {
        c.virtualenv = Some(path(e));
        Ok(())
    })
    .aliases(&["home", "venv", "pyhome"]),
    OptDef::new("pythonpath", Kind::Text, "directory prepended to sys.path (repeatable)", |c, e| {
        c.pythonpath.push(path(e));
        Ok(())
    })
    .aliases(&["python-path", "pp"])
    .repeatable(),
    OptDef::new(
        "shared-import",
        Kind::Text,
        "module the zygote imports once, before forking the Python workers (repeatable, in order)",
        shared_import,
    )
    .aliases(&["shared-python-import", "shared-pyimport"])
    .repeatable(),
    OptDef::new(
        "lazy-apps",
        Kind::Bool,
        "true: no zygote; every Python worker is a fork+exec with its own cold interpreter",
        |c, e| {
            c.lazy_apps = flag(e);
            Ok(())
        },
    )
    .default("false"),
    OptDef::new(
        "worker-nice",
        Kind::Uint,
        "workers and zygotes run this much nicer than the master (0 to 19; 0: the same priority), \
         so probes and supervision win the CPU from busy workers",
        |c, e| whole_in(e, 0..=19, "a nice increment from 0 to 19").map(|n| c.worker_nice = n as i32),
    )
    .default("5"),
    OptDef::new(
        "metric",
        Kind::Text,
        "app metric, uWSGI syntax: name=NAME[,type=counter|gauge][,initial_value=N] (repeatable)",
        metric,
    )
    .repeatable(),
    OptDef::new(
        "pyargv",
        Kind::Text,
        "arguments for the worker script's sys.argv (split like a shell, without one)",
        |c, e| command(e).map(|argv| c.pyargv = argv),
    ),
    OptDef::new(
        "worker-exec",
        Kind::Text,
        "command each worker slot runs, with the sockets passed the systemd way (LISTEN_FDS, NOTIFY_SOCKET)",
        |c, e| command(e).map(|argv| c.command = Some(argv)),
    )
    .aliases(&["worker-command"]),
    OptDef::new(
        "worker-ready-mode",
        Kind::Text,
        "notify: a worker accepts once it sends READY=1; spawn: as soon as it runs",
        |c, e| one_of(e, &[("notify", ReadyMode::Notify), ("spawn", ReadyMode::Spawn)]).map(|m| c.ready_mode = m),
    )
    .default("notify"),
    OptDef::new(
        "worker-ready-warning",
        Kind::Seconds,
        "warn (log and /readyz) about a worker that has run this many seconds without reporting accepting; 0: never",
        |c, e| seconds(e).map(|d| c.worker_ready_warning = d),
    )
    .default("30"),
    OptDef::new(
        "env",
        Kind::Text,
        "KEY=VALUE set in the environment of every worker, zygote and attach-daemon (repeatable; \
         not seen by podmaster's own config expansion)",
        env,
    )
    .repeatable(),
    OptDef::new(
        "set-placeholder",
        Kind::Text,
        "NAME=VALUE: a placeholder %(NAME) for the configuration read after it (repeatable; not an option)",
        |_, e| {
            placeholder(e)?;
            Ok(())
        },
    )
    .aliases(&["set-ph"])
    .repeatable(),
    OptDef::new(
        "attach-daemon",
        Kind::Text,
        "supervised side process (repeatable): respawned with backoff, stopped last",
        |c, e| command(e).map(|argv| c.attach_daemons.push(argv)),
    )
    .repeatable(),
];

fn ready_workers(c: &mut Config, e: &Entry) -> Result<(), ConfigError> {
    let v = e.value.trim();
    c.ready_workers = if let Some(p) = v.strip_suffix('%') {
        match p.trim().parse::<u32>() {
            Ok(p) if (1..=100).contains(&p) => ReadyWorkers::Percent(p),
            _ => return Err(ConfigError::at(e, format!("expected a percentage 1%..100%, found {v:?}"))),
        }
    } else {
        match v.parse::<u32>() {
            Ok(n) if n >= 1 => ReadyWorkers::Count(n),
            _ => {
                let msg = format!("expected a number of workers (>= 1) or a percentage, found {v:?}");
                return Err(ConfigError::at(e, msg));
            }
        }
    };
    Ok(())
}

fn uid(c: &mut Config, e: &Entry) -> Result<(), ConfigError> {
    let (uid, primary) = lookup_user(e.value.trim()).at(e)?;
    let creds = c.creds.get_or_insert(Creds { uid, gid: primary, explicit_gid: false });
    creds.uid = uid;
    if !creds.explicit_gid {
        creds.gid = primary;
    }
    Ok(())
}

fn gid(c: &mut Config, e: &Entry) -> Result<(), ConfigError> {
    let gid = lookup_group(e.value.trim()).at(e)?;
    let creds = c.creds.get_or_insert(Creds { uid: u32::MAX, gid, explicit_gid: true });
    creds.gid = gid;
    creds.explicit_gid = true;
    Ok(())
}

fn metric(c: &mut Config, e: &Entry) -> Result<(), ConfigError> {
    let d = parse_metric(&e.value).at(e)?;
    if c.metrics.iter().any(|m| m.name == d.name) {
        return Err(ConfigError::at(e, format!("metric {:?} declared twice", d.name)));
    }
    if let Some(other) = crate::config::metric::clash(&c.metrics, &d) {
        return Err(ConfigError::at(
            e,
            format!("metric {:?} would have the same Prometheus name as {:?}; rename one", d.name, other.name),
        ));
    }
    if c.metrics.len() >= MAX_METRICS {
        return Err(ConfigError::at(e, format!("at most {MAX_METRICS} metrics")));
    }
    c.metrics.push(d);
    Ok(())
}

/// A dotted module name, as `import` takes it: the zygote imports it with
/// `importlib.import_module`, so anything else could only fail later.
fn shared_import(c: &mut Config, e: &Entry) -> Result<(), ConfigError> {
    let name = e.value.trim();
    let valid = !name.is_empty()
        && name.len() <= 256
        && name.split('.').all(|part| {
            let mut chars = part.chars();
            chars.next().is_some_and(|f| f == '_' || f.is_alphabetic())
                && chars.all(|ch| ch == '_' || ch.is_alphanumeric())
        });
    if !valid {
        return Err(ConfigError::at(e, format!("expected a module name such as myapp.models, found {name:?}")));
    }
    if c.shared_imports.len() >= 256 {
        return Err(ConfigError::at(e, "at most 256 shared-import modules"));
    }
    c.shared_imports.push(name.to_owned());
    Ok(())
}

/// `KEY=VALUE`, as the environment takes it: a name without `=` or NUL.
fn env(c: &mut Config, e: &Entry) -> Result<(), ConfigError> {
    let v = e.value.trim_start();
    match v.split_once('=') {
        Some((k, val)) if !k.is_empty() && !k.contains('\0') && !val.contains('\0') => {
            c.env.retain(|(old, _)| old != k);
            c.env.push((k.to_owned(), val.to_owned()));
            Ok(())
        }
        _ => Err(ConfigError::at(e, format!("expected KEY=VALUE, found {v:?}"))),
    }
}

/// `NAME=VALUE` of a `set-placeholder`: the name and the value.
pub fn placeholder(e: &Entry) -> Result<(&str, &str), ConfigError> {
    match e.value.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() && !k.contains(['(', ')', '%', '$', '@']) => Ok((k.trim(), v.trim())),
        _ => Err(ConfigError::at(e, format!("expected NAME=VALUE, found {:?}", e.value))),
    }
}
