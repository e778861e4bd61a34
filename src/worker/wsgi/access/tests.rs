//! Lines as each style writes them, from real parsed request heads, and
//! hostile request bytes that must not break a line.

use std::borrow::Cow;
use std::time::{Duration, Instant, SystemTime};

use super::format::Format;
use super::*;
use crate::worker::front::http::parse_head;
use crate::worker::front::request::{FieldSpan, Fields, Scheme, Version};
use crate::worker::front::{Config, Protocol};

/// Parses `head` as the front does and hands the request to `f`.
fn with_request<T>(head: &[u8], f: impl FnOnce(&Request<'_>) -> T) -> T {
    let mut fields: Vec<FieldSpan> = Vec::new();
    let h = parse_head(head, &Config::default(), &mut fields).unwrap().unwrap();
    let req = Request {
        protocol: Protocol::Http,
        method: h.method.get(head),
        request_uri: h.target.get(head),
        script_name: b"",
        path_info: Cow::Borrowed(h.path.get(head)),
        query_string: h.query.get(head),
        server_protocol: h.version.as_bytes(),
        version: Version::Http11,
        headers: Fields::new(head, &fields),
        vars: Fields::empty(),
        remote_addr: b"10.1.2.3",
        remote_port: b"5555",
        server_name: b"127.0.0.1",
        server_port: b"8000",
        scheme: Scheme::Http,
        content_length: Some(7),
        conn_fd: None,
        conn_tcp: false,
    };
    f(&req)
}

fn outcome(status: u16, ms: u64) -> Outcome {
    Outcome {
        status,
        head_bytes: 64,
        body_bytes: 12,
        headers: 2,
        arrived: Instant::now(),
        duration: Duration::from_millis(ms),
        keep_alive: true,
    }
}

/// 2024-05-06 12:53:20 UTC.
const T: u64 = 1_715_000_000;

fn render(format: &str, head: &[u8], o: &Outcome) -> String {
    let f = Format::parse(format);
    with_request(head, |req| {
        let line = Line {
            req,
            outcome: o,
            started: SystemTime::UNIX_EPOCH + Duration::from_secs(T),
            request_id: "rid-1",
            pid: 42,
            worker: 3,
            core: 1,
        };
        let mut out = Vec::new();
        f.render(&line, &mut out);
        String::from_utf8(out).unwrap()
    })
}

const HEAD: &[u8] = b"POST /p/a%20th?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8\r\n\
    Referer: http://r/\r\nX-Forwarded-For: 192.0.2.9\r\nContent-Length: 7\r\n\r\n";

#[test]
fn the_common_uwsgi_format_renders_every_variable() {
    let f = r#"%(addr) - %(user) [%(ltime)] "%(method) %(uri) %(proto)" %(status) %(size) "%(referer)" "%(uagent)""#;
    assert_eq!(
        render(f, HEAD, &outcome(201, 5)),
        r#"10.1.2.3 - - [06/May/2024:12:53:20 +0000] "POST /p/a%20th?q=1 HTTP/1.1" 201 76 "http://r/" "curl/8""#
    );
    let f = "%(msecs)|%(micros)|%(secs)|%(pid)|%(wid)|%(core)|%(host)|%(rsize)|%(hsize)|%(cl)|%(headers)|%(time)|\
             %(tmsecs)|%(ctime)|%(vars)|%(switches)|%(request_id)|%(var.HTTP_X_FORWARDED_FOR)|%(var.REMOTE_PORT)|\
             %(var.PATH_INFO)";
    assert_eq!(
        render(f, HEAD, &outcome(200, 1234)),
        "1234|1234000|1.234000|42|3|1|example.com|12|64|7|2|1715000000|1715000000000|Mon May  6 12:53:20 2024|5|0|\
         rid-1|192.0.2.9|5555|/p/a%20th"
    );
}

#[test]
fn unknown_empty_and_malformed_variables_as_uwsgi() {
    // An unknown name is a logvar nobody set: `-`, as an empty value is.
    assert_eq!(render("[%(nope)] [%(user)] [%(var.NOPE)] [%(werr)]", HEAD, &outcome(200, 0)), "[-] [-] [-] [-]");
    // Not variables: text as written.
    for text in ["100%", "%(", "%()", "a %(b", "%%(status", "(status)"] {
        let want = if text == "%%(status" { "%%(status".to_string() } else { text.to_string() };
        assert_eq!(render(text, HEAD, &outcome(200, 0)), want, "{text:?}");
    }
    assert_eq!(render("%(status)%(status)", HEAD, &outcome(404, 0)), "404404");
    assert_eq!(render("%(%(status)", HEAD, &outcome(404, 0)), "-", "the name runs to the first )");
    assert_eq!(render("", HEAD, &outcome(404, 0)), "");
    assert!(Format::parse("%(request_id)").uses_request_id());
    assert!(!Format::parse("%(status)").uses_request_id());
}

/// A request with bytes no HTTP parser lets through (a uwsgi packet
/// carries any byte): the URI and a User-Agent as given.
fn with_raw<T>(uri: &[u8], ua: &[u8], f: impl FnOnce(&Request<'_>) -> T) -> T {
    let buf = [b"user-agent".as_slice(), ua].concat();
    let spans = [FieldSpan {
        name: crate::worker::front::request::Span::new(0, 10),
        value: crate::worker::front::request::Span::new(10, buf.len()),
    }];
    with_request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", |base| {
        let req = Request { request_uri: uri, headers: Fields::new(&buf, &spans), ..base.clone() };
        f(&req)
    })
}

#[test]
fn request_bytes_cannot_split_or_forge_a_line() {
    let (uri, ua) = (&b"/a\"b\\c\xff\n"[..], &b"x\" \"y\x01\r\n{"[..]);
    let o = outcome(200, 0);
    let line = |style: &Style| {
        with_raw(uri, ua, |req| {
            let mut id = [0u8; 24];
            let ids = RequestIds::new();
            let line = Line {
                req,
                outcome: &o,
                started: SystemTime::UNIX_EPOCH,
                request_id: ids.of(req, &mut id),
                pid: 1,
                worker: 1,
                core: 0,
            };
            let mut out = Vec::new();
            match style {
                Style::Json => json_line(&line, &mut out, None),
                Style::Uwsgi(f) => f.render(&line, &mut out),
                Style::Default => default_line(&line, 1, &mut out),
            }
            String::from_utf8(out).unwrap()
        })
    };
    let text = line(&Style::Uwsgi(Format::parse(r#""%(uri)" "%(uagent)""#)));
    assert_eq!(text, r#""/a\x22b\x5Cc\xFF\x0A" "x\x22 \x22y\x01\x0D\x0A{""#);
    let default = line(&Style::Default);
    assert!(!default.contains('\n') && default.contains(r"GET /a\x22b\x5Cc\xFF\x0A =>"), "{default}");
    let v: serde_json::Value = serde_json::from_str(&line(&Style::Json)).unwrap();
    assert_eq!(v["path"], "/a\"b\\c\u{ff}\n");
    assert_eq!(v["user_agent"], "x\" \"y\u{1}\r\n{");
    assert!(!line(&Style::Json).contains('\n'));
}

/// The line `style` writes for `head` (into a buffer: what `log` writes
/// to stderr).
fn lines(head: &[u8], style: Style) -> String {
    let log = AccessLog {
        style,
        settings: Settings::default(),
        worker: 2,
        pid: 77,
        ids: RequestIds::new(),
        served: AtomicU64::new(0),
        sink: Some(Box::leak(Box::new(sink::Sink::unbatched(libc::STDERR_FILENO)))),
    };
    let o = outcome(503, 12);
    with_request(head, |req| {
        let mut id = [0u8; 24];
        let line = Line {
            req,
            outcome: &o,
            started: SystemTime::UNIX_EPOCH + Duration::from_secs(T),
            request_id: log.ids.of(req, &mut id),
            pid: 77,
            worker: 2,
            core: 0,
        };
        let mut out = Vec::new();
        match &log.style {
            Style::Json => json_line(&line, &mut out, None),
            Style::Uwsgi(f) => f.render(&line, &mut out),
            Style::Default => default_line(&line, 9, &mut out),
        }
        String::from_utf8(out).unwrap()
    })
}

#[test]
fn json_and_default_lines() {
    let head = b"GET /x?y=1 HTTP/1.1\r\nHost: h\r\nX-Request-Id: abc-123\r\n\r\n";
    let v: serde_json::Value = serde_json::from_str(&lines(head, Style::Json)).unwrap();
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["message"], "request");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/x?y=1");
    assert_eq!(v["status"], 503);
    assert_eq!(v["bytes"], 12);
    assert_eq!(v["duration_ms"], 12.0);
    assert_eq!((v["worker"].clone(), v["pid"].clone()), (2.into(), 77.into()));
    assert_eq!(v["remote_addr"], "10.1.2.3");
    assert_eq!(v["request_id"], "abc-123");
    assert!(v.get("user_agent").is_none());
    assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        lines(head, Style::Default),
        "[pid: 77|app: 0|req: 9/9] 10.1.2.3 () {2 vars in 32 bytes} [Mon May  6 12:53:20 2024] GET /x?y=1 => \
         generated 12 bytes in 12 msecs (HTTP/1.1 503) 2 headers in 64 bytes (1 switches on core 0)"
    );
}

#[test]
fn request_ids_from_the_client_only_when_sane() {
    let ids = RequestIds::new();
    let id_of = |value: &[u8]| {
        let mut head = b"GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: ".to_vec();
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n\r\n");
        with_request(&head, |req| {
            let mut buf = [0u8; 24];
            ids.of(req, &mut buf).to_owned()
        })
    };
    assert_eq!(id_of(b"4bf92f3577b34da6"), "4bf92f3577b34da6");
    let long = vec![b'a'; MAX_REQUEST_ID];
    assert_eq!(id_of(&long).len(), MAX_REQUEST_ID);
    let mut made = Vec::new();
    for bad in [&[b'a'; MAX_REQUEST_ID + 1][..], b"a b", b"a\"b", b"a\\b", b"\xc3\xa9", b"a\x7f", b""] {
        let id = with_raw(b"/", b"", |base| {
            let buf = [b"x-request-id".as_slice(), bad].concat();
            let spans = [FieldSpan {
                name: crate::worker::front::request::Span::new(0, 12),
                value: crate::worker::front::request::Span::new(12, buf.len()),
            }];
            let req = Request { headers: Fields::new(&buf, &spans), ..base.clone() };
            let mut out = [0u8; 24];
            ids.of(&req, &mut out).to_owned()
        });
        assert!(id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{bad:?} -> {id}");
        made.push(id);
    }
    made.dedup();
    assert_eq!(made.len(), 7, "generated ids differ: {made:?}");
}

#[test]
fn which_requests_are_logged() {
    let log =
        |disabled, log_4xx, log_5xx| AccessLog::new(&Settings { disabled, log_4xx, log_5xx, format: None }, false, 1);
    let all = log(false, false, false);
    assert!([0, 200, 302, 404, 500].iter().all(|s| all.wants(*s)));
    let none = log(true, false, false);
    assert!(![0, 200, 404, 500].iter().any(|s| none.wants(*s)));
    let errors = log(true, true, true);
    assert_eq!(
        [200, 399, 400, 499, 500, 599, 600].map(|s| errors.wants(s)),
        [false, false, true, true, true, true, false]
    );
    assert_eq!([404, 503].map(|s| log(true, false, true).wants(s)), [false, true]);
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 500, ..Default::default() })]

    /// Any format without a newline, any request bytes: one line, no panic.
    #[test]
    fn any_format_and_request_make_one_line(
        format in "[^\n]{0,60}",
        uri in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
        ua in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
    ) {
        let f = Format::parse(&format);
        let o = outcome(200, 1);
        let out = with_raw(&uri, &ua, |req| {
            let line = Line { req, outcome: &o, started: SystemTime::now(), request_id: "r", pid: 1, worker: 1, core: 0 };
            let mut out = Vec::new();
            f.render(&line, &mut out);
            json_line(&line, &mut out, None);
            default_line(&line, 1, &mut out);
            out
        });
        proptest::prop_assert!(!out.contains(&b'\n'));
    }
}

#[test]
fn cgi_names_match_their_header_fields() {
    let head = b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: a\r\nContent-Type: t\r\nX_Under: u\r\n\r\n";
    with_request(head, |req| {
        let get = |n: &[u8]| format::cgi_var(req, n).map(|v| v.into_owned());
        assert_eq!(get(b"HTTP_X_FORWARDED_FOR"), Some(b"a".to_vec()));
        assert_eq!(get(b"CONTENT_TYPE"), Some(b"t".to_vec()));
        assert_eq!(get(b"HTTP_CONTENT_TYPE"), None, "CGI names it without HTTP_");
        assert_eq!(get(b"HTTP_HOST"), Some(b"h".to_vec()));
        assert_eq!(get(b"X_FORWARDED_FOR"), None);
        assert_eq!(get(b"HTTP_X_FORWARDED_FO"), None);
        assert_eq!(get(b"REMOTE_USER"), None);
        assert_eq!(get(b"HTTP_X_UNDER"), None, "X_Under has no CGI name");
        assert_eq!(get(b"REQUEST_METHOD"), Some(b"GET".to_vec()));
    });
}

/// What `log` writes for a request with `uri` and `ua` as given, in
/// `style`, with log variables set: the bytes that reached the pipe.
fn logged(style: Style, uri: &[u8], ua: &[u8], vars: &[(String, String)]) -> Vec<u8> {
    use std::io::Read;
    use std::os::fd::IntoRawFd;
    let (r, w) = nix::unistd::pipe().unwrap();
    nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20)).unwrap();
    let w = w.into_raw_fd();
    let log = AccessLog {
        style,
        settings: Settings::default(),
        worker: 1,
        pid: 1,
        ids: RequestIds::new(),
        served: AtomicU64::new(0),
        sink: Some(Box::leak(Box::new(sink::Sink::unbatched(w)))),
    };
    let o = outcome(200, 1);
    with_raw(uri, ua, |req| {
        log.begin(req);
        for (k, v) in vars {
            logvars::set(k, v);
        }
        log.log(req, &o);
    });
    // SAFETY: `w` came from into_raw_fd above and is closed once, here.
    drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(w) });
    let mut out = Vec::new();
    std::fs::File::from(r).read_to_end(&mut out).unwrap();
    out
}

/// Lines stay within one atomic pipe write whatever the request and the
/// app's log variables hold: text lines are cut, JSON lines keep every
/// field (request ones cut), stay valid and say `truncated`; the log
/// variables do not outlive the line.
#[test]
fn huge_fields_make_lines_that_fit_one_atomic_write() {
    let uri: Vec<u8> = (0..20_000u32).map(|i| if i % 3 == 0 { 1 } else { b'/' }).collect();
    let ua = "é\"".repeat(5000);
    let big: Vec<(String, String)> =
        (0..logvars::MAX_VARS).map(|i| (format!("v{i}"), "\u{1}".repeat(logvars::MAX_LEN))).collect();
    for style in [Style::Json, Style::Default, Style::Uwsgi(Format::parse("%(uri) %(uagent) %(v1) é"))] {
        let name = format!("{style:?}");
        let json = matches!(style, Style::Json);
        let out = logged(style, &uri, ua.as_bytes(), &big);
        assert!(out.len() <= MAX_LINE && out.ends_with(b"\n"), "{name}: {} bytes", out.len());
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1, "{name}");
        let text = String::from_utf8(out).unwrap_or_else(|e| panic!("{name}: {e}"));
        if json {
            let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
            assert_eq!(v["truncated"], true);
            assert_eq!(v["status"], 200);
            assert!(v.get("logvars").is_none());
            assert!(v["path"].as_str().unwrap().starts_with("\u{1}//\u{1}"), "{v}");
            assert!(v["user_agent"].as_str().unwrap().starts_with("é\"é"), "{v}");
        }
    }
    assert_eq!(logvars::get("v1", |_| ()), None, "cleared with the line");
    // Variables alone can overflow a line: cut the same way.
    let out = logged(Style::Json, b"/small", b"ua", &big);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!((v["truncated"].as_bool(), v["path"].as_str()), (Some(true), Some("/small")));
    // A line that fits keeps them, uncut.
    let small = [("user".to_owned(), "42".to_owned())];
    let out = logged(Style::Json, b"/small", b"ua", &small);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!((v.get("truncated"), &v["logvars"]), (None, &serde_json::json!({"user": "42"})));
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 300, ..Default::default() })]

    /// Any request bytes up to 3 times a pipe's atomic write, any cap:
    /// the capped JSON line is valid JSON, within the cap's bound.
    #[test]
    fn capped_json_lines_are_valid_and_bounded(
        uri in proptest::collection::vec(proptest::num::u8::ANY, 0..12_000),
        ua in proptest::collection::vec(proptest::num::u8::ANY, 0..12_000),
        cap in 0usize..2000,
    ) {
        let o = outcome(200, 1);
        let out = with_raw(&uri, &ua, |req| {
            let line = Line { req, outcome: &o, started: SystemTime::now(), request_id: "r", pid: 1, worker: 1, core: 0 };
            let mut out = Vec::new();
            json_line(&line, &mut out, Some(cap));
            out
        });
        let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}")))?;
        proptest::prop_assert_eq!(&v["truncated"], &serde_json::Value::Bool(true));
        // 5 request fields of at most `cap` escaped bytes plus the fixed ones.
        proptest::prop_assert!(out.len() <= 5 * (cap + 2) + 400, "{} bytes for cap {}", out.len(), cap);
    }
}
