//! Shared memory between the master and its workers: a sealed memfd
//! mapped `MAP_SHARED`, only ever accessed through atomics.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A shared memory region (a memfd mapped MAP_SHARED) seen as an array of
/// `AtomicI64`. Creator and inheritors map the same pages; every access
/// goes through atomics, so concurrent writers in other processes are
/// fine. The mapping lives as long as this value.
pub struct SharedRegion {
    ptr: std::ptr::NonNull<std::ffi::c_void>,
    words: usize,
    fd: Option<OwnedFd>,
}

// SAFETY: the region is only read and written through atomics, which are
// safe to share between threads (and processes).
unsafe impl Send for SharedRegion {}
// SAFETY: as above.
unsafe impl Sync for SharedRegion {}

impl SharedRegion {
    /// A new zeroed region of `words` 64-bit words, mapped read-write here.
    /// Its size is sealed (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`): no
    /// process that reaches the memfd (a worker through
    /// `/proc/<master>/fd`) can truncate it under the master's mapping,
    /// which would fault the master's next access (SIGBUS). With
    /// `others_read_only`, `F_SEAL_FUTURE_WRITE` too: this mapping stays
    /// writable, every later one (a worker's) can only read.
    pub fn create(name: &str, words: usize, others_read_only: bool) -> io::Result<SharedRegion> {
        use nix::sys::memfd::{MFdFlags, memfd_create};
        let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).map_err(io::Error::from)?;
        nix::unistd::ftruncate(&fd, (words * 8) as i64).map_err(io::Error::from)?;
        let mut r = Self::map(&fd, words, true)?;
        let mut seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        if others_read_only {
            seals |= libc::F_SEAL_FUTURE_WRITE;
        }
        // SAFETY: F_ADD_SEALS on our own memfd only changes its seals.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(io::Error::last_os_error());
        }
        r.fd = Some(fd);
        Ok(r)
    }

    /// Maps an inherited region fd (worker side) and closes the fd.
    pub fn adopt(raw: RawFd, words: usize, writable: bool) -> io::Result<SharedRegion> {
        // SAFETY: the master put this fd here for us to own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Self::map(&fd, words, writable)
    }

    fn map(fd: &OwnedFd, words: usize, writable: bool) -> io::Result<SharedRegion> {
        use nix::sys::mman::{MapFlags, ProtFlags, mmap};
        let len = std::num::NonZeroUsize::new(words * 8).ok_or_else(|| io::Error::other("empty region"))?;
        let prot = if writable { ProtFlags::PROT_READ | ProtFlags::PROT_WRITE } else { ProtFlags::PROT_READ };
        // SAFETY: a fresh shared mapping of a memfd of at least `len` bytes;
        // nothing else aliases it as non-atomic memory.
        let ptr = unsafe { mmap(None, len, prot, MapFlags::MAP_SHARED, fd, 0) }.map_err(io::Error::from)?;
        Ok(SharedRegion { ptr, words, fd: None })
    }

    /// Makes our own mapping read-only (the master's view of worker data).
    pub fn make_read_only(&self) -> io::Result<()> {
        // SAFETY: changes protection of exactly our mapping.
        unsafe { nix::sys::mman::mprotect(self.ptr, self.words * 8, nix::sys::mman::ProtFlags::PROT_READ) }
            .map_err(io::Error::from)
    }

    pub fn words(&self) -> &[std::sync::atomic::AtomicI64] {
        // SAFETY: the mapping is `words * 8` bytes, page-aligned (so
        // 8-aligned), lives as long as `self`, and is only accessed through
        // these atomics.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr() as *const std::sync::atomic::AtomicI64, self.words) }
    }

    /// The memfd, for handing to children (creator side only).
    pub fn fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(|f| f.as_raw_fd())
    }
}

impl Drop for SharedRegion {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping we made; no references to
        // it outlive `self` (slices borrow from it).
        unsafe {
            let _ = nix::sys::mman::munmap(self.ptr, self.words * 8);
        }
    }
}
