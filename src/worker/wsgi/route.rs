//! Which app serves a request when several are mounted (`mount`), and
//! the `SCRIPT_NAME`/`PATH_INFO` it sees — uWSGI's two ways:
//!
//! - `manage-script-name`: the longest mount prefix of the path picks the
//!   app, and moves from `PATH_INFO` to `SCRIPT_NAME`. Unlike uWSGI, a
//!   prefix matches whole path segments only: `/app` serves `/app` and
//!   `/app/x`, not `/application` (uWSGI would hand `/application` to
//!   `/app` with `PATH_INFO = "lication"`).
//! - without it: the request's own `SCRIPT_NAME` (nginx's
//!   `uwsgi_param SCRIPT_NAME`) picks the app whose prefix it equals; the
//!   path is left as the proxy sent it.
//!
//! Anything else goes to the default app: the one at `/` (`module` or
//! `wsgi-file`, or `mount = /=...`), else the first mounted, as uWSGI's
//! first loaded app is its default.

/// The app chosen for a request and what it sees as its location.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Routed<'r> {
    /// Index into the mounts the router was made with.
    pub app: usize,
    pub script_name: &'r [u8],
    pub path_info: &'r [u8],
}

/// The mount prefixes (without trailing `/`; `""` for the root) in the
/// order the apps were loaded.
#[derive(Debug)]
pub(super) struct Router {
    mounts: Vec<Vec<u8>>,
    manage_script_name: bool,
    default: usize,
}

impl Router {
    pub(super) fn new(mounts: Vec<Vec<u8>>, manage_script_name: bool) -> Router {
        let default = mounts.iter().position(|m| m.is_empty()).unwrap_or(0);
        Router { mounts, manage_script_name, default }
    }

    /// Routes a request with these `SCRIPT_NAME` and `PATH_INFO`.
    pub(super) fn route<'r>(&'r self, script_name: &'r [u8], path_info: &'r [u8]) -> Routed<'r> {
        let unchanged = |app| Routed { app, script_name, path_info };
        if self.mounts.len() < 2 && !self.manage_script_name {
            return unchanged(self.default);
        }
        if self.manage_script_name {
            let best = self
                .mounts
                .iter()
                .enumerate()
                .filter(|(_, m)| !m.is_empty() && under(path_info, m))
                .max_by_key(|(_, m)| m.len());
            return match best {
                Some((i, m)) => Routed { app: i, script_name: m, path_info: &path_info[m.len()..] },
                None => unchanged(self.default),
            };
        }
        let by_name = self.mounts.iter().position(|m| !m.is_empty() && m.as_slice() == script_name);
        unchanged(by_name.unwrap_or(self.default))
    }
}

/// `path` is `prefix` or a path below it (whole segments).
fn under(path: &[u8], prefix: &[u8]) -> bool {
    path.starts_with(prefix) && matches!(path.get(prefix.len()), None | Some(b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn router(mounts: &[&str], manage: bool) -> Router {
        Router::new(mounts.iter().map(|m| m.as_bytes().to_vec()).collect(), manage)
    }

    fn routed<'r>(r: &'r Router, script: &'r str, path: &'r str) -> (usize, &'r str, &'r str) {
        let got = r.route(script.as_bytes(), path.as_bytes());
        let s = |b: &'r [u8]| std::str::from_utf8(b).unwrap();
        (got.app, s(got.script_name), s(got.path_info))
    }

    #[test]
    fn manage_script_name_takes_the_longest_whole_segment_prefix() {
        let r = router(&["", "/api", "/api/v2", "/app"], true);
        assert_eq!(routed(&r, "", "/api/v2/users"), (2, "/api/v2", "/users"));
        assert_eq!(routed(&r, "", "/api/v1/users"), (1, "/api", "/v1/users"));
        assert_eq!(routed(&r, "", "/api"), (1, "/api", ""));
        assert_eq!(routed(&r, "", "/api/"), (1, "/api", "/"));
        assert_eq!(routed(&r, "", "/application"), (0, "", "/application"));
        assert_eq!(routed(&r, "", "/"), (0, "", "/"));
        // No default app: the first mounted serves the rest.
        let r = router(&["/a", "/b"], true);
        assert_eq!(routed(&r, "", "/c"), (0, "", "/c"));
        assert_eq!(routed(&r, "", "/b/x"), (1, "/b", "/x"));
    }

    #[test]
    fn without_manage_script_name_the_requests_script_name_picks() {
        let r = router(&["", "/api"], false);
        assert_eq!(routed(&r, "/api", "/users"), (1, "/api", "/users"));
        assert_eq!(routed(&r, "", "/api/users"), (0, "", "/api/users"));
        assert_eq!(routed(&r, "/other", "/x"), (0, "/other", "/x"));
        // One app: whatever the request says, it is served as sent.
        let r = router(&[""], false);
        assert_eq!(routed(&r, "/x", "/y"), (0, "/x", "/y"));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]
        /// Whatever the path, the route is an app that exists, and with
        /// manage-script-name SCRIPT_NAME + PATH_INFO is the path.
        #[test]
        fn routes_are_total(
            mounts in proptest::collection::vec("(/[a-c]{0,3}){0,3}", 1..5),
            path in "(/[a-c]{0,4}){0,4}",
            manage: bool,
        ) {
            let r = router(&mounts.iter().map(String::as_str).collect::<Vec<_>>(), manage);
            let got = r.route(b"", path.as_bytes());
            prop_assert!(got.app < mounts.len());
            if manage {
                prop_assert_eq!([got.script_name, got.path_info].concat(), path.as_bytes().to_vec());
            }
        }
    }
}
