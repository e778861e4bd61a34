//! One `Range: bytes=...` request on a static file (RFC 9110 §14): a
//! single range is served as 206; several ranges, another unit, a bad
//! header or a stale `If-Range` get the whole file (a server may always
//! ignore Range); a range starting past the end is 416.

use super::super::front::Request;

/// What to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    Whole,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

/// The range to send of a file of `size` bytes with this validator.
pub fn pick(req: &Request<'_>, etag: &str, mtime: i64, size: u64) -> Pick {
    let Some(value) = req.header("range") else { return Pick::Whole };
    if let Some(cond) = req.header("if-range") {
        let fresh =
            if cond.starts_with(b"\"") { cond == etag.as_bytes() } else { super::date::parse(cond) == Some(mtime) };
        if !fresh {
            return Pick::Whole;
        }
    }
    parse(value, size)
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` against `size`.
pub fn parse(value: &[u8], size: u64) -> Pick {
    let Some(spec) = value.trim_ascii().strip_prefix(b"bytes=") else { return Pick::Whole };
    if spec.contains(&b',') {
        return Pick::Whole;
    }
    let Some(dash) = spec.iter().position(|c| *c == b'-') else { return Pick::Whole };
    let (a, b) = (&spec[..dash], &spec[dash + 1..]);
    let num = |t: &[u8]| {
        let t = t.trim_ascii();
        (!t.is_empty() && t.len() <= 19 && t.iter().all(u8::is_ascii_digit))
            .then(|| std::str::from_utf8(t).ok()?.parse::<u64>().ok())
            .flatten()
    };
    match (num(a), num(b), a.trim_ascii().is_empty()) {
        // bytes=-n: the last n bytes.
        (None, Some(n), true) if n > 0 && size > 0 => Pick::Part(size.saturating_sub(n), size - 1),
        (None, Some(_), true) => Pick::Unsatisfiable,
        (Some(start), None, false) if b.trim_ascii().is_empty() => {
            if start >= size {
                Pick::Unsatisfiable
            } else {
                Pick::Part(start, size - 1)
            }
        }
        (Some(start), Some(end), false) if start <= end => {
            if start >= size {
                Pick::Unsatisfiable
            } else {
                Pick::Part(start, end.min(size - 1))
            }
        }
        _ => Pick::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ranges() {
        let p = |v: &str| parse(v.as_bytes(), 100);
        assert_eq!(p("bytes=0-9"), Pick::Part(0, 9));
        assert_eq!(p("bytes=90-"), Pick::Part(90, 99));
        assert_eq!(p("bytes=-10"), Pick::Part(90, 99));
        assert_eq!(p("bytes=-1000"), Pick::Part(0, 99));
        assert_eq!(p("bytes=50-1000"), Pick::Part(50, 99));
        assert_eq!(p("bytes=100-"), Pick::Unsatisfiable);
        assert_eq!(p("bytes=100-200"), Pick::Unsatisfiable);
        assert_eq!(p("bytes=-0"), Pick::Unsatisfiable);
        for whole in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=9-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=1",
            "",
            "bytes=99999999999999999999-",
        ] {
            assert_eq!(p(whole), Pick::Whole, "{whole}");
        }
        assert_eq!(parse(b"bytes=0-", 0), Pick::Unsatisfiable);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]
        /// Whatever the header, a part lies inside the file.
        #[test]
        fn parts_are_inside_the_file(value in proptest::collection::vec(any::<u8>(), 0..30), tail in "[0-9,-]{0,12}", size in 0u64..1000) {
            for v in [value, format!("bytes={tail}").into_bytes()] {
                if let Pick::Part(a, b) = parse(&v, size) {
                    prop_assert!(a <= b && b < size);
                }
            }
        }
    }
}
