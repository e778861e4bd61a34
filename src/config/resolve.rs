//! Resolution: the raw entries of every source, lowest precedence first,
//! become one typed [`Config`]. The option table's defaults come first
//! (origin `default`), then the entries in order; each goes through its
//! option's applier, so the last value of a scalar wins and repeatable
//! options keep every value in order. Touches no file and no socket.

use super::options::{self, OptDef, uwsgi};
use super::{Config, ConfigError, Entry, Origin};

impl Config {
    /// Type-checks the raw entries and applies defaults. The last value of a
    /// scalar wins; repeatable options keep every value in order. Every bad
    /// entry is reported, not only the first (see [`Config::resolve_all`]).
    pub fn resolve(entries: &[Entry]) -> Result<Config, ConfigError> {
        let (cfg, errors) = Config::resolve_all(entries);
        ConfigError::all(errors).map(|()| cfg)
    }

    /// [`Config::resolve`] that goes on past bad entries: the configuration
    /// built from the good ones, and an error for each bad one, in order.
    pub fn resolve_all(entries: &[Entry]) -> (Config, Vec<ConfigError>) {
        let mut cfg = Config::blank();
        let mut errors = Vec::new();
        for e in options::defaults(entries).iter().chain(entries).filter(|e| !e.placeholder) {
            let taken = match options::lookup(&e.key) {
                Some(def) => cfg.take(def, e),
                None => cfg.take_unknown(e),
            };
            errors.extend(taken.err());
        }
        if cfg.serves_wsgi() {
            // podmaster's WSGI worker speaks each socket's protocol: the
            // alias notice ("your workers speak it") would be wrong; the
            // one of `http` (no router) stays.
            cfg.notices.retain(|(key, _, _)| key == "http" || options::lookup(key).is_none_or(|o| o.name != "socket"));
            // It logs requests: the request-log options mean what they say.
            cfg.notices.retain(|(key, _, _)| {
                options::lookup(key).is_none_or(|o| !options::logging::REQUEST_LOG_OPTIONS.contains(&o.name))
            });
        }
        (cfg, errors)
    }

    /// Applies one value of a known option and records it (defaults are
    /// not recorded: `uwsgi.opt` and error origins show only what was set).
    fn take(&mut self, def: &'static OptDef, e: &Entry) -> Result<(), ConfigError> {
        (def.apply)(self, e)?;
        if e.origin != Origin::Default {
            self.opt.push((def.name.to_owned(), e.value.clone()));
            self.set_at.retain(|(k, _)| *k != def.name);
            self.set_at.push((def.name, e.origin.clone()));
        }
        Ok(())
    }

    /// A key that is not an option: a uWSGI option podmaster has no use
    /// for (noted), one it refuses (an error saying why), a
    /// `%(placeholder)` variable (skipped), or a mistake (an error with a
    /// suggestion).
    fn take_unknown(&mut self, e: &Entry) -> Result<(), ConfigError> {
        let key = e.key.as_str();
        let plugins = matches!(key, "plugin" | "plugins");
        if plugins {
            uwsgi::plugins(&e.value).map_err(|m| ConfigError::at(e, m))?;
        }
        if uwsgi::ignored(key).is_some() || plugins {
            self.ignored.push((e.key.clone(), e.origin.clone()));
            self.opt.push((e.key.clone(), e.value.clone()));
            return Ok(());
        }
        if let Some(why) = uwsgi::refused(key) {
            return Err(ConfigError::at(e, format!("uWSGI option not supported by podmaster: {why}")));
        }
        if e.variable {
            // Used only as a %(placeholder) variable, as uWSGI allows.
            return Ok(());
        }
        let hint = options::suggest(&e.key).map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
        Err(ConfigError::at(e, format!("unknown option{hint}")))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use nix::sys::signal::Signal;

    use super::*;
    use crate::config::options::Kind;
    use crate::config::{LogFormat, ReadyMode, ReadyWorkers};

    fn e(key: &str, value: &str) -> Entry {
        Entry::new(key, value, Origin::Cli(key.into()))
    }

    fn base() -> Vec<Entry> {
        vec![e("socket", "127.0.0.1:0"), e("python-worker-override", "w.py")]
    }

    #[test]
    fn last_scalar_wins_and_lists_accumulate() {
        let mut v = base();
        v.extend([e("processes", "2"), e("processes", "4"), e("socket", ":9000")]);
        let c = Config::resolve(&v).unwrap();
        c.check_workers(false).unwrap();
        assert_eq!(c.processes, 4);
        assert_eq!(c.sockets.len(), 2);
    }

    #[test]
    fn bad_number_names_origin_and_key() {
        let mut v = base();
        v.push(Entry::new("processes", "abc", Origin::File { path: "app.ini".into(), line: 7 }));
        let err = Config::resolve(&v).unwrap_err().to_string();
        assert_eq!(err, r#"app.ini:7: processes: expected a whole number or `auto`, found "abc""#);
    }

    #[test]
    fn unknown_option_suggests() {
        let mut v = base();
        v.push(e("procesess", "4"));
        let err = Config::resolve(&v).unwrap_err().to_string();
        assert_eq!(err, "--procesess: procesess: unknown option; did you mean `processes`?");
    }

    #[test]
    fn harmless_and_unsupported() {
        let mut v = base();
        v.push(e("vacuum", "true"));
        assert_eq!(Config::resolve(&v).unwrap().ignored.len(), 1);
        v.push(e("cron", "0 0 -1 -1 -1 /bin/true"));
        assert!(Config::resolve(&v).unwrap_err().to_string().contains("not supported"));
    }

    #[test]
    fn ready_workers_forms() {
        assert_eq!(ReadyWorkers::Percent(100).target(4), 4);
        assert_eq!(ReadyWorkers::Percent(50).target(3), 2);
        assert_eq!(ReadyWorkers::Percent(1).target(4), 1);
        assert_eq!(ReadyWorkers::Count(9).target(4), 4);
        let mut v = base();
        v.push(e("ready-workers", "0%"));
        assert!(Config::resolve(&v).is_err());
    }

    #[test]
    fn seconds_and_signals() {
        let mut v = base();
        v.extend([e("drain-delay", "0.5"), e("worker-stop-signal", "term")]);
        let c = Config::resolve(&v).unwrap();
        assert_eq!(c.drain_delay, Duration::from_millis(500));
        assert_eq!(c.worker_stop_signal, Some(Signal::SIGTERM));
        for bad in ["-1", "abc", "inf", "NaN"] {
            let mut v = base();
            v.push(e("drain-delay", bad));
            assert!(Config::resolve(&v).is_err(), "{bad}");
        }
        let mut v = base();
        v.push(e("worker-stop-signal", "KILL"));
        assert!(Config::resolve(&v).is_err());
    }

    #[test]
    fn every_declared_option_is_wired() {
        let sample = |o: &options::OptDef| match o.kind {
            _ if o.name == "buffer-size" => "8192",
            Kind::Bool => "true",
            Kind::Uint => "2",
            Kind::Seconds => "1",
            Kind::Text => match o.name {
                "socket" => ":0",
                "ready-workers" => "50%",
                "worker-stop-signal" => "TERM",
                "log-format" => "json",
                "log-level" => "debug",
                "worker-ready-mode" => "spawn",
                "chmod-socket" => "660",
                "chown-socket" | "uid" => "0",
                "metric" => "name=m",
                "reload-on-cgroup-memory" => "80%",
                "env" | "set-placeholder" => "K=V",
                "mount" => "/app=app",
                "static-map" => "/static=/srv",
                "static-expires"
                | "static-expires-mtime"
                | "static-expires-uri"
                | "static-expires-uri-mtime"
                | "static-expires-path-info"
                | "static-expires-path-info-mtime" => r".*\.css 3600",
                "static-expires-type" | "static-expires-type-mtime" => "text/css=3600",
                "gid" => "0",
                _ => "x",
            },
        };
        for o in options::OPTIONS {
            let mut v = vec![e("socket", ":0")];
            v.push(if o.name == "worker-exec" {
                e("worker-exec", "true")
            } else {
                e("python-worker-override", "w.py")
            });
            if o.name != "python-worker-override" && o.name != "worker-exec" {
                v.push(e(o.name, sample(o)));
            }
            Config::resolve(&v).unwrap_or_else(|err| panic!("{}: {err}", o.name));
        }
    }

    /// The defaults, now applied from the option table, are the values
    /// `resolve` used to write into the struct by hand.
    #[test]
    fn defaults_come_from_the_table() {
        let c = Config::resolve(&[]).unwrap();
        assert_eq!(c.processes, 1);
        assert_eq!(c.ready_workers, ReadyWorkers::Percent(100));
        assert_eq!(c.drain_delay, Duration::ZERO);
        assert_eq!(c.worker_reload_mercy, Duration::from_secs(25));
        assert_eq!(c.listen, 1024);
        assert_eq!((c.log_format, c.log_level.as_str()), (LogFormat::Text, "info"));
        assert_eq!(c.chain_reload_timeout, Duration::from_secs(60));
        assert_eq!(c.respawn_backoff_max, Duration::from_secs(30));
        assert_eq!(c.max_failed_starts, 10);
        assert_eq!(c.max_worker_lifetime_delta, Duration::ZERO);
        assert_eq!(c.ready_mode, ReadyMode::Notify);
        assert!(c.reload_on_config_change && !c.forward_to_group && !c.reuse_port);
        assert_eq!(c.config_check_interval, Duration::from_secs(5));
        assert_eq!(c.liveness_timeout, Duration::from_millis(500));
        assert_eq!(c.exit_grace, Duration::ZERO);
        // Defaults are not options as set: `uwsgi.opt` and error origins
        // see only what a source said.
        assert!(c.opt.is_empty() && c.set_at.is_empty());
        let c = Config::resolve(&[e("processes", "3")]).unwrap();
        assert_eq!((c.processes, c.opt.len()), (3, 1));
    }
}
