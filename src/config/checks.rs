//! Checks that need the whole resolved configuration (init mode against
//! workers, a worker and a socket configured) and `finalize`: relative
//! paths resolved, and the files the workers will need checked before any
//! worker exists (chdir, the worker script, the virtualenv). Reads the
//! file system; never binds, spawns or writes.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError};

/// The Python version podmaster embeds (major.minor).
pub const PY_VERSION: &str = env!("PODMASTER_PY_VERSION");

/// Why the worker script cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("cannot read worker script {}: {err}", .path.display())]
    Unreadable { path: PathBuf, err: std::io::Error },
    #[error("worker script {} is not a regular file", .0.display())]
    NotAFile(PathBuf),
    #[error("worker script {}: {err}", .path.display())]
    Missing { path: PathBuf, err: std::io::Error },
}

/// Why a directory is not a usable virtualenv.
#[derive(Debug, thiserror::Error)]
pub enum VirtualenvError {
    #[error("{}: not a directory (create it with python3 -m venv)", .0.display())]
    NotADirectory(PathBuf),
    #[error("{}: no bin/python3 in it; not a virtualenv (python3 -m venv)", .0.display())]
    NoPython(PathBuf),
    #[error(
        "{} was made for Python {found}, but podmaster embeds Python {PY_VERSION}; recreate it with python{PY_VERSION} -m venv",
        .venv.display()
    )]
    OtherPython { venv: PathBuf, found: String },
}

/// Checks that `venv` is a virtualenv for the embedded Python and returns
/// its interpreter. CPython detects the venv from that executable's
/// `pyvenv.cfg` and puts its site-packages on `sys.path`.
pub fn check_virtualenv(venv: &Path) -> Result<PathBuf, VirtualenvError> {
    if !venv.is_dir() {
        return Err(VirtualenvError::NotADirectory(venv.to_owned()));
    }
    let python = ["bin/python3", "bin/python"]
        .iter()
        .map(|n| venv.join(n))
        .find(|p| p.exists())
        .ok_or_else(|| VirtualenvError::NoPython(venv.to_owned()))?;
    // venv writes `version = 3.11.7`, virtualenv `version_info = 3.11.7.final.0`.
    if let Ok(cfg) = std::fs::read_to_string(venv.join("pyvenv.cfg")) {
        let found = cfg.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            matches!(k.trim(), "version" | "version_info").then(|| v.trim().to_owned())
        });
        if let Some(v) = found {
            let mm: Vec<&str> = v.split('.').take(2).collect();
            if mm.join(".") != PY_VERSION {
                return Err(VirtualenvError::OtherPython { venv: venv.to_owned(), found: v });
            }
        }
    }
    Ok(python)
}

impl Config {
    /// Init mode runs one command: workers and sockets make no sense there.
    pub fn check_init_mode(&self) -> Result<(), ConfigError> {
        let set = if self.script.is_some() {
            Some("python-worker-override")
        } else if self.command.is_some() {
            Some("worker-exec")
        } else if !self.sockets.is_empty() {
            Some("socket")
        } else {
            None
        };
        match set {
            Some(k) => Err(self.error_at(
                k,
                "init mode (-- COMMAND) runs a single command; drop the -- COMMAND to run workers, or this option",
            )),
            None => Ok(()),
        }
    }

    /// Checks that need the whole configuration of a master with workers.
    /// `activated`: sockets were passed by socket activation (they serve
    /// as the socket list when none is configured).
    pub fn check_workers(&self, activated: bool) -> Result<(), ConfigError> {
        self.check_app()?;
        match (&self.script, &self.command) {
            (None, None) if !self.serves_wsgi() => {
                return Err(ConfigError::new(
                    None,
                    Some("python-worker-override"),
                    "no worker configured: set module = PKG.MOD:CALLABLE (or wsgi-file = FILE) for a WSGI app, \
                     python-worker-override = SCRIPT or worker-exec = COMMAND (see README)",
                ));
            }
            (Some(_), Some(_)) => {
                let other = self.origin_of("python-worker-override").map(|o| format!(" ({o})")).unwrap_or_default();
                return Err(self.error_at(
                    "worker-exec",
                    format!(
                        "python-worker-override{other} and worker-exec are both set; a worker runs one or the other"
                    ),
                ));
            }
            (None, Some(_)) if !self.shared_imports.is_empty() => {
                return Err(self.error_at(
                    "shared-import",
                    "shared-import imports Python modules for python-worker-override workers; worker-exec runs a \
                     command (import in the command itself)",
                ));
            }
            _ => {}
        }
        if self.sockets.is_empty() && !activated {
            return Err(ConfigError::new(None, Some("socket"), "no socket configured: add socket = HOST:PORT"));
        }
        Ok(())
    }

    /// The WSGI app options against each other and the other kinds of
    /// worker: one app, and an app or a script or a command.
    fn check_app(&self) -> Result<(), ConfigError> {
        let at = |key: &str| self.origin_of(key).map(|o| format!(" ({o})")).unwrap_or_default();
        if self.module.is_some() && self.wsgi_file.is_some() {
            return Err(self.error_at(
                "wsgi-file",
                format!("module{} and wsgi-file are both set; a worker serves one app: keep one", at("module")),
            ));
        }
        self.check_mounts()?;
        if !self.serves_wsgi() {
            let statics = super::options::requests::EXPIRES.iter().map(|(key, ..)| *key);
            for key in ["max-requests", "harakiri", "static-map"].into_iter().chain(statics) {
                if self.origin_of(key).is_some() {
                    return Err(self.error_at(
                        key,
                        format!(
                            "{key} needs podmaster's WSGI worker (module, wsgi-file or mount), which sees every \
                             request; an override script's or a command's own server has to enforce it"
                        ),
                    ));
                }
            }
        }
        let key = match self.app().map(|a| a.source) {
            Some(super::AppSource::Module(_)) => "module",
            Some(super::AppSource::File(_)) => "wsgi-file",
            None if !self.mounts.is_empty() => "mount",
            None => return Ok(()),
        };
        if self.script.is_some() {
            return Err(self.error_at(
                key,
                format!(
                    "python-worker-override{} and {key} are both set: keep {key} to have podmaster serve the WSGI \
                     app, or python-worker-override to run your own server",
                    at("python-worker-override")
                ),
            ));
        }
        if self.command.is_some() {
            return Err(self.error_at(
                key,
                format!(
                    "worker-exec{} and {key} are both set: keep {key} to have podmaster serve the WSGI app, or \
                     worker-exec to run your own server",
                    at("worker-exec")
                ),
            ));
        }
        Ok(())
    }

    /// Each URL prefix serves one app: no prefix twice, and `mount = /=...`
    /// not together with `module` or `wsgi-file` (both would serve `/`).
    fn check_mounts(&self) -> Result<(), ConfigError> {
        let apps = self.apps();
        for (i, a) in apps.iter().enumerate() {
            if apps[..i].iter().any(|b| b.mount == a.mount) {
                let shown = if a.mount.is_empty() { "/" } else { a.mount.as_str() };
                let also = if i > 0 && apps[0].mount.is_empty() && a.mount.is_empty() {
                    " (module or wsgi-file is the app at /)"
                } else {
                    ""
                };
                return Err(self.error_at("mount", format!("two apps are mounted at {shown}{also}: keep one")));
            }
        }
        Ok(())
    }

    /// Resolves relative paths against `chdir` when set (uWSGI changes
    /// directory before loading the app), else `cwd`, and checks that
    /// `chdir` is a directory, the worker script a readable file and the
    /// virtualenv usable.
    pub fn finalize(&mut self, cwd: &Path) -> Result<(), ConfigError> {
        let base = self.chdir.as_ref().map(|c| cwd.join(c)).unwrap_or_else(|| cwd.to_path_buf());
        let mut errors = Vec::new();
        if self.chdir.is_some() {
            // Checked here as uWSGI checks it at startup: otherwise every
            // worker fails its chdir and the instance never becomes ready.
            match std::fs::metadata(&base) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => errors.push(self.error_at("chdir", format!("{}: not a directory", base.display()))),
                Err(e) => errors.push(self.error_at("chdir", format!("{}: {e}", base.display()))),
            }
        }
        // Paths relative to a bad chdir would only repeat its error.
        let base_ok = errors.is_empty();
        if let Some(v) = self.virtualenv.clone().filter(|v| base_ok || v.is_absolute()) {
            let abs = base.join(v);
            match check_virtualenv(&abs) {
                Ok(_) => self.virtualenv = Some(abs),
                Err(err) => errors.push(self.error_at("virtualenv", err.to_string())),
            }
        }
        if let Some(s) = self.script.clone().filter(|s| base_ok || s.is_absolute()) {
            let abs = base.join(s);
            match Self::check_script(&abs) {
                Ok(()) => self.script = Some(abs),
                Err(err) => errors.push(self.error_at("python-worker-override", err.to_string())),
            }
        }
        if let Some(f) = self.wsgi_file.clone().filter(|f| base_ok || f.is_absolute()) {
            let abs = base.join(f);
            match Self::check_script(&abs) {
                Ok(()) => self.wsgi_file = Some(abs),
                Err(err) => errors.push(self.error_at("wsgi-file", err.to_string())),
            }
        }
        if base_ok {
            let mut mounts = std::mem::take(&mut self.mounts);
            for m in &mut mounts {
                let super::AppSource::File(f) = &mut m.source else { continue };
                *f = base.join(&*f);
                // need-app = false: a missing file is that app's 500s.
                if let Err(err) = Self::check_script(f)
                    .map_err(|e| e.to_string())
                    .or_else(|e| if self.need_app { Err(e) } else { Ok(()) })
                {
                    errors.push(self.error_at("mount", err));
                }
            }
            self.mounts = mounts;
        }
        if base_ok {
            let mut maps = std::mem::take(&mut self.static_maps);
            for (prefix, dir) in &mut maps {
                *dir = base.join(&*dir);
                if !dir.is_dir() {
                    errors.push(self.error_at("static-map", format!("{prefix}={}: not a directory", dir.display())));
                }
            }
            self.static_maps = maps;
        }
        for t in &mut self.touch_reload {
            *t = base.join(&*t);
        }
        ConfigError::all(errors)
    }

    /// `processes = auto`: the workers sized from `cgroup`'s CPU quota
    /// (see [`crate::cgroup::auto_processes`]), capped by `max-processes`;
    /// the sentence saying how lands in `processes_source`. An explicit
    /// `processes` above `max-processes` is refused.
    pub fn size_workers(&mut self, cgroup: &crate::cgroup::Cgroup, affinity: usize) -> Result<(), ConfigError> {
        if !self.processes_auto {
            if let Some(max) = self.max_processes.filter(|m| self.processes > *m) {
                let msg = format!("processes = {} is above max-processes = {max}", self.processes);
                return Err(self.error_at("max-processes", msg));
            }
            return Ok(());
        }
        let (n, why) = crate::cgroup::auto_processes(cgroup, affinity);
        let capped = self.max_processes.map_or(n, |m| n.min(m));
        self.processes = capped;
        self.processes_source =
            Some(if capped < n { format!("{why}; capped by max-processes = {capped}") } else { why });
        Ok(())
    }

    /// The worker script, checked to be a readable regular file.
    pub fn check_script(path: &Path) -> Result<(), ScriptError> {
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => std::fs::File::open(path)
                .map(drop)
                .map_err(|err| ScriptError::Unreadable { path: path.to_owned(), err }),
            Ok(_) => Err(ScriptError::NotAFile(path.to_owned())),
            Err(err) => Err(ScriptError::Missing { path: path.to_owned(), err }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Entry, Origin};

    fn e(key: &str, value: &str) -> Entry {
        Entry::new(key, value, Origin::Cli(key.into()))
    }

    /// Errors found after resolution named the option but not where its
    /// value came from (found by tests/env_attacks.rs).
    #[test]
    fn errors_after_resolution_name_the_origin() {
        let env =
            |k: &str, v: &str| Entry::new(k, v, Origin::Env(format!("UWSGI_{}", k.to_uppercase().replace('-', "_"))));
        let v = vec![e("socket", ":0"), env("python-worker-override", "w.py"), e("worker-exec", "true")];
        let err = Config::resolve(&v).unwrap().check_workers(false).unwrap_err().to_string();
        assert_eq!(
            err,
            "--worker-exec: worker-exec: python-worker-override (env UWSGI_PYTHON_WORKER_OVERRIDE) and worker-exec \
             are both set; a worker runs one or the other"
        );
        let d = std::env::temp_dir();
        let mut c = Config::resolve(&[env("chdir", "surely-missing-dir")]).unwrap();
        let err = c.finalize(&d).unwrap_err().to_string();
        assert!(err.starts_with("env UWSGI_CHDIR: chdir: ") && err.contains("surely-missing-dir"), "{err}");
        let file = std::env::current_exe().unwrap();
        let mut c = Config::resolve(&[e("chdir", file.to_str().unwrap())]).unwrap();
        assert!(c.finalize(&d).unwrap_err().to_string().ends_with("not a directory"));
        let mut c = Config::resolve(&[e("chdir", d.to_str().unwrap())]).unwrap();
        c.finalize(&d).unwrap();
    }

    #[test]
    fn an_app_excludes_a_script_a_command_and_another_app() {
        let both = |a: (&str, &str), b: (&str, &str)| {
            let c = Config::resolve(&[e("socket", ":0"), e(a.0, a.1), e(b.0, b.1)]).unwrap();
            c.check_workers(false).unwrap_err().to_string()
        };
        let err = both(("python-worker-override", "w.py"), ("module", "app"));
        assert!(err.contains("keep module to have podmaster serve the WSGI app, or python-worker-override"), "{err}");
        let err = both(("worker-exec", "gunicorn app"), ("wsgi-file", "app.py"));
        assert!(err.contains("keep wsgi-file") && err.contains("or worker-exec"), "{err}");
        let err = both(("module", "app"), ("wsgi-file", "app.py"));
        assert!(err.contains("module (--module) and wsgi-file are both set"), "{err}");
        let ok = Config::resolve(&[e("socket", ":0"), e("module", "app:api")]).unwrap();
        ok.check_workers(false).unwrap();
        assert!(ok.preforked() && ok.python_worker());
    }

    #[test]
    fn missing_worker_or_socket() {
        let check = |v: &[Entry]| Config::resolve(v).unwrap().check_workers(false).unwrap_err().to_string();
        assert!(check(&[e("socket", ":1")]).contains("python-worker-override"));
        assert!(check(&[e("python-worker-override", "x.py")]).contains("socket"));
        assert!(Config::resolve(&[e("socket", ":1")]).unwrap().check_init_mode().is_err());
        assert!(Config::resolve(&[]).unwrap().check_init_mode().is_ok());
        let err = check(&[e("socket", ":1"), e("worker-exec", "true"), e("shared-import", "app")]);
        assert!(err.starts_with("--shared-import: shared-import: shared-import imports Python modules"), "{err}");
    }

    #[test]
    fn shared_import_takes_module_names_only() {
        let ok = Config::resolve(&[e("shared-import", "app"), e("shared-import", " pkg.sub_2 ")]).unwrap();
        assert_eq!(ok.shared_imports, ["app", "pkg.sub_2"]);
        assert!(ok.preforked() || ok.script.is_none());
        for bad in ["", "a..b", "1abc", "a b", "a-b", "a/b", ".a", "a.", "os;import x"] {
            let err = Config::resolve(&[e("shared-import", bad)]).unwrap_err().to_string();
            assert!(err.contains("expected a module name"), "{bad:?}: {err}");
        }
        let lazy = Config::resolve(&[e("python-worker-override", "w.py"), e("lazy-apps", "true")]).unwrap();
        assert!(!lazy.preforked());
        let forked = Config::resolve(&[e("python-worker-override", "w.py")]).unwrap();
        assert!(forked.preforked(), "preforked is the default, as in uWSGI");
    }

    #[test]
    fn script_and_virtualenv_messages() {
        let d = std::env::temp_dir();
        let err = Config::check_script(&d).unwrap_err().to_string();
        assert_eq!(err, format!("worker script {} is not a regular file", d.display()));
        let err = check_virtualenv(&d.join("surely-missing-venv")).unwrap_err().to_string();
        assert!(err.ends_with(": not a directory (create it with python3 -m venv)"), "{err}");
    }
}
