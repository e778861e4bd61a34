//! Lending a borrowed reader to objects that may outlive the borrow: the
//! WSGI worker's `wsgi.input` is a Python object the app can keep after
//! its call returns, but the request body it reads borrows the
//! connection, which lives only for that call. [`lend`] hands the object
//! a [`Loan`] for the duration of a closure and revokes it when the
//! closure ends (also by a panic); a read through a revoked loan returns
//! `None`, never touches freed memory.
//!
//! Why `unsafe`: the loan holds a pointer with its lifetime erased, which
//! safe Rust cannot express. It is sound because the only way to make a
//! loan is [`lend`], whose guard (never handed out, so it cannot be
//! forgotten) clears the pointer under the same mutex every use holds,
//! before the borrow ends; the mutex also makes uses from several threads
//! one at a time, and the reader is `Send`.

use std::io::BufRead;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, PoisonError};

/// The erased pointer; only dereferenced under the loan's mutex while the
/// borrow it came from is alive (see the module doc).
struct Lent(NonNull<dyn BufRead + Send + 'static>);

// SAFETY: the pointee is `Send`, and the mutex around `Lent` serialises
// every access, so moving the pointer to another thread is as safe as
// moving the `&mut` it came from.
unsafe impl Send for Lent {}

/// A revocable handle to a lent reader; cheap to clone.
#[derive(Clone)]
pub struct Loan {
    slot: Arc<Mutex<Option<Lent>>>,
}

impl Loan {
    /// A loan that was never lent (or already revoked).
    pub fn revoked() -> Loan {
        Loan { slot: Arc::new(Mutex::new(None)) }
    }

    /// Runs `f` on the reader while the loan lasts; `None` once revoked.
    /// Holds the loan's lock for the whole call: concurrent uses wait.
    pub fn with<R>(&self, f: impl FnOnce(&mut (dyn BufRead + Send)) -> R) -> Option<R> {
        let guard = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        let lent = guard.as_ref()?;
        // SAFETY: the slot is Some only while `lend`'s borrow is alive (its
        // guard clears it, under this mutex, before `lend` returns), and
        // the lock we hold keeps every other use out (module doc).
        let reader = unsafe { &mut *lent.0.as_ptr() };
        Some(f(reader))
    }
}

/// Clears the slot when `lend` ends, by return or unwind.
struct Revoke(Arc<Mutex<Option<Lent>>>);

impl Drop for Revoke {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Lends `reader` to `f` as a [`Loan`] that is revoked when `f` returns.
pub fn lend<'a, R>(reader: &'a mut (dyn BufRead + Send + 'a), f: impl FnOnce(Loan) -> R) -> R {
    let ptr: NonNull<dyn BufRead + Send + 'a> = NonNull::from(reader);
    // SAFETY: only the lifetime changes (same fat pointer layout); the
    // pointer is never used after `Revoke` clears it below, before 'a ends.
    let erased: NonNull<dyn BufRead + Send + 'static> = unsafe { std::mem::transmute(ptr) };
    let slot = Arc::new(Mutex::new(Some(Lent(erased))));
    let _revoke = Revoke(Arc::clone(&slot));
    f(Loan { slot })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_while_lent_and_none_after() {
        let mut data: &[u8] = b"hello";
        let mut kept = Loan::revoked();
        let got = lend(&mut data, |loan| {
            kept = loan.clone();
            loan.with(|r| {
                let mut s = String::new();
                r.read_to_string(&mut s).map(|_| s).unwrap()
            })
        });
        assert_eq!(got.as_deref(), Some("hello"));
        assert!(kept.with(|_| ()).is_none());
    }
}
