//! Listening sockets: parse uWSGI socket specs, bind them (or adopt an
//! inherited fd), and keep them in a table in configuration order, ready to
//! be handed to every worker at fds 3.. with `LISTEN_FDNAMES` = the specs.
//!
//! The master keeps its copies above the hand-off range (see
//! [`crate::sys::spawn`]) and close-on-exec; it never accepts on them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6, UnixAddr, bind, getsockopt, listen,
    setsockopt, socket, sockopt,
};

/// Why a socket spec is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("empty socket address")]
    Empty,
    #[error("{0}: expected fd://N with N a file descriptor number")]
    Fd(String),
    #[error("{0}: expected sd://NAME or sd://INDEX")]
    Sd(String),
    #[error("{0}: abstract socket name must be 1..{max} bytes", max = UNIX_PATH_MAX - 1)]
    AbstractName(String),
    #[error("{0}: expected [IPv6-address]:port")]
    V6Form(String),
    #[error("{spec}: {addr:?} is not an IPv6 address")]
    V6Address { spec: String, addr: String },
    #[error("{spec}: {host:?} is not a valid host name or IPv4 address")]
    Host { spec: String, host: String },
    #[error("{spec}: port {port:?} is not a number from 0 to 65535")]
    Port { spec: String, port: String },
    #[error("{spec}: UNIX socket path is {len} bytes, the limit is {UNIX_PATH_MAX}")]
    PathTooLong { spec: String, len: usize },
}

/// Why the socket-activation variables cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// (the value, quoted and cut)
    #[error("LISTEN_PID={0}: not a process id")]
    Pid(String),
    #[error("LISTEN_FDS={0}: expected a number of file descriptors (0..1024)")]
    Count(String),
    #[error("LISTEN_FDNAMES has {names} names but LISTEN_FDS={fds}")]
    Names { names: usize, fds: usize },
    #[error("LISTEN_FDS={fds}: fd {fd}: {source}")]
    Take { fds: usize, fd: RawFd, source: std::io::Error },
    /// (fd, its name quoted)
    #[error("LISTEN_FDS: fd {0} ({1}) is a socket but not listening")]
    NotListening(RawFd, String),
    #[error("LISTEN_FDS: fd {0} ({1}) is not a socket")]
    NotASocket(RawFd, String),
    #[error("LISTEN_FDS: fd {fd}: getsockopt(SO_ACCEPTCONN): {}", .errno.desc())]
    Probe { fd: RawFd, errno: nix::errno::Errno },
}

/// Why a socket could not be bound (or taken over).
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A call failed: what it was doing (`bind 127.0.0.1:80`, `listen`,
    /// `setsockopt(SO_REUSEPORT)`) and the errno.
    #[error("{what}: {}", .errno.desc())]
    Call { what: String, errno: nix::errno::Errno },
    #[error("listen backlog: {0}")]
    Backlog(String),
    #[error("cannot resolve host {host:?}: {source}")]
    Resolve { host: String, source: std::io::Error },
    #[error("host {0:?} has no address")]
    NoAddress(String),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocketFile(String),
    #[error("another process is already listening on {0}")]
    InUse(String),
    #[error("cannot remove stale socket {path}: {source}")]
    Stale { path: String, source: std::io::Error },
    #[error("{0} was replaced by something else than our socket")]
    Replaced(String),
    #[error("abstract address: {0}")]
    AbstractAddress(nix::errno::Errno),
    #[error("no sockets were passed by socket activation (LISTEN_FDS/LISTEN_PID not set for this process)")]
    NothingPassed,
    #[error("no socket named or numbered {key:?} was passed (names: {known})")]
    NotPassed { key: String, known: String },
    #[error("socket {0:?} is used twice")]
    UsedTwice(String),
    #[error("fd {fd}: {source}")]
    Inherited { fd: RawFd, source: std::io::Error },
    #[error("fd {0} is a socket but not listening")]
    FdNotListening(RawFd),
    #[error("fd {0} is not a socket")]
    FdNotASocket(RawFd),
    #[error("fd {fd}: getsockopt(SO_ACCEPTCONN): {}", .errno.desc())]
    FdProbe { fd: RawFd, errno: nix::errno::Errno },
    /// The spec that failed, around the reason.
    #[error("socket {name}: {source}")]
    Socket { name: String, source: Box<BindError> },
}

/// `BindError::Call` for `what`.
fn call(what: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> BindError {
    let what = what.into();
    move |errno| BindError::Call { what, errno }
}

/// A parsed `socket = ...` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketSpec {
    /// `host:port`, `:port` (all IPv4 interfaces) or `[v6]:port`.
    Tcp { host: String, port: u16 },
    /// `/path/to.sock` (anything without a `:` port part).
    Unix(PathBuf),
    /// `@name`: Linux abstract namespace.
    Abstract(String),
    /// `fd://N`: an inherited, already listening socket.
    Fd(RawFd),
    /// `sd://NAME` or `sd://N`: a socket passed by systemd-style activation,
    /// by its `LISTEN_FDNAMES` name or its index.
    Sd(String),
}

/// Linux `sun_path` holds 108 bytes including the terminating NUL.
const UNIX_PATH_MAX: usize = 107;

impl SocketSpec {
    pub fn parse(s: &str) -> Result<SocketSpec, SpecError> {
        if s.is_empty() {
            return Err(SpecError::Empty);
        }
        if let Some(n) = s.strip_prefix("fd://") {
            return n
                .parse::<RawFd>()
                .ok()
                .filter(|fd| *fd >= 0)
                .map(SocketSpec::Fd)
                .ok_or_else(|| SpecError::Fd(s.to_owned()));
        }
        if let Some(name) = s.strip_prefix("sd://") {
            if name.is_empty() {
                return Err(SpecError::Sd(s.to_owned()));
            }
            return Ok(SocketSpec::Sd(name.to_owned()));
        }
        if let Some(name) = s.strip_prefix('@') {
            if name.is_empty() || name.len() > UNIX_PATH_MAX - 1 {
                return Err(SpecError::AbstractName(s.to_owned()));
            }
            return Ok(SocketSpec::Abstract(name.to_owned()));
        }
        if let Some(rest) = s.strip_prefix('[') {
            let (addr, port) = rest.split_once("]:").ok_or_else(|| SpecError::V6Form(s.to_owned()))?;
            let ip: std::net::Ipv6Addr =
                addr.parse().map_err(|_| SpecError::V6Address { spec: s.to_owned(), addr: addr.to_owned() })?;
            return Ok(SocketSpec::Tcp { host: ip.to_string(), port: parse_port(s, port)? });
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.contains('/') => {
                // Checked here so a typo never reaches the resolver (no DNS
                // query for a name that cannot exist).
                let valid = host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        && !label.starts_with('-')
                });
                if !host.is_empty() && (!valid || host.len() > 253) {
                    return Err(SpecError::Host { spec: s.to_owned(), host: host.to_owned() });
                }
                Ok(SocketSpec::Tcp { host: host.to_owned(), port: parse_port(s, port)? })
            }

            _ => {
                if s.len() > UNIX_PATH_MAX {
                    return Err(SpecError::PathTooLong { spec: s.to_owned(), len: s.len() });
                }
                Ok(SocketSpec::Unix(PathBuf::from(s)))
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            SocketSpec::Tcp { .. } => "tcp",
            SocketSpec::Unix(_) => "unix",
            SocketSpec::Abstract(_) => "abstract",
            SocketSpec::Fd(_) => "fd",
            SocketSpec::Sd(_) => "sd",
        }
    }
}

fn parse_port(spec: &str, port: &str) -> Result<u16, SpecError> {
    port.parse::<u16>().map_err(|_| SpecError::Port { spec: spec.to_owned(), port: port.to_owned() })
}

/// A bound, listening socket owned by the master.
#[derive(Debug)]
pub struct Listener {
    /// The configured spec: `LISTEN_FDNAMES` entry and `/status` name.
    pub name: String,
    pub kind: &'static str,
    /// What it is bound to (the real port when 0 was asked for).
    pub local: String,
    pub fd: OwnedFd,
}

/// How sockets are bound (from the configuration).
#[derive(Debug, Clone, Default)]
pub struct BindOptions {
    pub backlog: i32,
    pub reuse_port: bool,
    pub chmod: Option<u32>,
    /// (uid, gid), -1 to keep.
    pub chown: Option<(i64, i64)>,
}

/// Sockets received by systemd-style activation (`LISTEN_FDS`), by index,
/// with their `LISTEN_FDNAMES` names; `sd://` specs take them out.
#[derive(Debug, Default)]
pub struct Adopted {
    sockets: Vec<(String, Option<OwnedFd>)>,
}

impl Adopted {
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// Closes the adopted sockets no spec took and returns their names: a
    /// listening socket nobody accepts on would leave clients hanging.
    pub fn close_unused(&mut self) -> Vec<String> {
        self.sockets.iter_mut().filter_map(|(n, fd)| fd.take().map(|_| n.clone())).collect()
    }

    /// The names of all adopted sockets, in fd order.
    pub fn names(&self) -> Vec<String> {
        self.sockets.iter().map(|(n, _)| n.clone()).collect()
    }

    fn take(&mut self, key: &str) -> Result<OwnedFd, BindError> {
        let known = self.names().join(", ");
        let pos = self
            .sockets
            .iter()
            .position(|(n, _)| n == key)
            .or_else(|| key.parse::<usize>().ok().filter(|i| *i < self.sockets.len()));
        let Some(i) = pos else {
            return Err(if self.sockets.is_empty() {
                BindError::NothingPassed
            } else {
                BindError::NotPassed { key: key.to_owned(), known }
            });
        };
        self.sockets[i].1.take().ok_or_else(|| BindError::UsedTwice(key.to_owned()))
    }
}

/// Longest part of an environment value quoted in an error: enough to
/// recognise it, short enough that a 100 KB value keeps the error one
/// readable line.
const MAX_QUOTED_CHARS: usize = 64;

/// `v` quoted for an error message, cut to [`MAX_QUOTED_CHARS`].
fn quoted(v: &str) -> String {
    match v.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{:?}…", &v[..cut]),
        None => format!("{v:?}"),
    }
}

/// `LISTEN_FDNAMES` decoding (the contract lives in [`crate::handoff`]).
pub use crate::handoff::decode_fdnames;

/// The socket-activation variables, read by [`activation_names`].
pub const ACTIVATION_VARS: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// What `LISTEN_PID`/`LISTEN_FDS`/`LISTEN_FDNAMES` in `env` say about
/// process `me`: the names of the sockets passed to it at fds 3.. (empty
/// when none were), or a notice to log when they are meant for another
/// process. Touches no fd; [`adopt`] takes the fds over.
pub fn activation_names(env: &[(String, String)], me: u32) -> Result<(Vec<String>, Option<String>), ActivationError> {
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let Some(pid) = get("LISTEN_PID") else {
        return Ok((Vec::new(), None));
    };
    let pid: u32 = pid.trim().parse().map_err(|_| ActivationError::Pid(quoted(pid)))?;
    if pid != me {
        return Ok((
            Vec::new(),
            Some(format!("LISTEN_PID={pid} is not this process ({me}); ignoring LISTEN_FDS meant for another process")),
        ));
    }
    let n_raw = get("LISTEN_FDS").unwrap_or("0");
    let n: usize =
        n_raw.trim().parse().ok().filter(|n| *n <= 1024).ok_or_else(|| ActivationError::Count(quoted(n_raw)))?;
    let names: Vec<String> = match get("LISTEN_FDNAMES") {
        Some(v) if !v.is_empty() => decode_fdnames(v),
        _ => (0..n).map(|i| i.to_string()).collect(),
    };
    if names.len() != n {
        return Err(ActivationError::Names { names: names.len(), fds: n });
    }
    Ok((names, None))
}

/// Reads `LISTEN_PID`/`LISTEN_FDS`/`LISTEN_FDNAMES` from `env`. When they
/// are meant for this process, takes over fds 3.. (checked to be listening
/// sockets) and returns them with the names; otherwise returns a notice
/// to log. The caller removes the variables from the environment.
pub fn adopt(env: &[(String, String)], me: u32) -> Result<(Adopted, Option<String>), ActivationError> {
    let (names, notice) = activation_names(env, me)?;
    let n = names.len();
    let mut out = Adopted::default();
    for (i, name) in names.into_iter().enumerate() {
        let raw = crate::sys::LISTEN_FDS_START + i as RawFd;
        let floor = crate::sys::LISTEN_FDS_START + n as RawFd;
        let fd = crate::sys::dup_inherited(raw, floor).map_err(|source| ActivationError::Take {
            fds: n,
            fd: raw,
            source,
        })?;
        match getsockopt(&fd, sockopt::AcceptConn) {
            Ok(true) => {}
            Ok(false) => return Err(ActivationError::NotListening(raw, quoted(&name))),
            Err(nix::errno::Errno::ENOTSOCK) => return Err(ActivationError::NotASocket(raw, quoted(&name))),
            Err(errno) => return Err(ActivationError::Probe { fd: raw, errno }),
        }
        out.sockets.push((name, Some(fd)));
    }
    Ok((out, notice))
}

/// The kernel's cap on listen backlogs.
fn somaxconn() -> Option<i32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok()?.trim().parse().ok()
}

/// Binds every spec in order. On error nothing stays bound (the listeners
/// made so far are dropped, which closes them; UNIX files we made are
/// removed). Returns the listeners and notices to log.
pub fn bind_all(
    specs: &[(String, SocketSpec)],
    opts: &BindOptions,
    adopted: &mut Adopted,
) -> Result<(Vec<Listener>, Vec<String>), BindError> {
    let mut notices = Vec::new();
    let mut backlog = opts.backlog;
    if let Some(max) = somaxconn().filter(|m| *m < backlog) {
        notices
            .push(format!("listen {backlog} is above net.core.somaxconn={max}; the kernel caps the backlog at {max}"));
        backlog = max;
    }
    // Duplicates of fd:// sockets go above every fd:// number still to come.
    let fd_floor = specs.iter().filter_map(|(_, s)| if let SocketSpec::Fd(n) = s { Some(*n + 1) } else { None }).max();
    let mut out: Vec<Listener> = Vec::new();
    for (name, spec) in specs {
        match bind_one(name, spec, backlog, opts, adopted, fd_floor.unwrap_or(0)) {
            Ok(l) => out.push(l),
            Err(e) => {
                for l in &out {
                    if let SocketSpec::Unix(p) = SocketSpec::parse(&l.name).unwrap_or(SocketSpec::Fd(-1)) {
                        let _ = std::fs::remove_file(p);
                    }
                }
                return Err(BindError::Socket { name: name.clone(), source: Box::new(e) });
            }
        }
    }
    Ok((out, notices))
}

fn bind_one(
    name: &str,
    spec: &SocketSpec,
    backlog: i32,
    opts: &BindOptions,
    adopted: &mut Adopted,
    fd_floor: RawFd,
) -> Result<Listener, BindError> {
    let backlog = Backlog::new(backlog.min(i32::from(u16::MAX))).map_err(|e| BindError::Backlog(e.to_string()))?;
    let (fd, local) = match spec {
        SocketSpec::Tcp { host, port } => bind_tcp(host, *port, backlog, opts.reuse_port)?,
        SocketSpec::Unix(path) => {
            // The mode is set by bind itself (through the umask), the owner
            // on the path without following a symlink, and the path is then
            // checked to be a socket: nothing here follows a name someone
            // may have swapped in since the bind (a root master must not
            // chmod or chown a file a worker's uid points it at).
            let (fd, local) = bind_unix(path, backlog, opts.chmod)?;
            if let Some((uid, gid)) = opts.chown {
                use std::os::unix::fs::FileTypeExt;
                let u = (uid >= 0).then(|| nix::unistd::Uid::from_raw(uid as u32));
                let g = (gid >= 0).then(|| nix::unistd::Gid::from_raw(gid as u32));
                nix::unistd::fchownat(nix::fcntl::AT_FDCWD, path, u, g, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(call(format!("chown-socket {}", path.display())))?;
                if !std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                    return Err(BindError::Replaced(path.display().to_string()));
                }
            }
            (fd, local)
        }
        SocketSpec::Sd(key) => {
            let fd = adopted.take(key)?;
            (fd, format!("sd {key}"))
        }
        SocketSpec::Abstract(n) => {
            let fd = stream_socket(AddressFamily::Unix)?;
            let addr = UnixAddr::new_abstract(n.as_bytes()).map_err(BindError::AbstractAddress)?;
            bind(fd.as_raw_fd(), &addr).map_err(call("bind"))?;
            listen(&fd, backlog).map_err(call("listen"))?;
            (fd, format!("@{n}"))
        }
        SocketSpec::Fd(n) => adopt_fd(*n, fd_floor)?,
    };
    Ok(Listener { name: name.to_owned(), kind: spec.kind(), local, fd })
}

fn stream_socket(family: AddressFamily) -> Result<OwnedFd, BindError> {
    socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).map_err(call("socket"))
}

fn bind_tcp(host: &str, port: u16, backlog: Backlog, reuse_port: bool) -> Result<(OwnedFd, String), BindError> {
    let addr: SocketAddr = if host.is_empty() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
    } else {
        let mut addrs =
            (host, port).to_socket_addrs().map_err(|source| BindError::Resolve { host: host.to_owned(), source })?;
        addrs.next().ok_or_else(|| BindError::NoAddress(host.to_owned()))?
    };
    let fd = stream_socket(match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    })?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(call("setsockopt(SO_REUSEADDR)"))?;
    if reuse_port {
        setsockopt(&fd, sockopt::ReusePort, &true).map_err(call("setsockopt(SO_REUSEPORT)"))?;
    }
    let res = match addr {
        SocketAddr::V4(a) => bind(fd.as_raw_fd(), &SockaddrIn::from(a)),
        SocketAddr::V6(a) => {
            // IPv6 sockets serve IPv6 only, as nginx does: `[::]:80` and
            // `:80` can then both be configured without a conflict.
            setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(call("setsockopt(IPV6_V6ONLY)"))?;
            bind(fd.as_raw_fd(), &SockaddrIn6::from(a))
        }
    };
    res.map_err(call(format!("bind {addr}")))?;
    listen(&fd, backlog).map_err(call("listen"))?;
    let local = nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(fd.as_raw_fd())
        .ok()
        .and_then(|s| {
            s.as_sockaddr_in()
                .map(|a| SocketAddr::from(*a).to_string())
                .or_else(|| s.as_sockaddr_in6().map(|a| SocketAddr::from(*a).to_string()))
        })
        .unwrap_or_else(|| addr.to_string());
    Ok((fd, local))
}

fn bind_unix(path: &std::path::Path, backlog: Backlog, mode: Option<u32>) -> Result<(OwnedFd, String), BindError> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(BindError::NotASocketFile(path.display().to_string()));
        }
        // A socket file nobody listens on is stale (left by a crash): replace it.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(BindError::InUse(path.display().to_string()));
        }
        std::fs::remove_file(path).map_err(|source| BindError::Stale { path: path.display().to_string(), source })?;
    }
    let fd = stream_socket(AddressFamily::Unix)?;
    let addr = UnixAddr::new(path).map_err(call(format!("address {}", path.display())))?;
    // The socket file is created with mode 0777 & !umask: for
    // `chmod-socket`, the umask is set to give exactly that mode. Only the
    // main thread creates files, so the process-wide umask is ours here.
    let old =
        mode.map(|m| nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(!m & 0o777 as nix::libc::mode_t)));
    let bound = bind(fd.as_raw_fd(), &addr);
    if let Some(old) = old {
        nix::sys::stat::umask(old);
    }
    bound.map_err(call(format!("bind {}", path.display())))?;
    remember_created(path);
    listen(&fd, backlog).map_err(call("listen"))?;
    Ok((fd, path.display().to_string()))
}

/// UNIX socket files this process created: path, device and inode.
static CREATED: std::sync::Mutex<Vec<(std::path::PathBuf, u64, u64)>> = std::sync::Mutex::new(Vec::new());

fn remember_created(path: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        let mut created = CREATED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        created.push((path.to_owned(), meta.dev(), meta.ino()));
    }
}

/// Removes the UNIX socket files this process created (`vacuum`, which
/// podmaster always does), each only if it is still the file it made: a
/// socket another instance bound at the same path since is left alone.
/// Called when the master exits, also after a failed startup.
pub fn remove_created_files() {
    use std::os::unix::fs::MetadataExt;
    let created = std::mem::take(&mut *CREATED.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    for (path, dev, ino) in created {
        let ours = std::fs::symlink_metadata(&path).is_ok_and(|m| m.dev() == dev && m.ino() == ino);
        if ours {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove the socket file");
            }
        }
    }
}

/// Takes over an inherited fd after checking it is a listening stream socket.
fn adopt_fd(n: RawFd, floor: RawFd) -> Result<(OwnedFd, String), BindError> {
    let fd = crate::sys::dup_inherited(n, floor).map_err(|source| BindError::Inherited { fd: n, source })?;
    match getsockopt(&fd, sockopt::AcceptConn) {
        Ok(true) => Ok((fd, format!("fd {n}"))),
        Ok(false) => Err(BindError::FdNotListening(n)),
        Err(nix::errno::Errno::ENOTSOCK) => Err(BindError::FdNotASocket(n)),
        Err(errno) => Err(BindError::FdProbe { fd: n, errno }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uwsgi_forms() {
        assert_eq!(SocketSpec::parse("127.0.0.1:3031"), Ok(SocketSpec::Tcp { host: "127.0.0.1".into(), port: 3031 }));
        assert_eq!(SocketSpec::parse(":80"), Ok(SocketSpec::Tcp { host: "".into(), port: 80 }));
        assert_eq!(SocketSpec::parse("[::1]:8000"), Ok(SocketSpec::Tcp { host: "::1".into(), port: 8000 }));
        assert_eq!(SocketSpec::parse("/run/app.sock"), Ok(SocketSpec::Unix("/run/app.sock".into())));
        assert_eq!(SocketSpec::parse("@app"), Ok(SocketSpec::Abstract("app".into())));
        assert_eq!(SocketSpec::parse("fd://3"), Ok(SocketSpec::Fd(3)));
        assert_eq!(SocketSpec::parse("sd://web"), Ok(SocketSpec::Sd("web".into())));
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(SocketSpec::parse("localhost:80"), Ok(SocketSpec::Tcp { host: "localhost".into(), port: 80 }));
        for bad in [
            "",
            "1.2.3.4:99999",
            "[::1",
            "[::1]",
            "[zz]:80",
            "host:",
            "fd://x",
            "fd://-1",
            "@",
            "sd://",
            "bad host:80",
            "a..b:1",
            "-x:1",
            "a_b:1",
        ] {
            assert!(SocketSpec::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let long = format!("/tmp/{}", "x".repeat(120));
        assert!(SocketSpec::parse(&long).unwrap_err().to_string().contains("limit is 107"));
    }

    #[test]
    fn binds_port_zero_and_reports_it() {
        let opts = BindOptions { backlog: 16, ..Default::default() };
        let (ls, _) = bind_all(
            &[("127.0.0.1:0".into(), SocketSpec::parse("127.0.0.1:0").unwrap())],
            &opts,
            &mut Adopted::default(),
        )
        .unwrap();
        assert!(ls[0].local.starts_with("127.0.0.1:") && !ls[0].local.ends_with(":0"));
    }

    #[test]
    fn adoption_env_is_validated() {
        let env = |pid: &str, fds: &str| {
            vec![("LISTEN_PID".to_string(), pid.to_string()), ("LISTEN_FDS".to_string(), fds.to_string())]
        };
        let (a, notice) = adopt(&env("1", "1"), 2).unwrap();
        assert!(a.is_empty() && notice.unwrap().contains("not this process"));
        assert!(adopt(&env("abc", "1"), 2).unwrap_err().to_string().contains("LISTEN_PID"));
        assert!(adopt(&env("2", "abc"), 2).unwrap_err().to_string().contains("LISTEN_FDS=\"abc\""));
        assert!(adopt(&[], 2).unwrap().0.is_empty());
        let mut named = env("2", "2");
        named.push(("LISTEN_FDNAMES".into(), "a".into()));
        assert!(adopt(&named, 2).unwrap_err().to_string().contains("1 names but LISTEN_FDS=2"));
    }

    #[test]
    fn port_in_use_is_an_error_naming_the_spec() {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let spec = first.local_addr().unwrap().to_string();
        let opts = BindOptions { backlog: 16, ..Default::default() };
        let err =
            bind_all(&[(spec.clone(), SocketSpec::parse(&spec).unwrap())], &opts, &mut Adopted::default()).unwrap_err();
        let err = err.to_string();
        assert!(err.starts_with(&format!("socket {spec}: bind")), "{err}");
        assert!(err.contains("in use"), "{err}");
    }
}
