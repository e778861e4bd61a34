use super::*;

fn ctx11() -> Ctx {
    Ctx { protocol: Protocol::Http, version: Version::Http11, head: false, keep_alive: true }
}

fn write(resp: Response, ctx: Ctx) -> (String, Written) {
    let mut out = Vec::new();
    let w = write_response(&mut out, resp, &ctx);
    (String::from_utf8_lossy(&out).into_owned(), w)
}

fn chunks(parts: &[&str]) -> impl Iterator<Item = io::Result<Vec<u8>>> + 'static {
    // Through a filter so that size_hint does not tell the count.
    parts.iter().map(|p| Ok(p.as_bytes().to_vec())).collect::<Vec<_>>().into_iter().filter(|_| true)
}

#[test]
fn full_body_gets_content_length() {
    let (out, w) = write(Response::new(200, "OK").header("X-A", "b").body("hello"), ctx11());
    assert_eq!(out, "HTTP/1.1 200 OK\r\nX-A: b\r\nContent-Length: 5\r\n\r\nhello");
    assert!(w.keep_alive);
}

#[test]
fn stream_framing() {
    let (out, w) = write(Response::new(200, "OK").stream(chunks(&["ab", "", "cde"]), None), ctx11());
    assert_eq!(out, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n");
    assert!(w.keep_alive);

    let (out, _) = write(Response::new(200, "OK").stream(chunks(&["ab", "cde"]), Some(5)), ctx11());
    assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabcde");

    let (out, _) =
        write(Response::new(200, "OK").header("Content-Length", "5").stream(chunks(&["ab", "cde"]), None), ctx11());
    assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabcde");

    // A lone chunk (its iterator says so): Content-Length.
    let lone = vec![Ok(b"only".to_vec())].into_iter();
    let (out, _) = write(Response::new(200, "OK").stream(lone, None), ctx11());
    assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nonly");

    // Nothing at all: Content-Length 0.
    let (out, _) = write(Response::new(200, "OK").stream(chunks(&["", ""]), None), ctx11());
    assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
}

#[test]
fn http10_and_uwsgi_are_close_delimited() {
    let ctx = Ctx { version: Version::Http10, ..ctx11() };
    let (out, w) = write(Response::new(200, "OK").stream(chunks(&["ab", "c"]), None), ctx);
    assert_eq!(out, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc");
    assert!(!w.keep_alive);

    let (out, w) = write(Response::new(200, "OK").body("x"), ctx);
    assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\nx");
    assert!(w.keep_alive);

    let ctx = Ctx { protocol: Protocol::Uwsgi, version: Version::Http10, head: false, keep_alive: false };
    let (out, _) = write(Response::new(201, "Created").stream(chunks(&["ab", "c"]), None), ctx);
    assert_eq!(out, "HTTP/1.0 201 Created\r\n\r\nabc");
    let ctx = Ctx { version: Version::Http11, ..ctx };
    let (out, _) = write(Response::new(200, "OK").stream(chunks(&["ab", "c"]), None), ctx);
    assert_eq!(out, "HTTP/1.1 200 OK\r\n\r\nabc", "no chunked framing towards nginx");
}

#[test]
fn head_and_bodiless_statuses_write_no_body() {
    let head = Ctx { head: true, ..ctx11() };
    let (out, w) = write(Response::new(200, "OK").body("hello"), head);
    assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
    assert!(w.keep_alive);
    let (out, _) = write(Response::new(200, "OK").stream(chunks(&["a", "b"]), None), head);
    assert_eq!(out, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    let lone = vec![Ok(b"four".to_vec())].into_iter();
    let (out, _) = write(Response::new(200, "OK").stream(lone, None), head);
    assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n");

    let (out, w) = write(Response::new(204, "No Content").body("ignored"), ctx11());
    assert_eq!(out, "HTTP/1.1 204 No Content\r\n\r\n");
    assert!(w.keep_alive);
    let (out, _) = write(Response::new(304, "Not Modified").stream(chunks(&["x"]), None), ctx11());
    assert_eq!(out, "HTTP/1.1 304 Not Modified\r\n\r\n");
}

#[test]
fn injection_is_refused_with_500() {
    let bad = [
        Response::new(200, "OK").header("X-A", "b\r\nSet-Cookie: evil=1"),
        Response::new(200, "OK").header("X-A", "b\nc"),
        Response::new(200, "OK").header("X-A", "b\0"),
        Response::new(200, "OK").header("X A", "b"),
        Response::new(200, "OK").header("X-A:", "b"),
        Response::new(200, "OK").header("", "b"),
        Response::new(200, "OK\r\nX-Evil: 1"),
        Response::new(101, "Switching Protocols"),
        Response::new(1000, "Too Big"),
        Response::new(200, "OK").header("Content-Length", "abc"),
        Response::new(200, "OK").header("Content-Length", "1").header("Content-Length", "2"),
        Response::new(200, "OK").header("Content-Length", "3").stream(chunks(&["abc"]), Some(4)),
    ];
    for resp in bad {
        let (out, w) = write(resp, ctx11());
        assert!(out.starts_with("HTTP/1.1 500 Internal Server Error\r\n"), "{out}");
        assert!(!out.contains("evil") && !out.contains("X-Evil"), "{out}");
        assert_eq!(w.status, 500);
    }
}

#[test]
fn framing_is_the_fronts() {
    let resp = Response::new(200, "OK")
        .header("Transfer-Encoding", "chunked")
        .header("Keep-Alive", "timeout=5")
        .header("Upgrade", "h2c")
        .header("X-Kept", "1")
        .body("abc");
    let (out, w) = write(resp, ctx11());
    assert_eq!(out, "HTTP/1.1 200 OK\r\nX-Kept: 1\r\nContent-Length: 3\r\n\r\nabc");
    assert!(w.keep_alive);

    let (out, w) = write(Response::new(200, "OK").header("Connection", "close").body("x"), ctx11());
    assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx");
    assert!(!w.keep_alive);

    let (out, w) = write(Response::new(200, "OK").body("x"), Ctx { keep_alive: false, ..ctx11() });
    assert!(out.contains("Connection: close\r\n"));
    assert!(!w.keep_alive);
}

#[test]
fn reason_phrase_as_given() {
    let (out, _) = write(Response::new(299, "Très Bien").body(""), ctx11());
    assert!(out.starts_with("HTTP/1.1 299 Très Bien\r\n"));
    let (out, _) = write(Response::new(200, "").body(""), ctx11());
    assert!(out.starts_with("HTTP/1.1 200 \r\n"));
}

#[test]
fn length_mismatches_close() {
    let (out, w) = write(Response::new(200, "OK").stream(chunks(&["abc", "def"]), Some(4)), ctx11());
    assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcd");
    assert!(!w.keep_alive, "an overlong body is cut and the connection closed");
    let (out, w) = write(Response::new(200, "OK").stream(chunks(&["ab"]), Some(4)), ctx11());
    assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab");
    assert!(!w.keep_alive, "a short body leaves the connection unusable");
}

#[test]
fn iterator_failures() {
    let failing = vec![Ok(Vec::new()), Err(io::Error::other("app raised"))].into_iter().filter(|_| true);
    let (out, w) = write(Response::new(200, "OK").stream(failing, None), ctx11());
    assert!(out.starts_with("HTTP/1.1 500 "), "before the first chunk: a clean 500\n{out}");
    assert!(w.keep_alive);

    let panicking = (0..3).map(|i| if i == 0 { panic!("app bug") } else { Ok::<_, io::Error>(vec![b'x']) });
    let (out, _) = write(Response::new(200, "OK").stream(panicking, None), ctx11());
    assert!(out.starts_with("HTTP/1.1 500 "), "{out}");

    let late = vec![Ok(b"ab".to_vec()), Err(io::Error::other("app raised"))].into_iter().filter(|_| true);
    let (out, w) = write(Response::new(200, "OK").stream(late, None), ctx11());
    assert_eq!(out, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n", "no terminating chunk");
    assert!(!w.keep_alive);
}

#[test]
fn large_chunks_are_written_directly() {
    let big = vec![7u8; COALESCE * 3];
    let (out, _) =
        write(Response::new(200, "OK").stream(vec![Ok(big.clone()), Ok(b"z".to_vec())].into_iter(), None), ctx11());
    let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert!(out.starts_with(&format!("{head}{:x}\r\n", big.len())));
    assert!(out.ends_with("\r\n1\r\nz\r\n0\r\n\r\n"));
    assert_eq!(out.len(), head.len() + 6 + big.len() + 2 + 6 + 5);
}

#[test]
fn file_bodies_are_framed_by_their_length() {
    let dir = std::env::temp_dir().join(format!("podmaster-resp-file-{}", std::process::id()));
    std::fs::write(&dir, b"0123456789").unwrap();
    let file = |offset| FileBody::rest_of(std::fs::File::open(&dir).unwrap(), offset).unwrap();
    let resp = |f, cl: Option<&str>| {
        let r = Response { body: ResponseBody::File(f), ..Response::new(200, "OK") };
        match cl {
            Some(n) => r.header("Content-Length", n),
            None => r,
        }
    };
    let (out, w) = write(resp(file(2), None), ctx11());
    assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n23456789");
    assert!(w.keep_alive);
    let (out, _) = write(resp(file(0), Some("4")), ctx11());
    assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n0123");
    let (out, _) = write(resp(file(0), None), Ctx { head: true, ..ctx11() });
    assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n");
    let (out, w) = write(resp(file(5), Some("6")), ctx11());
    assert!(out.starts_with("HTTP/1.1 500"), "{out}");
    assert_eq!(w.status, 500);
    assert!(FileBody::rest_of(std::fs::File::open("/dev/null").unwrap(), 0).is_err(), "not a regular file");
    std::fs::remove_file(&dir).unwrap();
}

#[test]
fn lengths_and_statuses_written_by_hand() {
    for n in [0u64, 7, 10, 12, 999, 1_000_000, 1_234_567_890_123, u64::MAX] {
        let mut buf = Vec::new();
        decimal(&mut buf, n);
        assert_eq!(buf, n.to_string().into_bytes());
    }
    for status in [200u16, 204, 404, 599, 999] {
        let resp = Response::new(status, "R").body("");
        let ctx = Ctx { protocol: Protocol::Http, version: Version::Http11, head: false, keep_alive: true };
        let mut out = Vec::new();
        write_response(&mut out, resp, &ctx);
        assert!(out.starts_with(format!("HTTP/1.1 {status} R\r\n").as_bytes()), "{}", String::from_utf8_lossy(&out));
    }
}
