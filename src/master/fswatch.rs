//! Noticing file changes without waking up: inotify watches on the
//! directories that hold the config files (every file an entry came from,
//! includes too), the ConfigMap directories and the touch files. A
//! directory watch sees a file replaced by rename (editors, `kubectl cp`),
//! created, deleted, written or touched, and kubelet's atomic swap of a
//! ConfigMap volume (a new `..data` symlink renamed into place). Events
//! for other names in a watched directory are dropped without waking the
//! checks. Where a watch cannot be set (no inotify, a directory that does
//! not exist yet) the master falls back to polling, and says so once.

use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

/// One watched directory and the names in it that matter (empty: any).
#[derive(Debug)]
struct Dir {
    wd: WatchDescriptor,
    path: PathBuf,
    names: Vec<OsString>,
}

#[derive(Debug)]
pub struct FsWatch {
    inotify: Option<Inotify>,
    dirs: Vec<Dir>,
    /// Paths no watch covers: they need polling.
    unwatched: Vec<PathBuf>,
    /// The unwatched set last reported in the log.
    reported: Vec<PathBuf>,
}

impl Default for FsWatch {
    fn default() -> FsWatch {
        Self::new()
    }
}

fn flags() -> AddWatchFlags {
    AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

impl FsWatch {
    pub fn new() -> FsWatch {
        let inotify = match Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK) {
            Ok(i) => Some(i),
            Err(e) => {
                tracing::warn!(errno = %e, "inotify unavailable; config and touch files are polled");
                None
            }
        };
        FsWatch { inotify, dirs: Vec::new(), unwatched: Vec::new(), reported: Vec::new() }
    }

    /// Watches `files` (by their directory and name; a symlink's target
    /// too) and `dirs` (any name in them), replacing what was watched.
    pub fn set(&mut self, files: &[PathBuf], dirs: &[PathBuf]) {
        let mut wanted: Vec<(PathBuf, Option<OsString>)> = Vec::new();
        for f in files {
            let mut push = |p: &Path| {
                if let (Some(dir), Some(name)) = (p.parent(), p.file_name()) {
                    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
                    wanted.push((dir.to_path_buf(), Some(name.to_os_string())));
                }
            };
            push(f);
            if let Ok(real) = std::fs::canonicalize(f) {
                if real != *f {
                    push(&real);
                }
            }
        }
        wanted.extend(dirs.iter().map(|d| (d.clone(), None)));
        let Some(inotify) = &self.inotify else {
            self.unwatched = wanted.into_iter().map(|(d, _)| d).collect();
            self.report();
            return;
        };
        for d in self.dirs.drain(..) {
            let _ = inotify.rm_watch(d.wd);
        }
        self.unwatched.clear();
        for (path, name) in wanted {
            if let Some(d) = self.dirs.iter_mut().find(|d| d.path == path) {
                match name {
                    // A directory watched for any name stays so.
                    Some(n) if !d.names.is_empty() => d.names.push(n),
                    Some(_) => {}
                    None => d.names.clear(),
                }
                continue;
            }
            match inotify.add_watch(&path, flags()) {
                Ok(wd) => self.dirs.push(Dir { wd, path, names: name.into_iter().collect() }),
                Err(e) => {
                    tracing::debug!(dir = %path.display(), errno = %e, "cannot watch directory");
                    self.unwatched.push(path);
                }
            }
        }
        self.report();
    }

    fn report(&mut self) {
        if self.unwatched != self.reported {
            if !self.unwatched.is_empty() {
                let dirs: Vec<String> = self.unwatched.iter().map(|p| p.display().to_string()).collect();
                tracing::info!(dirs = ?dirs, "cannot watch these with inotify (missing?); polling every config-check-interval");
            }
            self.reported = self.unwatched.clone();
        }
    }

    /// True when some path is not covered by a watch (poll instead).
    pub fn needs_polling(&self) -> bool {
        !self.unwatched.is_empty()
    }

    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.inotify.as_ref().map(|i| i.as_fd())
    }

    /// Reads every pending event; true if one concerns a watched name (or
    /// the kernel dropped events: then anything may have changed).
    pub fn drain(&mut self) -> bool {
        let Some(inotify) = &self.inotify else { return false };
        let mut relevant = false;
        while let Ok(events) = inotify.read_events() {
            if events.is_empty() {
                break;
            }
            for ev in events {
                if ev.mask.intersects(AddWatchFlags::IN_Q_OVERFLOW | AddWatchFlags::IN_IGNORED) {
                    relevant = true;
                    continue;
                }
                let Some(dir) = self.dirs.iter().find(|d| d.wd == ev.wd) else { continue };
                relevant |= match &ev.name {
                    // The directory itself was moved or deleted.
                    None => true,
                    Some(n) => {
                        dir.names.is_empty()
                            || dir.names.contains(n)
                            // kubelet's atomic writer: `..data`, `..2026_...` swapped in.
                            || n.as_encoded_bytes().starts_with(b"..")
                    }
                };
            }
        }
        relevant
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("podmaster-fswatch-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn only_watched_names_and_configmap_swaps_count() {
        let d = tmp("names");
        let file = d.join("podmaster.ini");
        std::fs::write(&file, "a").unwrap();
        let mut w = FsWatch::new();
        w.set(std::slice::from_ref(&file), &[]);
        assert!(!w.needs_polling());
        assert!(!w.drain());
        std::fs::write(d.join("unrelated.txt"), "x").unwrap();
        assert!(!w.drain(), "another file in the directory is not a change");
        std::fs::write(&file, "b").unwrap();
        assert!(w.drain(), "an in-place write is");
        std::fs::write(d.join("new.ini"), "c").unwrap();
        std::fs::rename(d.join("new.ini"), &file).unwrap();
        assert!(w.drain(), "a rename over it is");
        std::os::unix::fs::symlink("x", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        assert!(w.drain(), "kubelet's ..data swap is");
        assert!(!w.drain());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_missing_directory_falls_back_to_polling() {
        let d = tmp("missing");
        let mut w = FsWatch::new();
        w.set(&[d.join("nope/touch")], &[]);
        assert!(w.needs_polling());
        w.set(&[d.join("touch")], std::slice::from_ref(&d));
        assert!(!w.needs_polling());
        std::fs::write(d.join("anything"), "x").unwrap();
        assert!(w.drain(), "a directory source counts every name");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
