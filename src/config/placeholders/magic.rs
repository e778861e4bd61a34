//! uWSGI's magic variables: `%` followed by one letter, digit or `[`.
//!
//! Which `%X` sequences are magic is decided by [`is_magic`] alone, so a
//! value like `ready-workers = 50%` or `80% of it` keeps its `%`: only a
//! `%` directly followed by an ASCII letter, an ASCII digit or `[` is a
//! magic variable (and `%%` a literal `%`, `%(` a placeholder; see the
//! parent module). uWSGI replaces an unknown one with nothing; here it is
//! an error naming it, so a typo never silently empties part of a path.
//!
//! Lowercase letters describe the file the value is in; their uppercase
//! twins (`%D %P %S %N %E %C %O %X %I %J`) describe the first file of the
//! load (the one named on the command line), as uWSGI's "first
//! non-template config file". Reads only the file's metadata (`%i`), the
//! user and group databases (`%U %G`) and the process's own state.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// What the magic variables of one file are computed from.
#[derive(Debug, Clone)]
pub struct FileMagic {
    /// The name the file is shown as (its file name gives `%s %n %e`: for
    /// a symlinked config, the link's name, as uWSGI does).
    pub shown: PathBuf,
    /// Its real absolute path (`%p %d %c %0`..`%9 %i %j`).
    pub abs: PathBuf,
    /// The name as written on the command line or include line (`%o`).
    pub given: String,
    /// The section being read (`%x`).
    pub section: String,
}

/// The magic variables in effect for one value: its own file and the
/// first file of the load.
#[derive(Debug, Clone)]
pub struct Magic {
    pub this: FileMagic,
    pub top: FileMagic,
}

/// Why a magic variable has no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MagicError {
    #[error("unknown magic variable %{0} (write %% for a literal %)")]
    Unknown(char),
    #[error("magic variable %{0} ({1}) is not supported by podmaster")]
    Unsupported(char, &'static str),
    #[error("magic variable %{0}: {1}")]
    Failed(char, String),
}

/// Whether `%` followed by `c` is a magic variable (known or not).
pub fn is_magic(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '['
}

impl Magic {
    /// The magic variables of a file that is also the first of its load.
    pub fn single(this: FileMagic) -> Magic {
        Magic { top: this.clone(), this }
    }

    /// The value of `%c` (`c` such that [`is_magic`] holds).
    pub fn value(&self, c: char) -> Result<String, MagicError> {
        if c.is_ascii_uppercase() {
            if let Some(v) = file_value(&self.top, c.to_ascii_lowercase()) {
                return v.map_err(|e| MagicError::Failed(c, e));
            }
        } else if let Some(v) = file_value(&self.this, c) {
            return v.map_err(|e| MagicError::Failed(c, e));
        }
        process_value(c)
    }
}

/// A variable that describes the file (`None`: `c` is not one of those).
fn file_value(f: &FileMagic, c: char) -> Option<Result<String, String>> {
    let name = |p: &Path| p.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let dir = f.abs.parent().unwrap_or(Path::new("/"));
    let v = match c {
        'd' => {
            let mut d = dir.display().to_string();
            if !d.ends_with('/') {
                d.push('/');
            }
            d
        }
        'p' => f.abs.display().to_string(),
        's' => name(&f.shown),
        'n' => f.shown.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        'e' => f.shown.extension().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        'c' => name(dir),
        'o' => f.given.clone(),
        'x' => f.section.clone(),
        'i' => return Some(inode(&f.abs)),
        'j' => djb33x_hex(f.abs.display().to_string().as_bytes()),
        '0'..='9' => {
            // uWSGI splits the directory at `/` and skips empty parts:
            // for /srv/app/uwsgi.ini, %0 is `srv` and %1 `app`; a
            // component the path does not have is empty.
            let n = c as usize - '0' as usize;
            let d = dir.display().to_string();
            d.split('/').filter(|s| !s.is_empty()).nth(n).unwrap_or("").to_owned()
        }
        _ => return None,
    };
    Some(Ok(v))
}

fn inode(p: &Path) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p).map(|m| m.ino().to_string()).map_err(|e| format!("cannot stat {}: {e}", p.display()))
}

/// uWSGI's `%j`: the djb33x hash (`h = h * 33 ^ byte`, from 5381) of the
/// full path, its four bytes in memory order as uppercase hex. The bytes
/// are C `char`s, sign-extended where `char` is signed (x86), so a
/// non-ASCII path hashes as uWSGI hashes it on the same machine.
pub fn djb33x_hex(bytes: &[u8]) -> String {
    let mut h: u32 = 5381;
    for &b in bytes {
        h = h.wrapping_shl(5).wrapping_add(h) ^ (b as libc::c_char as u32);
    }
    h.to_ne_bytes().iter().map(|b| format!("{b:02X}")).collect()
}

/// A variable that describes the process, not the file.
fn process_value(c: char) -> Result<String, MagicError> {
    let failed = |e: String| MagicError::Failed(c, e);
    match c {
        'h' => Ok(nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()),
        'k' => std::thread::available_parallelism()
            .map(|n| n.get().to_string())
            .map_err(|e| failed(format!("cannot count CPUs: {e}"))),
        'v' => std::env::current_dir()
            .map(|d| d.display().to_string())
            .map_err(|e| failed(format!("cannot read the working directory: {e}"))),
        't' => Ok(started().0.to_string()),
        'T' => Ok(started().1.to_string()),
        'u' => Ok(nix::unistd::getuid().to_string()),
        'g' => Ok(nix::unistd::getgid().to_string()),
        'U' => {
            let uid = nix::unistd::getuid();
            Ok(nix::unistd::User::from_uid(uid).ok().flatten().map(|u| u.name).unwrap_or_else(|| uid.to_string()))
        }
        'G' => {
            let gid = nix::unistd::getgid();
            Ok(nix::unistd::Group::from_gid(gid).ok().flatten().map(|g| g.name).unwrap_or_else(|| gid.to_string()))
        }
        'V' => Ok(env!("CARGO_PKG_VERSION").to_owned()),
        '[' => Ok("\x1b".to_owned()),
        'b' => Err(MagicError::Unsupported(c, "uWSGI's binary path")),
        _ => Err(MagicError::Unknown(c)),
    }
}

/// Unix time in seconds and microseconds, taken once per process: uWSGI
/// takes it at startup, and a value that changed at every load would make
/// the master see a changed configuration at every check.
fn started() -> (u64, u128) {
    static AT: OnceLock<(u64, u128)> = OnceLock::new();
    *AT.get_or_init(|| {
        let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        (d.as_secs(), d.as_micros())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(abs: &str, shown: &str, given: &str, section: &str) -> FileMagic {
        FileMagic { shown: shown.into(), abs: abs.into(), given: given.into(), section: section.into() }
    }

    #[test]
    fn file_variables_follow_uwsgi() {
        let this = file("/srv/app/conf/uwsgi.prod.ini", "conf/uwsgi.prod.ini", "conf/uwsgi.prod.ini", "prod");
        let top = file("/etc/main.ini", "/etc/main.ini", "main.ini", "uwsgi");
        let m = Magic { this, top };
        let cases = [
            ('d', "/srv/app/conf/"),
            ('p', "/srv/app/conf/uwsgi.prod.ini"),
            ('s', "uwsgi.prod.ini"),
            ('n', "uwsgi.prod"),
            ('e', "ini"),
            ('c', "conf"),
            ('o', "conf/uwsgi.prod.ini"),
            ('x', "prod"),
            ('0', "srv"),
            ('1', "app"),
            ('2', "conf"),
            ('3', ""),
            ('9', ""),
            ('D', "/etc/"),
            ('P', "/etc/main.ini"),
            ('S', "main.ini"),
            ('N', "main"),
            ('E', "ini"),
            ('C', "etc"),
            ('O', "main.ini"),
            ('X', "uwsgi"),
            ('[', "\x1b"),
        ];
        for (c, want) in cases {
            assert_eq!(m.value(c).as_deref(), Ok(want), "%{c}");
        }
        // A file in / and one without an extension.
        let m = Magic::single(file("/app", "/app", "/app", "uwsgi"));
        for (c, want) in [('d', "/"), ('c', ""), ('e', ""), ('n', "app"), ('0', "")] {
            assert_eq!(m.value(c).as_deref(), Ok(want), "%{c}");
        }
    }

    #[test]
    fn process_variables() {
        let m = Magic::single(file("/nonexistent/a.ini", "a.ini", "a.ini", "uwsgi"));
        let k: usize = m.value('k').unwrap().parse().unwrap();
        assert_eq!(k, std::thread::available_parallelism().unwrap().get());
        assert_eq!(m.value('v').unwrap(), std::env::current_dir().unwrap().display().to_string());
        assert_eq!(m.value('u').unwrap(), nix::unistd::getuid().to_string());
        assert_eq!(m.value('g').unwrap(), nix::unistd::getgid().to_string());
        assert!(!m.value('U').unwrap().is_empty() && !m.value('G').unwrap().is_empty());
        assert_eq!(m.value('V').unwrap(), env!("CARGO_PKG_VERSION"));
        let (t, micros): (u64, u128) = (m.value('t').unwrap().parse().unwrap(), m.value('T').unwrap().parse().unwrap());
        assert_eq!(micros / 1_000_000, u128::from(t));
        assert_eq!(m.value('t').unwrap(), t.to_string(), "taken once per process");
        let err = m.value('i').unwrap_err().to_string();
        assert!(err.starts_with("magic variable %i: cannot stat /nonexistent/a.ini"), "{err}");
        assert_eq!(m.value('q').unwrap_err().to_string(), "unknown magic variable %q (write %% for a literal %)");
        assert_eq!(
            m.value('b').unwrap_err().to_string(),
            "magic variable %b (uWSGI's binary path) is not supported by podmaster"
        );
        for c in ['a', 'f', 'l', 'm', 'q', 'r', 'w', 'y', 'z', 'A', 'B', 'F', 'H', 'K', 'L', 'Q', 'Z'] {
            assert_eq!(m.value(c), Err(MagicError::Unknown(c)));
        }
    }

    #[test]
    fn inode_of_a_real_file() {
        use std::os::unix::fs::MetadataExt;
        let exe = std::env::current_exe().unwrap();
        let m = Magic::single(file(exe.to_str().unwrap(), "x", "x", "uwsgi"));
        assert_eq!(m.value('i').unwrap(), std::fs::symlink_metadata(&exe).unwrap().ino().to_string());
    }

    /// Values computed with uWSGI's own loop (C, x86-64: signed `char`,
    /// little-endian), for ASCII and for a path with a non-ASCII byte.
    #[test]
    fn djb33x_matches_uwsgi() {
        // 5381 = 0x1505, stored little-endian.
        assert_eq!(djb33x_hex(b""), "05150000");
        // ((5381 << 5) + 5381) ^ 'a' = 177573 ^ 97 = 177604 = 0x0002B5C4.
        assert_eq!(djb33x_hex(b"a"), "C4B50200");
        let h = 5381u32.wrapping_mul(33) ^ (0xC3u8 as libc::c_char as u32);
        assert_eq!(djb33x_hex(&[0xC3]), h.to_ne_bytes().iter().map(|b| format!("{b:02X}")).collect::<String>());
        if cfg!(all(target_arch = "x86_64", target_endian = "little")) {
            // 177573 ^ 0xFFFFFFC3 (sign-extended): the high bytes flip.
            assert_eq!(djb33x_hex(&[0xC3]), "664AFDFF");
        }
    }

    #[test]
    fn which_sequences_are_magic() {
        for c in ['a', 'Z', '0', '9', '['] {
            assert!(is_magic(c), "{c}");
        }
        for c in [' ', '%', '(', ')', '-', '.', '/', ',', 'é', '\t'] {
            assert!(!is_magic(c), "{c:?}");
        }
    }
}
