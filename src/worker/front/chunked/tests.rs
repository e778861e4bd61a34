use super::*;
use proptest::prelude::*;

/// Decodes `input` delivered in pieces cut at `cuts`, as the body reader
/// does: framing through `feed`, data taken as it comes. Returns the body
/// and how many input bytes the body used.
fn decode(input: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, usize), ChunkError> {
    let mut dec = Chunked::default();
    let mut body = Vec::new();
    let mut at = 0;
    let mut ends: Vec<usize> = cuts.iter().copied().filter(|c| *c <= input.len()).collect();
    ends.push(input.len());
    ends.sort_unstable();
    for end in ends {
        while at < end && !dec.is_done() {
            let left = dec.data_left();
            if left > 0 {
                let n = (end - at).min(usize::try_from(left).unwrap());
                body.extend_from_slice(&input[at..at + n]);
                dec.took_data(n as u64);
                at += n;
            } else {
                at += dec.feed(&input[at..end])?;
            }
        }
    }
    if dec.is_done() { Ok((body, at)) } else { Err(ChunkError::Syntax("incomplete")) }
}

fn whole(input: &[u8]) -> Result<Vec<u8>, ChunkError> {
    decode(input, &[]).map(|(b, _)| b)
}

#[test]
fn valid_encodings() {
    let cases: &[(&[u8], &[u8])] = &[
        (b"0\r\n\r\n", b""),
        (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
        (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
        (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
        (b"a;name=value;x=\"q s\"\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
        (b"5 ;ext\r\nhello\r\n0\r\n\r\n", b"hello"),
        (b"005\r\nhello\r\n000\r\n\r\n", b"hello"),
        (b"5\r\nhello\r\n0\r\nX-Trailer: yes\r\nY: z\r\n\r\n", b"hello"),
        (b"3\r\n\r\n\n\r\n0\r\n\r\n", b"\r\n\n"),
    ];
    for (input, want) in cases {
        assert_eq!(whole(input).as_deref(), Ok(*want), "{:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn stops_at_the_end_of_the_body() {
    let (body, used) = decode(b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n", &[]).unwrap();
    assert_eq!((body.as_slice(), used), (&b"abc"[..], 13));
}

#[test]
fn refused_encodings() {
    let cases: &[(&[u8], ChunkError)] = &[
        (b"5\nhello\r\n0\r\n\r\n", ChunkError::Syntax("invalid byte in chunk-size line")),
        (b"5;ext\nhello\r\n0\r\n\r\n", ChunkError::Syntax("chunk extension: control byte or bare LF")),
        (b"5\rhello\r\n0\r\n\r\n", ChunkError::Syntax("chunk-size line: CR without LF")),
        (b" 5\r\nhello\r\n0\r\n\r\n", ChunkError::Syntax("chunk-size line without a size")),
        (b"\r\nhello\r\n0\r\n\r\n", ChunkError::Syntax("chunk-size line without a size")),
        (b"-5\r\nhello\r\n0\r\n\r\n", ChunkError::Syntax("chunk-size line without a size")),
        (b"5 5\r\nhello\r\n0\r\n\r\n", ChunkError::Syntax("invalid byte in chunk-size line")),
        (b"0x5\r\nhello\r\n0\r\n\r\n", ChunkError::Syntax("invalid byte in chunk-size line")),
        (b"11111111111111111\r\n", ChunkError::Syntax("chunk size over 16 hex digits")),
        (b"5\r\nhello!\r\n0\r\n\r\n", ChunkError::Syntax("chunk data longer than its size")),
        (b"5\r\nhello\n0\r\n\r\n", ChunkError::Syntax("chunk data longer than its size")),
        (b"5\r\nhello\r0\r\n\r\n", ChunkError::Syntax("chunk data: CR without LF")),
        (b"0\r\nX: y\n\r\n", ChunkError::Syntax("trailer: control byte or bare LF")),
        (b"0\r\n\n", ChunkError::Syntax("trailer: control byte or bare LF")),
        (b"0\r\n\rX", ChunkError::Syntax("chunked body: CR without LF at the end")),
        (b"5;a\x00b\r\nhello\r\n0\r\n\r\n", ChunkError::Syntax("chunk extension: control byte or bare LF")),
    ];
    for (input, want) in cases {
        assert_eq!(whole(input), Err(*want), "{:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn lines_and_trailers_are_bounded() {
    let long_ext = format!("5;{}\r\nhello\r\n0\r\n\r\n", "x".repeat(CHUNK_LINE_MAX));
    assert_eq!(whole(long_ext.as_bytes()), Err(ChunkError::LineTooLong));
    let ok_ext = format!("5;{}\r\nhello\r\n0\r\n\r\n", "x".repeat(CHUNK_LINE_MAX - 10));
    assert_eq!(whole(ok_ext.as_bytes()).as_deref(), Ok(&b"hello"[..]));
    let trailers = format!("0\r\n{}\r\n", "X: y\r\n".repeat(TRAILERS_MAX / 6 + 1));
    assert_eq!(whole(trailers.as_bytes()), Err(ChunkError::TrailersTooLarge));
    // 16 hex digits fit a u64 without overflow.
    let mut dec = Chunked::default();
    assert_eq!(dec.feed(b"ffffffffffffffff\r\n"), Ok(18));
    assert_eq!(dec.data_left(), u64::MAX);
}

/// A body, cut into chunks with random extensions, and random trailers.
fn arb_encoding() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    (
        prop::collection::vec(any::<u8>(), 0..4000),
        prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        prop::collection::vec("(;[a-z]{1,5}(=[a-z0-9]{0,5})?)?", 12),
        prop::collection::vec("[A-Za-z-]{1,8}: [ -~]{0,10}", 0..3),
        any::<bool>(),
    )
        .prop_map(|(body, cuts, exts, trailers, upper)| {
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(body.len() + 1)).collect();
            cuts.push(body.len());
            cuts.sort_unstable();
            cuts.dedup();
            let mut out = Vec::new();
            let mut from = 0;
            for (i, cut) in cuts.into_iter().enumerate() {
                if cut == from {
                    continue;
                }
                let size = if upper { format!("{:X}", cut - from) } else { format!("{:x}", cut - from) };
                out.extend_from_slice(format!("{size}{}\r\n", exts[i % exts.len()]).as_bytes());
                out.extend_from_slice(&body[from..cut]);
                out.extend_from_slice(b"\r\n");
                from = cut;
            }
            out.extend_from_slice(b"0\r\n");
            for t in trailers {
                out.extend_from_slice(format!("{}\r\n", t.trim_end()).as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            (body, out)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any chunking of a body, delivered in any pieces, decodes back to it
    /// and ends exactly at the encoding's end.
    #[test]
    fn encodings_decode_back((body, encoded) in arb_encoding(), reads in prop::collection::vec(any::<prop::sample::Index>(), 0..10)) {
        let cuts: Vec<usize> = reads.iter().map(|r| r.index(encoded.len() + 1)).collect();
        let mut with_next = encoded.clone();
        with_next.extend_from_slice(b"NEXT");
        let (got, used) = decode(&with_next, &cuts).unwrap();
        prop_assert_eq!(got, body);
        prop_assert_eq!(used, encoded.len());
    }

    /// Arbitrary bytes: an answer (body, error or "need more"), never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..3000), cuts in prop::collection::vec(0usize..3000, 0..5)) {
        let _ = decode(&bytes, &cuts);
    }

    /// Mostly-valid framing with one byte changed.
    #[test]
    fn mutated_encodings_never_panic((_, encoded) in arb_encoding(), at in any::<prop::sample::Index>(), b in any::<u8>()) {
        let mut encoded = encoded;
        let i = at.index(encoded.len());
        encoded[i] = b;
        let _ = decode(&encoded, &[]);
    }
}
