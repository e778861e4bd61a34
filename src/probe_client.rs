//! `podmaster probe URL`: a minimal HTTP GET for container HEALTHCHECKs
//! (no curl in the image). Prints the answer's body; exit 0 on a 2xx
//! answer, 1 otherwise (a connection error is one line on stderr). Every
//! step has a timeout.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Total patience for connect, send and receive: under Docker's default
/// 30 s HEALTHCHECK timeout, above /livez's own wait.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Returns the exit code.
pub fn run(url: &str) -> u8 {
    match get(url) {
        Ok((status, body)) => {
            print!("{body}");
            u8::from(!(200..300).contains(&status))
        }

        Err(e) => {
            eprintln!("podmaster probe {url}: {e}");
            1
        }
    }
}

fn get(url: &str) -> Result<(u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs are supported")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hostport} has no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.take(64 * 1024).read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {:?}", text.chars().take(80).collect::<String>()))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}
