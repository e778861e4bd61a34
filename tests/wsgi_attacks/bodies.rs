//! Request and response bodies: `limit-post` end to end, over HTTP
//! (declared and chunked) and the uwsgi protocol; and 100 MB each way —
//! uploaded with a length and chunked, yielded by the app, and sent
//! through `wsgi.file_wrapper` — while the worker's RSS is sampled.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::common::*;
use super::*;

const PERIOD: usize = 65521;

/// The pattern's period twice over: any run of up to PERIOD bytes from any
/// offset is one slice of it.
fn period() -> Vec<u8> {
    pattern(0, 2 * PERIOD)
}

/// Writes `total` pattern bytes to `w`, chunked (pieces of varying size,
/// some with an extension) or plain; returns their CRC-32.
fn send_pattern(w: &mut impl Write, total: u64, chunked: bool) -> std::io::Result<u32> {
    let p = period();
    let (mut sent, mut crc, mut k) = (0u64, 0u32, 0u64);
    while sent < total {
        // Sizes from 1 byte to 64 KiB, never aligned with the server's reads.
        k += 1;
        let size = (1 + (k * 40_503) % PERIOD as u64).min(total - sent) as usize;
        let at = (sent % PERIOD as u64) as usize;
        let piece = &p[at..at + size];
        if chunked {
            let ext = if k % 7 == 0 { ";k=v" } else { "" };
            write!(w, "{size:x}{ext}\r\n")?;
            w.write_all(piece)?;
            w.write_all(b"\r\n")?;
        } else {
            w.write_all(piece)?;
        }
        crc = crc32(crc, piece);
        sent += size as u64;
    }
    if chunked {
        w.write_all(b"0\r\n\r\n")?;
    }
    Ok(crc)
}

/// POSTs `total` pattern bytes to `path` on `addr` (a writer thread sends
/// while this one reads) and returns the answers and the body's CRC-32.
fn upload(addr: &str, path: &str, total: u64, chunked: bool) -> (Vec<Answer>, u32) {
    let mut s = TcpStream::connect(addr).unwrap();
    let framing = if chunked { "Transfer-Encoding: chunked".to_owned() } else { format!("Content-Length: {total}") };
    write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{framing}\r\n\r\n").unwrap();
    let mut w = s.try_clone().unwrap();
    // The server may answer (413) and close before the body is sent: a
    // failed write is fine, the answer is what counts.
    let writer = std::thread::spawn(move || send_pattern(&mut w, total, chunked).unwrap_or(0));
    let out = read_until_close(&mut s, Instant::now(), Duration::from_secs(120));
    let crc = writer.join().unwrap();
    assert!(!out.hung, "POST {path}: no answer within 120 s");
    (out.answers().0, crc)
}

fn uwsgi_upload(addr: &str, length: u64) -> Vec<u16> {
    let mut s = TcpStream::connect(addr).unwrap();
    let len = length.to_string();
    let vars: [(&[u8], &[u8]); 3] =
        [(b"REQUEST_METHOD", b"POST"), (b"PATH_INFO", b"/hash"), (b"CONTENT_LENGTH", len.as_bytes())];
    s.write_all(&podmaster::worker::front::uwsgi::encode_packet(&vars)).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || send_pattern(&mut w, length, false).is_ok());
    let out = read_until_close(&mut s, Instant::now(), DEADLINE);
    let _ = writer.join();
    out.statuses()
}

/// "count crc" as the /hash view answers it.
fn hashed(count: u64, crc: u32) -> Vec<u8> {
    format!("{count} {crc}\n").into_bytes()
}

/// Largest `input saw N bytes` the app logged.
fn most_seen(logs: &str) -> u64 {
    logs.lines().filter_map(|l| l.split("input saw ").nth(1)?.split(' ').next()?.parse().ok()).max().unwrap_or(0)
}

#[test]
fn limit_post_refuses_larger_bodies_and_the_app_never_sees_more() {
    const LIMIT: u64 = 1_000_000;
    let w = Wsgi::start("bulk", 1, &format!("limit-post = {LIMIT}"), |c| c);
    let worker = w.worker();
    for chunked in [false, true] {
        let (answers, crc) = upload(&w.http, "/hash", LIMIT, chunked);
        assert_eq!(answers.len(), 1, "chunked={chunked}: {answers:?}");
        assert_eq!((answers[0].head.status, answers[0].body.clone()), (200, hashed(LIMIT, crc)), "chunked={chunked}");
        for over in [LIMIT + 1, 3 * LIMIT] {
            let (answers, _) = upload(&w.http, "/hash", over, chunked);
            let codes: Vec<u16> = answers.iter().map(|a| a.head.status).collect();
            assert_eq!(codes, [413], "{over} bytes, chunked={chunked}");
            assert!(answers[0].head.closes());
        }
    }
    assert_eq!(uwsgi_upload(&w.uwsgi, LIMIT), [200]);
    assert_eq!(uwsgi_upload(&w.uwsgi, LIMIT + 1), [413]);
    w.assert_serves(worker, "bodies over limit-post");
    let logs = w.inst.logs();
    assert!(most_seen(&logs) <= LIMIT, "the app read {} bytes:\n{logs}", most_seen(&logs));
    assert_no_panic(&w);
}

/// Reads the answer to `GET path` and checks its body is `total` bytes of
/// the pattern.
fn download(addr: &str, path: &str, total: u64) {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut w = s.try_clone().unwrap();
    write!(w, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut r = BufReader::with_capacity(64 * 1024, s);
    let head = read_head(&mut r).unwrap().expect("an answer");
    assert_eq!(head.status, 200, "GET {path}");
    let (mut n, mut wrong) = (0u64, None);
    read_body(&mut r, &head, false, &mut |b| {
        for (i, x) in b.iter().enumerate() {
            if wrong.is_none() && *x != pattern_byte(n + i as u64) {
                wrong = Some(n + i as u64);
            }
        }
        n += b.len() as u64;
    })
    .unwrap_or_else(|e| panic!("GET {path}: {e} after {n} bytes"));
    assert_eq!((n, wrong), (total, None), "GET {path}: (bytes, first wrong byte)");
}

#[test]
fn hundred_megabytes_each_way_in_bounded_memory() {
    const TOTAL: u64 = 100 * 1024 * 1024;
    const GROWTH_KB: u64 = 32 * 1024;
    let dir = TempDir::new("wsgi-100mb");
    let (small, file) = (dir.path().join("small.bin"), dir.path().join("big.bin"));
    for (path, size) in [(&small, 1 << 20), (&file, TOTAL)] {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        send_pattern(&mut f, size, false).unwrap();
    }
    let w = Wsgi::start("bulk", 1, "threads = 2", |c| c);
    let worker = w.worker();
    // Warm up every path once, then take the baseline.
    let (_, _) = upload(&w.http, "/hash", 1 << 20, true);
    download(&w.http, "/yield?1048576", 1 << 20);
    download(&w.http, &format!("/file?{}", small.display()), 1 << 20);
    let base = vm_rss_kb(worker).unwrap();
    let sampler = RssSampler::start(worker);
    let t = Instant::now();
    for chunked in [false, true] {
        let (answers, crc) = upload(&w.http, "/hash", TOTAL, chunked);
        assert_eq!(answers.len(), 1, "chunked={chunked}");
        assert_eq!((answers[0].head.status, answers[0].body.clone()), (200, hashed(TOTAL, crc)), "chunked={chunked}");
    }
    let up = t.elapsed();
    let t = Instant::now();
    download(&w.http, &format!("/yield?{TOTAL}"), TOTAL);
    let yielded = t.elapsed();
    let t = Instant::now();
    download(&w.http, &format!("/file?{}", file.display()), TOTAL);
    let wrapped = t.elapsed();
    let peak = sampler.finish();
    eprintln!(
        "worker RSS {base} kB at start, {peak} kB at most; 2 x 100 MB up in {up:?}, 100 MB yielded in {yielded:?}, \
         100 MB through wsgi.file_wrapper in {wrapped:?}"
    );
    assert!(peak <= base + GROWTH_KB, "the worker's RSS grew from {base} kB to {peak} kB");
    w.assert_serves(worker, "100 MB bodies");
    assert_no_panic(&w);
}
