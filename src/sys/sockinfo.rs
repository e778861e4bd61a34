//! What the kernel says about our sockets, for metrics: a listening
//! socket's accept queue (TCP through `TCP_INFO`; UNIX through
//! `sock_diag`, the netlink interface `ss` uses), and how long a connected
//! TCP socket's last bytes have waited. Each is one or two syscalls,
//! asked at scrape time (queues) or once per request (the wait); none
//! scans `/proc/net`, which grows with every connection under load.

use std::os::fd::{AsRawFd, RawFd};

/// A listening socket's accept queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenQueue {
    /// Connections waiting to be accepted now.
    pub queued: u32,
    /// The most the queue holds (the `listen` backlog, capped by somaxconn).
    pub backlog: u32,
}

/// `TCP_LISTEN` in `tcpi_state` and in `sock_diag`'s states.
const TCP_LISTEN: u8 = 10;

/// The accept queue of our listening socket `fd` (TCP or UNIX); None for
/// anything else, or when the kernel cannot say (no `unix_diag`).
pub fn listen_queue(fd: RawFd) -> Option<ListenQueue> {
    let info = tcp_info(fd);
    match info {
        // For a socket in LISTEN state the kernel reports the queue length
        // in `tcpi_unacked` and the backlog in `tcpi_sacked`.
        Some(i) if i.tcpi_state == TCP_LISTEN => Some(ListenQueue { queued: i.tcpi_unacked, backlog: i.tcpi_sacked }),
        Some(_) => None,
        None => unix_listen_queue(fd),
    }
}

/// Milliseconds since the connected TCP socket `fd` last received data
/// (`tcpi_last_data_recv`, at the kernel's clock-tick resolution); None
/// for anything else (a UNIX socket). Read just before a request is
/// handed to the app, it is how long the request's last bytes waited.
pub fn since_last_receive_ms(fd: RawFd) -> Option<u32> {
    // TCP_ESTABLISHED is state 1, TCP_CLOSE_WAIT (the client sent its
    // request and shut its side) 8.
    tcp_info(fd).filter(|i| matches!(i.tcpi_state, 1 | 8)).map(|i| i.tcpi_last_data_recv)
}

fn tcp_info(fd: RawFd) -> Option<libc::tcp_info> {
    // SAFETY: getsockopt into a zeroed tcp_info of the size we pass; a
    // non-TCP fd (or a closed one) just fails.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        (rc == 0).then_some(info)
    }
}

// sock_diag (linux/sock_diag.h, linux/unix_diag.h, linux/netlink.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_RQLEN: u16 = 4;
const NLMSG_HDRLEN: usize = 16;
const UNIX_DIAG_MSG_LEN: usize = 16;

/// A UNIX listening socket's queue, asked of `unix_diag` by inode: for a
/// listener, `UNIX_DIAG_RQLEN` holds the connections waiting and the backlog.
fn unix_listen_queue(fd: RawFd) -> Option<ListenQueue> {
    // SAFETY: fstat into a zeroed stat of our own fd (a closed one fails).
    let st = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        (libc::fstat(fd, &mut st) == 0).then_some(st)?
    };
    let ino = u32::try_from(st.st_ino).ok().filter(|_| st.st_mode & libc::S_IFMT == libc::S_IFSOCK)?;
    use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, recv, send, setsockopt, socket};
    let nl = socket(AddressFamily::Netlink, SockType::Datagram, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkSockDiag)
        .ok()?;
    // The kernel answers at once; the timeout only bounds a surprise.
    let timeout = nix::sys::time::TimeVal::new(1, 0);
    setsockopt(&nl, nix::sys::socket::sockopt::ReceiveTimeout, &timeout).ok()?;
    send(nl.as_raw_fd(), &unix_diag_request(ino), MsgFlags::empty()).ok()?;
    let mut buf = [0u8; 1024];
    let n = recv(nl.as_raw_fd(), &mut buf, MsgFlags::empty()).ok()?;
    parse_unix_diag(&buf[..n.min(buf.len())], ino)
}

/// `nlmsghdr` + `unix_diag_req` asking for the listener with inode `ino`.
fn unix_diag_request(ino: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(40);
    m.extend_from_slice(&40u32.to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
    m.push(libc::AF_UNIX as u8);
    m.push(0); // protocol
    m.extend_from_slice(&0u16.to_ne_bytes()); // pad
    m.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes()); // states
    m.extend_from_slice(&ino.to_ne_bytes());
    m.extend_from_slice(&UDIAG_SHOW_RQLEN.to_ne_bytes());
    m.extend_from_slice(&[0xff; 8]); // cookie: none
    m
}

/// The queue in a `unix_diag` answer about listener `ino`; None for an
/// error answer, another socket, or anything malformed (bounds-checked).
fn parse_unix_diag(msg: &[u8], ino: u32) -> Option<ListenQueue> {
    let u16_at = |at: usize| Some(u16::from_ne_bytes(msg.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_ne_bytes(msg.get(at..at + 4)?.try_into().ok()?));
    let len = (u32_at(0)? as usize).min(msg.len());
    if u16_at(4)? == NLMSG_ERROR || u16_at(4)? != SOCK_DIAG_BY_FAMILY {
        return None;
    }
    let body = NLMSG_HDRLEN;
    if *msg.get(body + 2)? != TCP_LISTEN || u32_at(body + 4)? != ino {
        return None;
    }
    let mut at = body + UNIX_DIAG_MSG_LEN;
    while at + 4 <= len {
        let (alen, kind) = (u16_at(at)? as usize, u16_at(at + 2)?);
        if alen < 4 {
            return None;
        }
        if kind == UNIX_DIAG_RQLEN && alen >= 12 {
            return Some(ListenQueue { queued: u32_at(at + 4)?, backlog: u32_at(at + 8)? });
        }
        at += (alen + 3) & !3;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_and_tcp_listeners_report_their_queues() {
        let dir = std::env::temp_dir().join(format!("pm-sockinfo-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let unix = std::os::unix::net::UnixListener::bind(&dir).unwrap();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let idle = (listen_queue(unix.as_raw_fd()), listen_queue(tcp.as_raw_fd()));
        let _a = std::os::unix::net::UnixStream::connect(&dir).unwrap();
        let _b = std::os::unix::net::UnixStream::connect(&dir).unwrap();
        let _c = std::net::TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
        let tcp_q = listen_queue(tcp.as_raw_fd()).unwrap();
        assert_eq!(tcp_q.queued, 1);
        assert!(tcp_q.backlog > 0 && idle.1.unwrap().queued == 0);
        match listen_queue(unix.as_raw_fd()) {
            Some(q) => {
                assert_eq!((idle.0.unwrap().queued, q.queued), (0, 2));
                assert!(q.backlog > 0);
            }
            None => eprintln!("unix_diag is not available here: UNIX listen queues not checked"),
        }
        let _ = std::fs::remove_file(&dir);
        // Not listeners: a connected stream, a regular file, a bad fd.
        assert_eq!(listen_queue(_c.as_raw_fd()), None);
        let f = std::fs::File::open("/proc/self/status").unwrap();
        assert_eq!(listen_queue(f.as_raw_fd()), None);
        assert_eq!(listen_queue(-1), None);
        assert!(since_last_receive_ms(_c.as_raw_fd()).is_some());
        assert_eq!(since_last_receive_ms(_a.as_raw_fd()), None);
    }

    #[test]
    fn malformed_diag_answers_are_none() {
        let ok = {
            let mut m = vec![0u8; 44];
            m[..4].copy_from_slice(&44u32.to_ne_bytes());
            m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
            m[16 + 2] = TCP_LISTEN;
            m[20..24].copy_from_slice(&7u32.to_ne_bytes());
            m[32..34].copy_from_slice(&12u16.to_ne_bytes());
            m[34..36].copy_from_slice(&UNIX_DIAG_RQLEN.to_ne_bytes());
            m[36..40].copy_from_slice(&3u32.to_ne_bytes());
            m[40..44].copy_from_slice(&128u32.to_ne_bytes());
            m
        };
        assert_eq!(parse_unix_diag(&ok, 7), Some(ListenQueue { queued: 3, backlog: 128 }));
        assert_eq!(parse_unix_diag(&ok, 8), None, "another socket");
        for cut in 0..ok.len() {
            assert_eq!(parse_unix_diag(&ok[..cut], 7), None, "cut at {cut}");
        }
        let mut zero_attr = ok.clone();
        zero_attr[32..34].copy_from_slice(&0u16.to_ne_bytes());
        assert_eq!(parse_unix_diag(&zero_attr, 7), None, "a zero-length attribute ends the walk");
        let mut error = ok.clone();
        error[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert_eq!(parse_unix_diag(&error, 7), None);
        let mut huge_len = ok;
        huge_len[..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(parse_unix_diag(&huge_len, 7).is_some(), "a length past the buffer is cut to it");
    }
}
