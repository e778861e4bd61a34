//! uWSGI options that are not podmaster options: the ones accepted and
//! ignored because podmaster has no use for them (each with what podmaster
//! does instead, logged once as a notice and listed in the README), and the
//! ones refused because they would change what runs and are not
//! implemented (each with its own message).

/// Accepted and ignored: the option, and what podmaster does instead.
/// Table-like, exempt from the 80-line limit. The README's table
/// "uWSGI options accepted and ignored" lists exactly these (a test checks).
pub static IGNORED: &[(&str, &str)] = &[
    ("add-header", "podmaster does not handle responses: set headers in your app"),
    ("auto-procname", "podmaster always names its processes (`podmaster: worker N`)"),
    ("die-on-term", "SIGTERM is always a graceful drain"),
    ("disable-write-exception", "the WSGI worker closes a connection whose write failed; the app sees no exception"),
    ("enable-threads", "the GIL is always initialised; threads work"),
    (
        "http-keepalive",
        "the WSGI worker keeps HTTP/1.1 connections alive (5 s idle, parked in epoll: an idle client holds no thread); an override script's server decides",
    ),
    ("http-timeout", "the WSGI worker's timeouts are fixed (10 s for a request head, 60 s per body read or write)"),
    ("ignore-sigpipe", "workers start with SIGPIPE ignored, as Python sets it"),
    ("ignore-write-errors", "the WSGI worker closes a connection whose write failed, without logging each"),
    ("log-maxsize", "podmaster logs to stderr for the container runtime; rotation is its job"),
    ("log-master", "the workers' output goes straight to the container's stdout and stderr"),
    ("logger", "podmaster logs to stderr (log-format = text or json)"),
    ("logto", "podmaster logs to stderr for the container runtime (kubectl logs), not to a file"),
    ("master-fifo", "use signals: HUP reloads, TERM drains, TTIN/TTOU scale"),
    ("memory-report", "see each worker's memory in /status and /metrics"),
    ("no-orphans", "workers die with the master (parent-death signal)"),
    ("post-buffering", "the WSGI worker streams request bodies to the app: wsgi.input reads the socket"),
    ("py-call-osafterfork", "forked workers run os.register_at_fork hooks"),
    ("single-interpreter", "each worker has one interpreter"),
    ("socket-timeout", "the WSGI worker's timeouts are fixed (10 s for a request head, 60 s per body read or write)"),
    ("stats", "see /status and /metrics on probe-socket"),
    ("strict", "podmaster is always strict: unknown options are errors"),
    ("thunder-lock", "the kernel wakes one accepting worker per connection"),
    ("vacuum", "UNIX socket files podmaster created are removed on exit"),
];

/// Refused: the option, and why with what to do instead.
pub static REFUSED: &[(&str, &str)] = &[
    ("cheaper", "podmaster keeps `processes` workers; scale with processes = auto, SIGTTIN/SIGTTOU or replicas"),
    ("https", "TLS terminates at the Service or Ingress; serve plain HTTP in the pod"),
    ("emperor", "one podmaster runs one app per container; use one Deployment per app"),
    ("gevent", "podmaster has no loop engines; start gevent in your worker script"),
    ("exec-asap", "podmaster runs no hooks; run the command in the image's entrypoint or as attach-daemon"),
    ("hook-pre-app", "podmaster runs no hooks; run the command in the image's entrypoint or as attach-daemon"),
    ("hook-master-start", "podmaster runs no hooks; run the command in the image's entrypoint or as attach-daemon"),
    ("cron", "podmaster runs no cron jobs; use a Kubernetes CronJob"),
    ("unique-cron", "podmaster runs no cron jobs; use a Kubernetes CronJob"),
];

/// What podmaster does instead of ignored uWSGI option `name`.
pub fn ignored(name: &str) -> Option<&'static str> {
    IGNORED.iter().find(|(n, _)| *n == name).map(|(_, why)| *why)
}

/// Why uWSGI option `name` is refused.
pub fn refused(name: &str) -> Option<&'static str> {
    REFUSED.iter().find(|(n, _)| *n == name).map(|(_, why)| *why)
}

/// `plugin`/`plugins`: podmaster embeds CPython, so loading the Python
/// plugin is a no-op; any other plugin is refused by name.
pub fn plugins(value: &str) -> Result<(), String> {
    let others: Vec<&str> = value
        .split([',', ' '])
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.starts_with("python") && *p != "0")
        .collect();
    if others.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "uWSGI plugin {} not available: podmaster embeds CPython and has no plugins",
            others.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_unique_and_disjoint_from_options() {
        for table in [IGNORED, REFUSED] {
            let mut names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), table.len());
            for n in names {
                assert!(super::super::lookup(n).is_none(), "{n} is a podmaster option too");
            }
        }
        assert!(IGNORED.iter().all(|(n, _)| refused(n).is_none()));
    }

    #[test]
    fn python_plugins_are_no_ops_and_others_are_named() {
        assert_eq!(plugins("python3"), Ok(()));
        assert_eq!(plugins("python, python311"), Ok(()));
        assert_eq!(plugins("python3,router_static gevent").unwrap_err(), {
            "uWSGI plugin `router_static`, `gevent` not available: podmaster embeds CPython and has no plugins"
        });
    }
}
