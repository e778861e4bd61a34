//! Options about the listening sockets and the probe server's address.

use super::{Kind, OptDef};
use crate::config::values::{flag, lookup_group, lookup_user, strip_comment, text, whole_in};
use crate::config::{AtEntry, Config, ConfigError, Entry, SocketEntry, SocketProtocol};
use crate::sockets::SocketSpec;

/// Table-like (one declaration per option), exempt from the 80-line limit.
pub(super) const OPTIONS: &[OptDef] = &[
    OptDef::new(
        "socket",
        Kind::Text,
        "listening socket to bind and hand to every worker (repeatable): host:port, :port, [v6]:port, /path.sock, @abstract, fd://N, sd://NAME",
        socket,
    )
    .aliases(&["http-socket", "uwsgi-socket", "http11-socket", "shared-socket", "http"])
    .repeatable(),
    OptDef::new(
        "probe-socket",
        Kind::Text,
        "address of the HTTP probe server (/livez /readyz /metrics /status); off unless set",
        |c, e| {
            c.probe_socket = Some(text(e));
            Ok(())
        },
    ),
    OptDef::new("listen", Kind::Uint, "listen backlog of every socket (capped by net.core.somaxconn)", |c, e| {
        whole_in(e, 1..=i32::MAX as u64, "a backlog of at least 1").map(|n| c.listen = n as i32)
    })
    .default("1024"),
    OptDef::new("reuse-port", Kind::Bool, "set SO_REUSEPORT on TCP sockets", |c, e| {
        c.reuse_port = flag(e);
        Ok(())
    })
    .default("false"),
    OptDef::new(
        "chmod-socket",
        Kind::Text,
        "mode of UNIX socket files, octal (e.g. 660; bare `chmod-socket` means 666)",
        chmod_socket,
    ),
    OptDef::new("chown-socket", Kind::Text, "owner of UNIX socket files: user[:group], names or numbers", chown_socket),
];

fn socket(c: &mut Config, e: &Entry) -> Result<(), ConfigError> {
    // `127.0.0.1:3032 ; behind nginx` works in uWSGI (it reads the port
    // with atoi): a value that parses only without its trailing comment
    // is taken without it.
    let bare = strip_comment(&e.value);
    let value = match SocketSpec::parse(e.value.trim()) {
        Err(_) if bare != e.value.trim() && SocketSpec::parse(bare).is_ok() => bare,
        _ => e.value.trim(),
    };
    let spec = SocketSpec::parse(value).at(e)?;
    if e.key == "http" {
        let text = format!(
            "http {value}: podmaster runs no HTTP router process; the workers serve HTTP on this socket \
             themselves (as with http-socket) and the kernel balances connections across them"
        );
        c.notices.push((e.key.clone(), e.origin.clone(), text));
    } else if e.key != "socket" {
        let text = format!(
            "{} {}: bound as a listening socket and handed to the workers, which speak its protocol themselves \
             (with module or wsgi-file, podmaster speaks it)",
            e.key, value
        );
        c.notices.push((e.key.clone(), e.origin.clone(), text));
    }
    let protocol = SocketProtocol::of_key(&e.key);
    c.sockets.push(SocketEntry { name: value.to_owned(), spec, origin: e.origin.clone(), protocol });
    Ok(())
}

fn chmod_socket(c: &mut Config, e: &Entry) -> Result<(), ConfigError> {
    let v = e.value.trim();
    // uWSGI: a bare `chmod-socket` means 666.
    let v = if v == "true" { "666" } else { v };
    let mode = u32::from_str_radix(v, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| ConfigError::at(e, format!("expected an octal mode like 660, found {v:?}")))?;
    c.chmod_socket = Some(mode);
    Ok(())
}

fn chown_socket(c: &mut Config, e: &Entry) -> Result<(), ConfigError> {
    let v = e.value.trim();
    let (u, g) = v.split_once(':').map_or((v, None), |(u, g)| (u, Some(g)));
    let uid = lookup_user(u).at(e)?.0;
    let gid = match g {
        Some(g) => i64::from(lookup_group(g).at(e)?),
        None => -1,
    };
    c.chown_socket = Some((i64::from(uid), gid));
    Ok(())
}
