//! Watches: what the master polls once per `config-check-interval`, and
//! only when something needs polling — touch files (`touch-reload`), worker
//! RSS (`reload-on-rss`), the config sources (`reload-on-config-change`) —
//! and applying a changed configuration: keep the sockets that stay, bind
//! the new ones, scale, rebuild the settings, then chain reload.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use super::Master;
use super::core::Settings;
use crate::config::{self, Config};
use crate::handoff::WorkerSettings;
use crate::sockets::{self, Listener};
use crate::sys;

/// What the periodic check looks at.
#[derive(Debug)]
pub struct Watch {
    pub next: Option<Instant>,
    pub touch: Vec<(PathBuf, Option<SystemTime>)>,
    /// Hash of the effective entries last seen (valid or not).
    config_hash: u64,
}

impl Watch {
    /// `config_hash`: [`config::entries_hash`] of the entries the running
    /// configuration was resolved from.
    pub fn new(config_hash: u64) -> Watch {
        Watch { next: None, touch: Vec::new(), config_hash }
    }
}

/// Why a valid new configuration cannot be applied to the running instance.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// What the running workers, daemons or shared memory were started with.
    #[error("{0} changed: this takes effect only at startup; restart the instance")]
    RestartRequired(&'static str),
    #[error("socket {0}: fd:// and sd:// sockets are taken over only at startup; restart the instance to add one")]
    Inherited(String),
    #[error(transparent)]
    Bind(#[from] crate::sockets::BindError),
}

pub fn mtime(p: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// How long after a file event the check runs: editors and kubelet
/// write in several steps; one check sees them all.
pub const SETTLE: Duration = Duration::from_millis(20);

impl Master {
    fn watches_config(&self) -> bool {
        self.cfg.reload_on_config_change && !self.sources.files.is_empty()
    }

    /// Periodic checks are needed only for what inotify cannot tell: RSS,
    /// and files it could not watch.
    fn needs_polling(&self) -> bool {
        self.cfg.reload_on_rss.is_some()
            || (self.fswatch.needs_polling() && (!self.watch.touch.is_empty() || self.watches_config()))
    }

    pub(super) fn schedule_watch(&mut self, now: Instant) {
        self.watch.next = self.needs_polling().then(|| now + self.cfg.config_check_interval);
    }

    /// A watched file changed: check soon (once the writer is done).
    pub(super) fn on_file_event(&mut self, now: Instant) {
        let soon = now + SETTLE;
        self.watch.next = Some(self.watch.next.map_or(soon, |t| t.min(soon)));
    }

    /// Points the inotify watches at the touch files and, when config
    /// changes are watched, at every config source and every file an
    /// option came from (includes, `@(file)`).
    pub(super) fn refresh_watches(&mut self) {
        let mut files: Vec<PathBuf> = self.watch.touch.iter().map(|(p, _)| p.clone()).collect();
        let mut dirs = Vec::new();
        if self.watches_config() {
            for src in &self.sources.files {
                match src {
                    // Standard input is read once: nothing to watch.
                    config::Source::Ini(spec) | config::Source::Yaml(spec) | config::Source::Json(spec)
                        if config::ini::split_spec(spec).0 == config::ini::STDIN => {}
                    config::Source::Ini(spec) => files.push(PathBuf::from(config::ini::split_spec(spec).0)),
                    config::Source::Yaml(p) | config::Source::Json(p) => files.push(PathBuf::from(p)),
                    config::Source::Dir(d) => dirs.push(d.clone()),
                }
            }
            if let Ok(entries) = config::load(&self.sources, self.env.iter().cloned()) {
                for e in entries {
                    if let config::Origin::File { path, .. } | config::Origin::Doc { path, .. } = e.origin {
                        if !files.contains(&path) {
                            files.push(path);
                        }
                    }
                }
            }
        }
        self.fswatch.set(&files, &dirs);
    }

    /// The periodic check: touch files, config sources, worker RSS.
    pub(super) fn check_watched(&mut self, now: Instant) {
        let mut touched = None;
        for (path, seen) in &mut self.watch.touch {
            let m = mtime(path);
            if m.is_some() && m != *seen {
                touched = Some(path.display().to_string());
            }
            *seen = m;
        }
        if let Some(p) = touched {
            self.core.request_reload(&format!("touch-reload {p}"));
        }
        if let Some(limit) = self.cfg.reload_on_rss {
            let table = &self.core.table;
            let over: Vec<(u32, u64)> = self
                .core
                .slots
                .iter()
                .filter(|s| table.replacement(s.id).is_none())
                .filter_map(|s| {
                    let w = table.worker(s.id)?;
                    let rss = sys::rss_bytes(w.pid)?;
                    (w.accepting() && rss > limit).then_some((s.id, rss))
                })
                .collect();
            for (id, rss) in over {
                tracing::warn!(worker = id, rss_bytes = rss, limit_bytes = limit, "worker over reload-on-rss");
                self.core.recycle(id, super::core::Recycle::Rss);
            }
        }
        if self.cfg.reload_on_config_change && !self.sources.files.is_empty() {
            self.check_config(now);
        }
    }

    /// Re-reads the config sources; on a change, validates and applies it
    /// with a chain reload, or logs the error and keeps the running config.
    fn check_config(&mut self, _now: Instant) {
        let loaded = config::load(&self.sources, self.env.iter().cloned());
        let hash = match &loaded {
            Ok(e) => config::entries_hash(e),
            Err(e) => {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                e.to_string().hash(&mut h);
                h.finish()
            }
        };
        if hash == self.watch.config_hash {
            return;
        }
        self.watch.config_hash = hash;
        let result = loaded.and_then(|e| Config::resolve(&e)).and_then(|mut c| {
            c.finalize(&self.cwd)?;
            c.size_workers(&self.pod.cgroup, crate::cgroup::affinity_cpus())?;
            Ok(c)
        });
        match result {
            Err(e) => {
                self.config_reloads_failed += 1;
                // Every problem, on the one log line.
                let problems = e.to_string().replace('\n', "; ");
                tracing::error!(
                    error = problems.as_str(),
                    count = e.count(),
                    "config changed but is invalid; keeping the running configuration"
                );
            }
            Ok(new) => {
                if let Err(e) = self.apply_config(new) {
                    self.config_reloads_failed += 1;
                    tracing::error!(error = %e, "config changed but cannot be applied; keeping the running configuration");
                } else {
                    self.config_reloads_ok += 1;
                }
            }
        }
    }

    fn apply_config(&mut self, mut new: Config) -> Result<(), ReloadError> {
        let names = |c: &Config| c.sockets.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        // What running workers and daemons were started with, or what the
        // shared memory was laid out for, cannot change under them.
        for (changed, what) in [
            (new.creds != self.cfg.creds, "uid/gid"),
            (new.metrics != self.cfg.metrics, "metric"),
            (new.attach_daemons != self.cfg.attach_daemons, "attach-daemon"),
            (new.preforked() != self.cfg.preforked(), "lazy-apps (zygote or not)"),
        ] {
            if changed {
                return Err(ReloadError::RestartRequired(what));
            }
        }
        // Inherited sockets are adopted once, at startup: a reload that
        // names an fd could otherwise close one the master owns.
        if let Some(s) = new.sockets.iter().find(|s| {
            matches!(s.spec, sockets::SocketSpec::Fd(_) | sockets::SocketSpec::Sd(_))
                && !self.core.os.listeners.iter().any(|l| l.name == s.name)
        }) {
            return Err(ReloadError::Inherited(s.name.clone()));
        }
        if names(&new) != self.core.os.listeners.iter().map(|l| l.name.clone()).collect::<Vec<_>>() {
            self.rebind_listeners(&new)?;
        }
        if new.probe_socket != self.cfg.probe_socket || new.log_format != self.cfg.log_format {
            tracing::warn!("probe-socket and log-format changes take effect at the next restart");
        }
        let running = self.core.processes();
        if new.processes != running {
            tracing::info!(from = running, to = new.processes, "config changes the number of workers");
        }
        let target = new.processes;
        // Keep the running values that cannot change live.
        new.probe_socket = self.cfg.probe_socket.clone();
        new.log_format = self.cfg.log_format;
        self.watch.touch = new.touch_reload.iter().map(|p| (p.clone(), mtime(p))).collect();
        self.cfg = new;
        self.pod.configure(&self.cfg);
        self.core.set = Settings::from_config(&self.cfg);
        let names = self.core.os.listeners.iter().map(|l| l.name.clone()).collect();
        self.core.os.settings = WorkerSettings::new(&self.cfg, self.core.os.creds.as_ref(), names, self.started_on);
        self.scale_to(target);
        tracing::info!("configuration reloaded");
        self.core.request_reload("config change");
        Ok(())
    }

    /// Scales the workers to `target`, one slot at a time: new slots start
    /// a worker at once, removed ones stop theirs gracefully.
    pub(super) fn scale_to(&mut self, target: u32) {
        // Each step changes the count by one, or the core refused: stop then.
        while self.core.processes() != target {
            let before = self.core.processes();
            if before < target {
                self.core.scale_up();
            } else {
                self.core.scale_down();
            }
            if self.core.processes() == before {
                break;
            }
        }
    }

    /// The listeners for `new`'s sockets: those that stay keep their fd (no
    /// gap for clients), new ones are bound, removed ones are retired (closed
    /// once the rollout is over). On a bind error nothing changes.
    fn rebind_listeners(&mut self, new: &Config) -> Result<(), ReloadError> {
        let names = |c: &Config| c.sockets.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        // Keep sockets that stay (same fd, no gap for clients), bind new ones.
        let mut kept: Vec<Option<Listener>> =
            std::mem::take(&mut self.core.os.listeners).into_iter().map(Some).collect();
        let mut next = Vec::new();
        let mut to_bind = Vec::new();
        for s in &new.sockets {
            match kept.iter_mut().find(|l| l.as_ref().is_some_and(|l| l.name == s.name)).and_then(Option::take) {
                Some(l) => next.push(Some(l)),
                None => {
                    to_bind.push((s.name.clone(), s.spec.clone()));
                    next.push(None);
                }
            }
        }
        let bound = match sockets::bind_all(&to_bind, &new.bind_options(), &mut sockets::Adopted::default()) {
            Ok((b, notices)) => {
                for n in notices {
                    tracing::info!("{n}");
                }
                b
            }
            Err(e) => {
                // Every listener we had, whether matched (in `next`) or not.
                self.core.os.listeners = next.into_iter().chain(kept).flatten().collect();
                // Restore configuration order of the kept listeners.
                let order = names(&self.cfg);
                self.core.os.listeners.sort_by_key(|l| order.iter().position(|n| *n == l.name));
                return Err(ReloadError::Bind(e));
            }
        };
        let mut bound = bound.into_iter();
        self.core.os.listeners =
            next.into_iter().map(|l| l.or_else(|| bound.next())).collect::<Option<Vec<_>>>().unwrap_or_default();
        for l in &self.core.os.listeners {
            tracing::info!(socket = l.name.as_str(), local = l.local.as_str(), "socket in use");
        }
        // Rollouts finished before now do not close these.
        self.close_retired_listeners();
        self.retired_listeners.extend(kept.into_iter().flatten());
        Ok(())
    }
}
