use super::*;
use proptest::prelude::*;

/// A packet written byte by byte as nginx sends it: modifier1 0, the
/// block size 0x0023 little-endian, modifier2 0, then two vars.
const LITERAL: &[u8] = b"\x00\x23\x00\x00\x0e\x00REQUEST_METHOD\x03\x00GET\x09\x00PATH_INFO\x01\x00/";

type Owned = Vec<(Vec<u8>, Vec<u8>)>;
type Vars<'a> = &'a [(&'a [u8], &'a [u8])];

fn vars_of(packet: &[u8]) -> Result<(PacketHeader, Owned), PacketError> {
    let h = PacketHeader::parse([packet[0], packet[1], packet[2], packet[3]]);
    let size = check_header(h, 4096)?;
    let block = packet.get(HEADER_LEN..HEADER_LEN + size).ok_or(PacketError::Overrun)?;
    let mut spans = Vec::new();
    parse_vars(block, 100, &mut spans)?;
    Ok((h, Fields::new(block, &spans).iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()))
}

#[test]
fn literal_packet() {
    let (h, vars) = vars_of(LITERAL).unwrap();
    assert_eq!(h, PacketHeader { modifier1: 0, size: 0x23, modifier2: 0 });
    assert_eq!(vars, [(b"REQUEST_METHOD".to_vec(), b"GET".to_vec()), (b"PATH_INFO".to_vec(), b"/".to_vec())]);
    assert_eq!(encode_packet(&[(b"REQUEST_METHOD", b"GET"), (b"PATH_INFO", b"/")]), LITERAL);
}

/// What nginx's stock `uwsgi_params` sends for
/// `POST /app/x%20y?a=1 HTTP/1.1` with two headers.
fn nginx_vars() -> Vec<(&'static [u8], &'static [u8])> {
    vec![
        (b"QUERY_STRING", b"a=1"),
        (b"REQUEST_METHOD", b"POST"),
        (b"CONTENT_TYPE", b"text/plain"),
        (b"CONTENT_LENGTH", b"5"),
        (b"REQUEST_URI", b"/app/x%20y?a=1"),
        (b"PATH_INFO", b"/app/x y"),
        (b"DOCUMENT_ROOT", b"/usr/share/nginx/html"),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"REQUEST_SCHEME", b"http"),
        (b"REMOTE_ADDR", b"10.0.0.7"),
        (b"REMOTE_PORT", b"53412"),
        (b"SERVER_PORT", b"80"),
        (b"SERVER_NAME", b"example.org"),
        (b"HTTP_HOST", b"example.org"),
        (b"HTTP_X_FORWARDED_FOR", b"1.2.3.4"),
        (b"HTTP_CONTENT_TYPE", b"text/plain"),
    ]
}

fn with_request<T>(vars: &[(&[u8], &[u8])], f: impl FnOnce(Result<Request<'_>, VarsError>) -> T) -> T {
    let packet = encode_packet(vars);
    let block = &packet[HEADER_LEN..];
    let mut spans = Vec::new();
    parse_vars(block, 200, &mut spans).unwrap();
    let mut headers = Vec::new();
    let defaults = Defaults { server_name: b"fallback", server_port: b"1" };
    f(request(block, &spans, &mut headers, &defaults))
}

#[test]
fn request_from_nginx_vars() {
    with_request(&nginx_vars(), |req| {
        let req = req.unwrap();
        assert_eq!(req.protocol, Protocol::Uwsgi);
        assert_eq!(req.method, b"POST");
        assert_eq!(&*req.path_info, b"/app/x y");
        assert_eq!(req.query_string, b"a=1");
        assert_eq!(req.request_uri, b"/app/x%20y?a=1");
        assert_eq!(req.script_name, b"");
        assert_eq!(req.version, Version::Http11);
        assert_eq!((req.remote_addr, req.remote_port), (&b"10.0.0.7"[..], &b"53412"[..]));
        assert_eq!((req.server_name, req.server_port), (&b"example.org"[..], &b"80"[..]));
        assert_eq!(req.scheme, Scheme::Http);
        assert_eq!(req.content_length, Some(5));
        assert_eq!(req.header("content-type"), Some(&b"text/plain"[..]));
        assert_eq!(req.header("X-Forwarded-For"), Some(&b"1.2.3.4"[..]));
        assert_eq!(req.header("Document-Root"), None, "only HTTP_* and CONTENT_* are headers");
        let keys: Vec<Vec<u8>> = req.cgi_headers().map(|(k, _)| k.into_owned()).collect();
        assert_eq!(
            keys,
            [&b"CONTENT_TYPE"[..], b"CONTENT_LENGTH", b"HTTP_HOST", b"HTTP_X_FORWARDED_FOR", b"HTTP_CONTENT_TYPE"]
        );
        assert_eq!(req.vars.len(), 16, "every var is kept for environ");
    });
}

#[test]
fn derived_and_defaulted_vars() {
    let vars: &[(&[u8], &[u8])] = &[(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/a%2Fb?x=%20")];
    with_request(vars, |req| {
        let req = req.unwrap();
        assert_eq!(&*req.path_info, b"/a/b", "decoded from REQUEST_URI");
        assert_eq!(req.query_string, b"x=%20", "not decoded");
        assert_eq!(req.server_name, b"fallback");
        assert_eq!(req.version, Version::Http10);
        assert_eq!(req.content_length, None);
    });
    with_request(&[(b"REQUEST_METHOD", b"GET"), (b"CONTENT_LENGTH", b"")], |req| {
        assert_eq!(req.unwrap().content_length, None);
    });
    with_request(&[(b"PATH_INFO", b"/")], |req| assert_eq!(req.err(), Some(VarsError::NoMethod)));
    with_request(&[], |req| assert_eq!(req.err(), Some(VarsError::NoMethod)));
    with_request(&[(b"REQUEST_METHOD", b"GET"), (b"CONTENT_LENGTH", b"12x")], |req| {
        assert_eq!(req.err(), Some(VarsError::BadLength))
    });
}

#[test]
fn url_scheme() {
    let cases: &[(Vars<'_>, Scheme)] = &[
        (&[], Scheme::Http),
        (&[(b"HTTPS", b"on")], Scheme::Https),
        (&[(b"HTTPS", b"ON")], Scheme::Https),
        (&[(b"HTTPS", b"1")], Scheme::Https),
        (&[(b"HTTPS", b"off")], Scheme::Http),
        (&[(b"UWSGI_SCHEME", b"https")], Scheme::Https),
        (&[(b"UWSGI_SCHEME", b"http"), (b"HTTPS", b"on")], Scheme::Http),
    ];
    for (extra, want) in cases {
        let mut vars: Vec<(&[u8], &[u8])> = vec![(b"REQUEST_METHOD", b"GET")];
        vars.extend_from_slice(extra);
        with_request(&vars, |req| assert_eq!(req.unwrap().scheme, *want, "{extra:?}"));
    }
}

#[test]
fn refused_packets() {
    let mut other_plugin = LITERAL.to_vec();
    other_plugin[0] = 5;
    assert_eq!(vars_of(&other_plugin).err(), Some(PacketError::Modifier(5)));
    let h = PacketHeader::parse([0, 0x01, 0x10, 0]);
    assert_eq!(check_header(h, 4096), Err(PacketError::TooLarge { size: 0x1001, max: 4096 }));
    assert_eq!(check_header(h, 0x1001), Ok(0x1001));

    let cases: &[&[u8]] = &[
        b"\x05\x00KEY",            // key shorter than its length
        b"\x03\x00KEY",            // no value length
        b"\x03\x00KEY\x01",        // half a value length
        b"\x03\x00KEY\x05\x00abc", // value shorter than its length
        b"\x01\x00A\x01\x00B\x00", // a stray byte after the last var
        b"\xff\xff",               // a 65535-byte key in a 2-byte block
    ];
    for block in cases {
        let mut spans = Vec::new();
        assert_eq!(parse_vars(block, 100, &mut spans), Err(PacketError::Overrun), "{block:?}");
    }
    let many = encode_packet(&vec![(&b"K"[..], &b"V"[..]); 11]);
    let mut spans = Vec::new();
    assert_eq!(parse_vars(&many[HEADER_LEN..], 10, &mut spans), Err(PacketError::TooManyVars));
    assert_eq!(parse_vars(&many[HEADER_LEN..], 11, &mut spans), Ok(()));
    // Empty keys and values are vars too.
    assert_eq!(parse_vars(b"\x00\x00\x00\x00", 10, &mut spans), Ok(()));
    assert_eq!(spans.len(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any block: vars inside the block, or an error; never a panic.
    #[test]
    fn arbitrary_blocks(block in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut spans = Vec::new();
        if parse_vars(&block, 64, &mut spans).is_ok() {
            for f in &spans {
                prop_assert!(f.name.end <= block.len() && f.value.end <= block.len());
                prop_assert!(f.name.start <= f.name.end && f.value.start <= f.value.end);
            }
            with_spans(&block, &spans);
        }
    }

    /// Vars encoded as nginx does parse back to themselves.
    #[test]
    fn vars_round_trip(vars in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..20), prop::collection::vec(any::<u8>(), 0..40)), 0..30)) {
        let borrowed: Vec<(&[u8], &[u8])> = vars.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
        let packet = encode_packet(&borrowed);
        let (h, got) = vars_of(&packet).unwrap();
        prop_assert_eq!(usize::from(h.size), packet.len() - HEADER_LEN);
        prop_assert_eq!(got, vars);
    }
}

/// Building a request from whatever vars parsed never panics.
fn with_spans(block: &[u8], spans: &[FieldSpan]) {
    let mut headers = Vec::new();
    let defaults = Defaults { server_name: b"", server_port: b"" };
    if let Ok(req) = request(block, spans, &mut headers, &defaults) {
        let _ = req.header("host");
        let _ = req.cgi_headers().count();
    }
}
