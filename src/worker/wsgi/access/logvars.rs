//! The app's log variables: `uwsgi.set_logvar(name, value)` during a
//! request makes `%(name)` in a uWSGI log format print `value` on that
//! request's line (and `log-format = json` lines carry them under
//! `logvars`); `uwsgi.get_logvar(name)` reads one back. As in uWSGI they
//! belong to the request: kept per serving thread (the thread that runs
//! the app's call) and cleared when its next request begins. A variable
//! set from another thread of the app belongs to no request and is not
//! logged.
//!
//! Bounded, as every input: at most [`MAX_VARS`] per request, names and
//! values cut at [`MAX_LEN`] bytes; a value is escaped on the line like
//! any request bytes.

use std::cell::RefCell;

/// Variables per request: more are dropped (the first ones stay).
pub(super) const MAX_VARS: usize = 64;
/// Longest name or value kept (cut at a character boundary).
pub(super) const MAX_LEN: usize = 4096;

thread_local! {
    static VARS: RefCell<Vec<(String, String)>> = const { RefCell::new(Vec::new()) };
}

/// Sets `name` for the thread's current request (a second set replaces).
pub fn set(name: &str, value: &str) {
    VARS.with(|v| {
        let Ok(mut vars) = v.try_borrow_mut() else { return };
        let (name, value) = (cut(name), cut(value));
        if let Some(slot) = vars.iter_mut().find(|(n, _)| n == name) {
            slot.1.clear();
            slot.1.push_str(value);
        } else if vars.len() < MAX_VARS {
            vars.push((name.to_owned(), value.to_owned()));
        }
    });
}

/// `f` of the value of `name` for the thread's current request, if set.
pub fn get<R>(name: &str, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    VARS.with(|v| {
        let vars = v.try_borrow().ok()?;
        vars.iter().find(|(n, _)| n == name).map(|(_, value)| f(value.as_bytes()))
    })
}

/// Every variable set for the current request, in the order first set.
pub(super) fn each(mut f: impl FnMut(&str, &str)) {
    VARS.with(|v| {
        if let Ok(vars) = v.try_borrow() {
            for (n, value) in vars.iter() {
                f(n, value);
            }
        }
    });
}

/// A request begins on this thread: the last one's variables go.
pub(super) fn clear() {
    VARS.with(|v| {
        if let Ok(mut vars) = v.try_borrow_mut() {
            if !vars.is_empty() {
                vars.clear();
            }
        }
    });
}

fn cut(s: &str) -> &str {
    if s.len() <= MAX_LEN {
        return s;
    }
    let mut end = MAX_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_replace_bound_and_clear() {
        clear();
        set("user_id", "42");
        set("user_id", "43");
        set("é", &"é".repeat(MAX_LEN));
        assert_eq!(get("user_id", |v| v.to_vec()), Some(b"43".to_vec()));
        let long = get("é", |v| v.len()).unwrap();
        assert!((MAX_LEN - 1..=MAX_LEN).contains(&long), "{long}");
        for i in 0..MAX_VARS * 2 {
            set(&format!("v{i}"), "x");
        }
        let mut n = 0;
        each(|_, _| n += 1);
        assert_eq!(n, MAX_VARS);
        clear();
        assert_eq!(get("user_id", |_| ()), None);
        // Another thread's variables are its own.
        set("mine", "1");
        std::thread::spawn(|| assert_eq!(get("mine", |_| ()), None)).join().unwrap();
    }
}
