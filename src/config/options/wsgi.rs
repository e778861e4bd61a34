//! Options of the built-in WSGI worker, with uWSGI's meanings: which app
//! (`module` or `wsgi-file`, and `callable`), how many app threads a
//! worker runs, and the request limits its front enforces (`buffer-size`,
//! `limit-post`). Which protocol each socket speaks is decided by the
//! socket option's name (see `sockets.rs`).

use super::{Kind, OptDef};
use crate::config::values::{flag, path, strip_comment, whole_in};
use crate::config::{AppSource, Config, ConfigError, Entry, Mount};

/// Table-like (one declaration per option), exempt from the 80-line limit.
pub(super) const OPTIONS: &[OptDef] = &[
    OptDef::new(
        "module",
        Kind::Text,
        "WSGI app to serve: a module to import, `pkg.mod` or `pkg.mod:callable` (the callable defaults to \
         `application`)",
        module,
    )
    .aliases(&["wsgi"]),
    OptDef::new("wsgi-file", Kind::Text, "WSGI app to serve: a Python file to load (its `callable`)", |c, e| {
        c.wsgi_file = Some(path(e));
        Ok(())
    }),
    OptDef::new(
        "callable",
        Kind::Text,
        "name of the WSGI callable in `module` or `wsgi-file` (uWSGI's default)",
        |c, e| {
            let name = strip_comment(&e.value);
            if !is_identifier(name) {
                return Err(ConfigError::at(e, format!("expected a Python name like `app`, found {name:?}")));
            }
            c.callable = name.to_owned();
            Ok(())
        },
    )
    .default("application"),
    OptDef::new(
        "mount",
        Kind::Text,
        "an app under a URL prefix (repeatable): /prefix=pkg.mod[:callable] or /prefix=path/to/app.py",
        mount,
    )
    .repeatable(),
    OptDef::new(
        "manage-script-name",
        Kind::Bool,
        "pick the app by the longest mount prefix of the path, and move the prefix from PATH_INFO to SCRIPT_NAME",
        |c, e| {
            c.manage_script_name = flag(e);
            Ok(())
        },
    )
    .default("false"),
    OptDef::new(
        "need-app",
        Kind::Bool,
        "true: an app that fails to load stops the workers (exit 69); false: its requests get 500s",
        |c, e| {
            c.need_app = flag(e);
            Ok(())
        },
    )
    .default("true"),
    OptDef::new("threads", Kind::Uint, "app threads per WSGI worker, each serving one connection at a time", |c, e| {
        whole_in(e, 1..=1024, "1 to 1024 threads").map(|n| c.threads = n as u32)
    })
    .default("1"),
    OptDef::new(
        "buffer-size",
        Kind::Uint,
        "largest request head (HTTP) or vars block (uwsgi) the WSGI worker accepts, in bytes",
        |c, e| whole_in(e, 512..=65535, "512 to 65535 bytes").map(|n| c.buffer_size = n as usize),
    )
    .default("4096"),
    OptDef::new(
        "limit-post",
        Kind::Uint,
        "largest request body the WSGI worker accepts, in bytes (0: no limit)",
        |c, e| whole_in(e, 0..=u64::MAX, "a number of bytes").map(|n| c.limit_post = (n > 0).then_some(n)),
    )
    .default("0"),
];

/// `module = pkg.mod:callable`: the module and, when given, the callable.
fn module(c: &mut Config, e: &Entry) -> Result<(), ConfigError> {
    let (m, callable) = parse_module(e, strip_comment(&e.value))?;
    c.module = Some(m);
    c.module_callable = callable;
    Ok(())
}

/// `pkg.mod` or `pkg.mod:callable`, both checked to be Python names.
fn parse_module(e: &Entry, v: &str) -> Result<(String, Option<String>), ConfigError> {
    let (m, callable) = match v.split_once(':') {
        Some((m, call)) => (m, Some(call)),
        None => (v, None),
    };
    if !m.split('.').all(is_identifier) {
        return Err(ConfigError::at(e, format!("expected a module name like `pkg.app` or `pkg.app:app`, found {v:?}")));
    }
    if let Some(call) = callable {
        if !is_identifier(call) {
            return Err(ConfigError::at(e, format!("expected a Python name after `:`, found {call:?}")));
        }
    }
    Ok((m.to_owned(), callable.map(str::to_owned)))
}

/// `mount = /prefix=target`, uWSGI's form: the target is a file when it
/// looks like a path (has a `/` or ends in `.py` or `.wsgi`), else a
/// module with an optional `:callable`. The prefix loses its trailing
/// `/`; `/` itself mounts the app that serves what no other prefix claims.
fn mount(c: &mut Config, e: &Entry) -> Result<(), ConfigError> {
    let v = e.value.trim();
    let Some((prefix, target)) = v.split_once('=') else {
        return Err(ConfigError::at(e, format!("expected /PREFIX=MODULE or /PREFIX=FILE, found {v:?}")));
    };
    let (prefix, target) = (prefix.trim(), target.trim());
    if !prefix.starts_with('/') || prefix.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(ConfigError::at(e, format!("a mount prefix is a URL path starting with `/`, found {prefix:?}")));
    }
    let prefix = prefix.trim_end_matches('/').to_owned();
    if target.is_empty() {
        return Err(ConfigError::at(e, format!("mount {prefix:?} names no app: /PREFIX=MODULE or /PREFIX=FILE")));
    }
    let looks_like_file = target.contains('/') || target.ends_with(".py") || target.ends_with(".wsgi");
    let (source, callable) = if looks_like_file {
        (AppSource::File(target.into()), None)
    } else {
        let (m, call) = parse_module(e, target)?;
        (AppSource::Module(m), call)
    };
    c.mounts.push(Mount { prefix, source, callable });
    Ok(())
}

/// A Python identifier (ASCII letters, digits and `_`, not starting with
/// a digit; non-ASCII names are legal Python but not worth the trouble).
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Origin;

    fn e(key: &str, value: &str) -> Entry {
        Entry::new(key, value, Origin::Cli(key.into()))
    }

    #[test]
    fn module_forms() {
        let c = Config::resolve(&[e("module", "pkg.app:api")]).unwrap();
        assert_eq!((c.module.as_deref(), c.module_callable.as_deref()), (Some("pkg.app"), Some("api")));
        let c = Config::resolve(&[e("wsgi", "pkg.app"), e("callable", "app")]).unwrap();
        let app = c.app().unwrap();
        assert_eq!(app.callable, "app");
        let c = Config::resolve(&[e("module", "app")]).unwrap();
        assert_eq!(c.app().unwrap().callable, "application");
        for bad in ["pkg/app.py", "pkg..app", "app:", "app:a-b", "1app"] {
            assert!(Config::resolve(&[e("module", bad)]).is_err(), "{bad}");
        }
    }

    #[test]
    fn mounts() {
        let c = Config::resolve(&[
            e("mount", "/api=pkg.api:app"),
            e("mount", "/legacy/=legacy/wsgi.py"),
            e("mount", "/=site"),
            e("callable", "wsgi"),
        ])
        .unwrap();
        let got: Vec<(String, AppSource, String)> =
            c.apps().into_iter().map(|m| (m.mount, m.app.source, m.app.callable)).collect();
        assert_eq!(
            got,
            [
                ("/api".into(), AppSource::Module("pkg.api".into()), "app".into()),
                ("/legacy".into(), AppSource::File("legacy/wsgi.py".into()), "wsgi".into()),
                ("".into(), AppSource::Module("site".into()), "wsgi".into()),
            ]
        );
        assert!(c.serves_wsgi() && c.app().is_none());
        for bad in ["api=pkg", "/api", "/api=", "/a b=pkg", "/api=pkg:", "/api=1pkg", "=pkg"] {
            assert!(Config::resolve(&[e("mount", bad)]).is_err(), "{bad}");
        }
        let c =
            Config::resolve(&[e("module", "app"), e("manage-script-name", "true"), e("need-app", "false")]).unwrap();
        assert!(c.manage_script_name && !c.need_app);
        assert_eq!(c.apps()[0].mount, "");
    }

    #[test]
    fn limits() {
        let c = Config::resolve(&[]).unwrap();
        assert_eq!((c.threads, c.buffer_size, c.limit_post), (1, 4096, None));
        let c = Config::resolve(&[e("threads", "4"), e("buffer-size", "32768"), e("limit-post", "1000")]).unwrap();
        assert_eq!((c.threads, c.buffer_size, c.limit_post), (4, 32768, Some(1000)));
        assert!(Config::resolve(&[e("threads", "0")]).is_err());
        assert!(Config::resolve(&[e("buffer-size", "100")]).is_err());
    }
}
