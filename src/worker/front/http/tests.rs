use super::*;
use proptest::prelude::*;

fn config() -> Config {
    Config::default()
}

fn parse_with(head: &[u8], config: &Config) -> Result<Option<Head>, HeadError> {
    let mut fields = Vec::new();
    parse_head(head, config, &mut fields)
}

fn parse(head: &[u8]) -> Result<Option<Head>, HeadError> {
    parse_with(head, &config())
}

fn complete(head: &[u8]) -> Head {
    match parse(head) {
        Ok(Some(h)) => h,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(head)),
    }
}

#[test]
fn simple_get() {
    let raw = b"GET /a/b?x=1&y HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\nrest";
    let mut fields = Vec::new();
    let h = parse_head(raw, &config(), &mut fields).unwrap().unwrap();
    assert_eq!(h.len, raw.len() - 4);
    assert_eq!(h.method.get(raw), b"GET");
    assert_eq!(h.target.get(raw), b"/a/b?x=1&y");
    assert_eq!(h.path.get(raw), b"/a/b");
    assert_eq!(h.query.get(raw), b"x=1&y");
    assert_eq!(h.version, Version::Http11);
    assert_eq!(h.framing, Framing::Empty);
    assert!(h.keep_alive);
    assert!(!h.expect_continue);
    let names: Vec<&[u8]> = fields.iter().map(|f| f.name.get(raw)).collect();
    assert_eq!(names, [&b"Host"[..], b"Accept"]);
    assert_eq!(fields[1].value.get(raw), b"*/*");
}

#[test]
fn framing_table() {
    use Framing::*;
    let ok: &[(&str, Framing)] = &[
        ("Content-Length: 5", Length(5)),
        ("Content-Length: 0", Empty),
        ("Content-Length:  7  ", Length(7)),
        ("Content-Length: 5, 5", Length(5)),
        ("Content-Length: 5\r\nContent-Length: 5", Length(5)),
        ("Content-Length: 0018446744073709551", Length(18446744073709551)),
        ("Transfer-Encoding: chunked", Chunked),
        ("Transfer-Encoding: Chunked ", Chunked),
        ("Transfer-Encoding: chunked,", Chunked),
    ];
    for (fields, want) in ok {
        let raw = format!("POST / HTTP/1.1\r\nHost: h\r\n{fields}\r\n\r\n");
        assert_eq!(complete(raw.as_bytes()).framing, *want, "{fields}");
    }
    let bad: &[&str] = &[
        "Content-Length: 5\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 5",
        "Content-Length: 5\r\nContent-Length: 6",
        "Content-Length: 5, 6",
        "Content-Length: 5,",
        "Content-Length: +5",
        "Content-Length: -1",
        "Content-Length: 0x10",
        "Content-Length: 5 5",
        "Content-Length: ",
        "Content-Length: 99999999999999999999",
        "Transfer-Encoding: gzip",
        "Transfer-Encoding: gzip, chunked",
        "Transfer-Encoding: chunked, gzip",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked, chunked",
        "Transfer-Encoding: ",
        "Transfer-Encoding: xchunked",
    ];
    for fields in bad {
        let raw = format!("POST / HTTP/1.1\r\nHost: h\r\n{fields}\r\n\r\n");
        assert!(matches!(parse(raw.as_bytes()), Err(HeadError::Bad(_))), "{fields}");
    }
}

#[test]
fn http10_rules() {
    let h = complete(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(h.version, Version::Http10);
    assert!(!h.keep_alive, "HTTP/1.0 closes by default");
    assert!(complete(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
    assert!(complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    assert!(!complete(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
    assert_eq!(
        parse(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        Err(HeadError::Bad("Transfer-Encoding on HTTP/1.0"))
    );
    assert!(!complete(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n").expect_continue);
}

#[test]
fn keep_alive_table() {
    for (fields, want) in [
        ("", true),
        ("Connection: close\r\n", false),
        ("Connection: CLOSE\r\n", false),
        ("Connection: keep-alive, close\r\n", false),
        ("Connection: upgrade\r\n", true),
        ("Connection: x\r\nConnection: close\r\n", false),
    ] {
        let raw = format!("GET / HTTP/1.1\r\nHost: h\r\n{fields}\r\n");
        assert_eq!(complete(raw.as_bytes()).keep_alive, want, "{fields}");
    }
}

#[test]
fn refused_heads() {
    let cases: &[(&[u8], HeadError)] = &[
        (b"GET / HTTP/1.1\r\n\r\n", HeadError::Bad("HTTP/1.1 request without Host")),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", HeadError::Bad("more than one Host field")),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
            HeadError::Bad("obsolete line folding in a header field"),
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n",
            HeadError::Bad("obsolete line folding in a header field"),
        ),
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", HeadError::Bad("invalid header field name")),
        (b"GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n", HeadError::Bad("invalid byte in a header field value")),
        (b"GET / HTTP/2.0\r\n\r\n", HeadError::Version),
        (b"GET / HTTP/1.2\r\n\r\n", HeadError::Version),
        (b"GET / HTTP/0.9\r\n\r\n", HeadError::Version),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", HeadError::Version),
        (b"GET / FOO/1.1\r\n\r\n", HeadError::Bad("malformed request head")),
        // A space in the target: malformed, not an unsupported version.
        (b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", HeadError::Bad("invalid request line")),
        (b"GET / HTTPS/1.1\r\n\r\n", HeadError::Bad("malformed request head")),
        (b"GET / HTTP/1.1x\r\n\r\n", HeadError::Bad("invalid line ending")),
        (b"GET / HTTP/11.1\r\n\r\n", HeadError::Bad("invalid request line")),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", HeadError::Bad("invalid request line")),
        (b"GET  / HTTP/1.1\r\n\r\n", HeadError::Bad("invalid request line")),
        (b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", HeadError::Bad("asterisk-form target on a method other than OPTIONS")),
        (
            b"CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n",
            HeadError::Bad("request target is neither a path nor an http(s) URL"),
        ),
        (b"GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n", HeadError::Bad("absolute-form target without a host")),
        (b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n", HeadError::Expectation),
    ];
    for (raw, want) in cases {
        assert_eq!(parse(raw), Err(*want), "{:?}", String::from_utf8_lossy(raw));
        assert!(want.status().0 >= 400);
    }
}

#[test]
fn limits() {
    let mut c = config();
    c.buffer_size = 64;
    let long = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(80));
    assert_eq!(parse_with(long.as_bytes(), &c), Err(HeadError::TooLarge));
    // Incomplete but already at the limit: refused without waiting.
    assert_eq!(parse_with(&[b'a'; 64], &c), Err(HeadError::TooLarge));
    assert_eq!(parse_with(b"GET / HTTP/1.1\r\nHost: h\r\n", &c), Ok(None));
    assert_eq!(HeadError::TooLarge.status().0, 431);

    let c = Config { max_headers: 100, buffer_size: 1 << 16, ..config() };
    let fields = |n: usize| (0..n).map(|i| format!("X-{i}: v\r\n")).collect::<String>();
    let at_limit = format!("GET / HTTP/1.1\r\nHost: h\r\n{}\r\n", fields(99));
    assert!(parse_with(at_limit.as_bytes(), &c).unwrap().is_some());
    let over = format!("GET / HTTP/1.1\r\nHost: h\r\n{}\r\n", fields(100));
    assert_eq!(parse_with(over.as_bytes(), &c), Err(HeadError::TooManyHeaders));
    assert_eq!(HeadError::TooManyHeaders.status().0, 431);

    let c = Config { limit_post: Some(10), ..config() };
    assert!(parse_with(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n", &c).is_ok());
    assert_eq!(
        parse_with(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n", &c),
        Err(HeadError::BodyTooLarge)
    );
    assert_eq!(HeadError::BodyTooLarge.status().0, 413);
    // A chunked body's size is unknown here: limited while it is read.
    assert!(parse_with(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", &c).is_ok());
}

#[test]
fn target_forms() {
    let raw = b"GET http://example.com:8080/p%20q?x=1 HTTP/1.1\r\nHost: evil\r\n\r\n";
    let mut fields = Vec::new();
    let h = parse_head(raw, &config(), &mut fields).unwrap().unwrap();
    assert_eq!(h.path.get(raw), b"/p%20q");
    assert_eq!(h.query.get(raw), b"x=1");
    assert_eq!(fields[0].value.get(raw), b"example.com:8080", "the authority replaces Host");

    let raw = b"GET HTTPS://example.com?q HTTP/1.1\r\n\r\n";
    let h = complete(raw);
    assert!(h.path.is_empty(), "empty path (served as /)");
    assert_eq!(h.query.get(raw), b"q");

    let raw = b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_eq!(complete(raw).path.get(raw), b"*");

    let raw = b"GET /a?b?c HTTP/1.1\r\nHost: h\r\n\r\n";
    let h = complete(raw);
    assert_eq!((h.path.get(raw), h.query.get(raw)), (&b"/a"[..], &b"b?c"[..]));
}

#[test]
fn tolerated_forms() {
    // RFC 9112 §2.2: an empty line before the request line is ignored, a
    // bare LF may end a line.
    assert!(complete(b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n").keep_alive);
    assert_eq!(complete(b"GET / HTTP/1.1\nHost: h\n\n").len, 24);
    assert!(complete(b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\n\r\n").expect_continue);
}

#[test]
fn partial_heads_ask_for_more() {
    let full = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n";
    for cut in 0..full.len() {
        assert_eq!(parse(&full[..cut]), Ok(None), "cut at {cut}");
    }
}

#[test]
fn head_scan_parses_at_line_ends() {
    let mut scan = HeadScan::default();
    assert!(scan.should_parse(b"GE"), "the first bytes: garbage is refused at once");
    assert!(!scan.should_parse(b"GET / HT"));
    assert!(scan.should_parse(b"GET / HTTP/1.1\r\n"), "the request line is complete");
    assert!(!scan.should_parse(b"GET / HTTP/1.1\r\nHost: h\r\n"));
    assert!(!scan.should_parse(b"GET / HTTP/1.1\r\nHost: h\r\n\r"));
    assert!(scan.should_parse(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"), "the empty line ends the head");
    let mut scan = HeadScan::default();
    assert!(scan.should_parse(b"GET / HTTP/1.1\nHost: h\n\n"));
}

/// Well-formed heads with a random set of fields.
fn arb_head() -> impl Strategy<Value = Vec<u8>> {
    let field = ("[A-Za-z][A-Za-z0-9-]{0,12}", "[ -~]{0,30}");
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "HEAD"]),
        "/[a-z0-9/%?=&]{0,30}",
        prop::collection::vec(field, 0..8),
    )
        .prop_map(|(method, target, fields)| {
            let mut h = format!("{method} {target} HTTP/1.1\r\nHost: h\r\n");
            for (n, v) in fields {
                if !["host", "content-length", "transfer-encoding", "expect"].contains(&n.to_ascii_lowercase().as_str())
                {
                    h.push_str(&format!("{n}: {}\r\n", v.trim()));
                }
            }
            h.push_str("\r\n");
            h.into_bytes()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever arrives, the parser answers (and within the window).
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..6000)) {
        let c = config();
        if let Ok(Some(h)) = parse_with(&bytes, &c) {
            prop_assert!(h.len <= bytes.len().min(c.buffer_size));
        }
    }

    /// Heads that look almost right, mutated in one byte.
    #[test]
    fn mutated_heads_never_panic(head in arb_head(), at in any::<prop::sample::Index>(), b in any::<u8>()) {
        let mut head = head;
        let i = at.index(head.len());
        head[i] = b;
        let _ = parse(&head);
    }

    /// Fed in pieces as reads deliver them, a head parses the same as
    /// whole, and the scan never skips the parse that completes it.
    #[test]
    fn split_heads_parse_alike(head in arb_head(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6)) {
        let whole = parse(&head).unwrap().unwrap();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(head.len())).collect();
        cuts.push(head.len());
        cuts.sort_unstable();
        let mut scan = HeadScan::default();
        let mut got = None;
        for cut in cuts {
            let buf = &head[..cut];
            if scan.should_parse(buf) {
                if let Some(h) = parse(buf).unwrap() {
                    got = Some(h);
                    break;
                }
            }
        }
        prop_assert_eq!(got, Some(whole));
    }
}
