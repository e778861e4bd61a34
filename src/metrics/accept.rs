//! Content negotiation for `/metrics`: which of the two expositions an
//! `Accept` header asks for (RFC 9110 12.5.1). The header is client bytes:
//! this code reads it in one pass, allocates nothing per range, never
//! panics, and whatever it cannot parse counts as absent, so a broken
//! header gets the default, the classic text format.
//!
//! OpenMetrics is served only when a range names it (`application/openmetrics-text`,
//! or `application/*`), with a weight above 0 and at least the weight of
//! `text/plain`. A bare `*/*` (curl's default) is not a request for it: the
//! classic format is what every Prometheus and every reader of `/metrics`
//! understands. Prometheus itself sends
//! `application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1`
//! and gets OpenMetrics.

use super::Format;

/// One of our two formats as a media type: what a range must name to match it.
struct Offer {
    kind: &'static str,
    subtype: &'static str,
    /// The `version` we write: a range naming it is the most specific match.
    version: &'static str,
    /// Other versions whose syntax we also satisfy (OpenMetrics 0.0.1, the
    /// draft Prometheus still lists, reads 1.0.0 text).
    compatible: &'static [&'static str],
}

const OPENMETRICS: Offer =
    Offer { kind: "application", subtype: "openmetrics-text", version: "1.0.0", compatible: &["0.0.1"] };
const CLASSIC: Offer = Offer { kind: "text", subtype: "plain", version: "0.0.4", compatible: &[] };

/// How specifically a range matches an offer; the most specific matching
/// range decides the offer's weight (RFC 9110 12.5.1, `text/plain;q=0`
/// beats `*/*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Match {
    /// `*/*`
    Any,
    /// `application/*`
    Kind,
    /// the type and subtype, with no version or a compatible one
    Type,
    /// the type and subtype with exactly the version we write
    Version,
}

/// A weight in thousandths: RFC 9110 12.4.2 allows three decimals, so an
/// integer holds every weight exactly (no float comparisons).
type Weight = u16;

/// The format an `Accept` header value asks for (several header fields
/// arrive joined with `, `, which is how RFC 9110 5.3 combines them).
pub fn negotiate(accept: &str) -> Format {
    let (mut openmetrics, mut classic) = (Best::default(), Best::default());
    for range in split_unquoted(accept, b',') {
        let Some(range) = Range::parse(range) else { continue };
        openmetrics.consider(range.matches(&OPENMETRICS), range.weight);
        classic.consider(range.matches(&CLASSIC), range.weight);
    }
    match openmetrics.0 {
        Some((m, w)) if m > Match::Any && w > 0 && w >= classic.weight() => Format::OpenMetrics,
        _ => Format::Classic,
    }
}

/// The most specific match seen for one offer, and its weight (the
/// highest, when several ranges match equally specifically).
#[derive(Default)]
struct Best(Option<(Match, Weight)>);

impl Best {
    fn consider(&mut self, m: Option<Match>, weight: Weight) {
        let Some(m) = m else { return };
        self.0 = match self.0 {
            Some((best, w)) if best > m => Some((best, w)),
            Some((best, w)) if best == m => Some((m, w.max(weight))),
            _ => Some((m, weight)),
        };
    }

    /// The weight; 0 (not acceptable) when no range matched.
    fn weight(&self) -> Weight {
        self.0.map_or(0, |(_, w)| w)
    }
}

/// One media range with the parameters negotiation reads.
#[derive(Debug, PartialEq, Eq)]
struct Range<'a> {
    kind: &'a str,
    subtype: &'a str,
    version: Option<&'a str>,
    weight: Weight,
}

impl<'a> Range<'a> {
    /// `type/subtype *( OWS ";" OWS name=value )`. None for anything
    /// malformed, and for a range that gives `q` or `version` twice (no
    /// rule says which one counts, so neither does).
    fn parse(text: &'a str) -> Option<Range<'a>> {
        let mut parts = split_unquoted(text, b';');
        let (kind, subtype) = parts.next()?.trim_matches(OWS).split_once('/')?;
        if !is_token(kind) || !is_token(subtype) || (kind == "*" && subtype != "*") {
            return None;
        }
        let (mut version, mut weight) = (None, None);
        // RFC 9110 5.6.6: `parameters = *( OWS ";" OWS [ parameter ] )`.
        for param in parts.map(|p| p.trim_matches(OWS)).filter(|p| !p.is_empty()) {
            let (name, value) = param.split_once('=')?;
            let (name, value) = (name.trim_end_matches(OWS), value.trim_start_matches(OWS));
            if !is_token(name) {
                return None;
            }
            if name.eq_ignore_ascii_case("q") {
                if weight.replace(parse_weight(value)?).is_some() {
                    return None;
                }
            } else if name.eq_ignore_ascii_case("version") {
                if version.replace(unquote(value)?).is_some() {
                    return None;
                }
            } else {
                unquote(value)?;
            }
        }
        Some(Range { kind, subtype, version, weight: weight.unwrap_or(1000) })
    }

    fn matches(&self, offer: &Offer) -> Option<Match> {
        if self.kind == "*" {
            return Some(Match::Any);
        }
        if !self.kind.eq_ignore_ascii_case(offer.kind) {
            return None;
        }
        if self.subtype == "*" {
            return Some(Match::Kind);
        }
        if !self.subtype.eq_ignore_ascii_case(offer.subtype) {
            return None;
        }
        match self.version {
            Some(v) if v == offer.version => Some(Match::Version),
            Some(v) if !offer.compatible.contains(&v) => None,
            _ => Some(Match::Type),
        }
    }
}

/// Optional whitespace (RFC 9110 5.6.3).
const OWS: [char; 2] = [' ', '\t'];

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A parameter value: a token as it is, or a quoted string without its
/// quotes. Escapes are left in: no version or weight we compare has one.
fn unquote(value: &str) -> Option<&str> {
    if is_token(value) {
        return Some(value);
    }
    let inner = value.strip_prefix('"')?.strip_suffix('"')?;
    let mut escaped = false;
    for b in inner.bytes() {
        match (escaped, b) {
            (true, _) => escaped = false,
            (false, b'\\') => escaped = true,
            (false, b'"') => return None,
            _ => {}
        }
    }
    (!escaped).then_some(inner)
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn parse_weight(v: &str) -> Option<Weight> {
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths =
        frac.bytes().chain(std::iter::repeat(b'0')).take(3).fold(0, |n, d| n * 10 + Weight::from(d - b'0'));
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Splits at `sep` outside quoted strings (a `,` or `;` may sit inside a
/// quoted parameter value). An unterminated quote runs to the end.
fn split_unquoted(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    let mut cuts = s.bytes().enumerate().filter_map(move |(i, b)| {
        match (quoted, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (_, false, b'"') => quoted = !quoted,
            (false, _, b) if b == sep => return Some(i),
            _ => {}
        }
        None
    });
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let end = cuts.next().unwrap_or_else(|| {
            done = true;
            s.len()
        });
        // `sep` is ASCII, so both cuts are character boundaries.
        let part = &s[start..end];
        start = end + 1;
        Some(part)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Format::{Classic, OpenMetrics};

    /// What Prometheus 2.x sends when scraping (scrape.go, acceptHeader).
    const PROMETHEUS: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    #[test]
    fn accept_headers() {
        let long_junk = "x/y;a=b, ".repeat(2000);
        let long_then_om = format!("{long_junk}application/openmetrics-text");
        let long_param = format!("application/openmetrics-text;version=\"{}\"", "1".repeat(16_000));
        let cases: &[(&str, Format)] = &[
            (PROMETHEUS, OpenMetrics),
            // Prometheus 3 adds `escaping` and a text/plain 1.0.0 it prefers less.
            (
                "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,\
                 application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,\
                 text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
                OpenMetrics,
            ),
            ("", Classic),
            ("*/*", Classic),
            ("*/*;q=0.1", Classic),
            ("text/plain", Classic),
            ("text/plain;version=0.0.4", Classic),
            ("text/*", Classic),
            ("application/json", Classic),
            ("application/openmetrics-text", OpenMetrics),
            ("application/openmetrics-text; version=1.0.0", OpenMetrics),
            ("application/openmetrics-text; version=0.0.1", OpenMetrics),
            ("application/openmetrics-text; version=\"1.0.0\"; charset=utf-8", OpenMetrics),
            ("APPLICATION/OpenMetrics-Text;VERSION=1.0.0", OpenMetrics),
            ("application/*", OpenMetrics),
            // A version we do not write is not a match.
            ("application/openmetrics-text;version=2.0.0", Classic),
            // q=0: not acceptable, whatever else matches less specifically.
            ("application/openmetrics-text;q=0", Classic),
            ("application/openmetrics-text;q=0, */*", Classic),
            ("application/openmetrics-text;q=0.000, text/plain;q=0.1", Classic),
            ("application/openmetrics-text;version=1.0.0;q=0, application/openmetrics-text", Classic),
            ("application/openmetrics-text;q=0.001", OpenMetrics),
            // Preferred at least as much as text/plain.
            ("text/plain, application/openmetrics-text", OpenMetrics),
            ("text/plain;q=0.9, application/openmetrics-text;q=0.9", OpenMetrics),
            ("text/plain;q=0.9, application/openmetrics-text;q=0.8", Classic),
            ("text/plain;q=0, application/openmetrics-text;q=0.1", OpenMetrics),
            ("application/openmetrics-text;q=0.5, */*", Classic),
            ("application/openmetrics-text;q=0.5, text/plain;q=0, */*", OpenMetrics),
            // Whitespace, quotes and separators inside quotes.
            ("  application/openmetrics-text ; q=1 ,text/plain;q=0.5", OpenMetrics),
            ("text/plain;x=\"a,application/openmetrics-text\";q=0.5", Classic),
            ("application/openmetrics-text;x=\"a;q=0\"", OpenMetrics),
            // Garbage and malformed ranges count as absent.
            ("garbage", Classic),
            (",,,;;;===", Classic),
            ("application/openmetrics-text;q=1.5", Classic),
            ("application/openmetrics-text;q=abc", Classic),
            ("application/openmetrics-text;q=0.5000", Classic),
            ("application/openmetrics-text;q", Classic),
            ("application/openmetrics-text;;q=0.5;", OpenMetrics),
            ("application/openmetrics-text;version=\"1.0.0", Classic),
            ("application/openmetrics-text;version=1.0.0\u{e9}", Classic),
            ("*/openmetrics-text", Classic),
            ("application/openmetrics-text/x", Classic),
            ("\u{e9}\u{0}\u{7f}\"\\", Classic),
            // Duplicate parameters: the range is dropped, the others count.
            ("application/openmetrics-text;q=0;q=1", Classic),
            ("application/openmetrics-text;version=1.0.0;version=1.0.0", Classic),
            ("application/openmetrics-text;q=0;q=1, application/openmetrics-text;q=0.5", OpenMetrics),
            ("application/openmetrics-text;charset=utf-8;charset=utf-8", OpenMetrics),
            // Very long headers (the head is at most 16 KiB, these are longer).
            (&long_junk, Classic),
            (&long_then_om, OpenMetrics),
            (&long_param, Classic),
        ];
        for (accept, want) in cases {
            let shown: String = accept.chars().take(120).collect();
            assert_eq!(negotiate(accept), *want, "Accept: {shown}");
        }
    }

    #[test]
    fn weights() {
        for (v, w) in [("0", Some(0)), ("0.", Some(0)), ("0.5", Some(500)), ("0.75", Some(750)), ("0.001", Some(1))] {
            assert_eq!(parse_weight(v), w, "{v}");
        }
        for (v, w) in [("1", Some(1000)), ("1.000", Some(1000)), ("1.001", None), ("2", None), ("", None)] {
            assert_eq!(parse_weight(v), w, "{v}");
        }
        for v in ["-0", ".5", "0.5x", "0,5", "1e0", "00.5", "0.\u{e9}"] {
            assert_eq!(parse_weight(v), None, "{v}");
        }
    }

    #[test]
    fn splitting_respects_quotes() {
        let parts: Vec<&str> = split_unquoted(r#"a;b="x;y\";z";c"#, b';').collect();
        assert_eq!(parts, ["a", r#"b="x;y\";z""#, "c"]);
        assert_eq!(split_unquoted("", b',').collect::<Vec<_>>(), [""]);
        assert_eq!(split_unquoted("é,", b',').collect::<Vec<_>>(), ["é", ""]);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn config() -> ProptestConfig {
            // PROPTEST_CASES, when set, overrides the count (for a longer soak).
            let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
            ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
        }

        proptest! {
            #![proptest_config(config())]

            /// Any string: an answer (one of the two formats), no panic.
            #[test]
            fn any_string(accept in any::<String>()) {
                let f = negotiate(&accept);
                prop_assert!(matches!(f, Classic | OpenMetrics));
            }

            /// Headers built from media-range pieces: OpenMetrics only
            /// when the header names `application/...`.
            #[test]
            fn ranges(parts in proptest::collection::vec(
                "(\\*|text|application|x)/(\\*|plain|openmetrics-text|json)( ?; ?(q|version|charset)=(0|1|0\\.[0-9]{1,4}|1\\.0|0\\.0\\.4|1\\.0\\.0|0\\.0\\.1|\"[;,a-z]*\"))*",
                0..6,
            )) {
                let accept = parts.join(", ");
                if negotiate(&accept) == OpenMetrics {
                    prop_assert!(accept.contains("application/"), "{}", accept);
                }
            }

            /// Prometheus' header followed by ranges naming neither format
            /// still gets OpenMetrics.
            #[test]
            fn prometheus_then_others(extra in proptest::collection::vec("[a-z]{1,8}/[a-z]{1,8}(;q=0\\.[0-9])?", 0..8)) {
                let accept = std::iter::once(PROMETHEUS.to_owned()).chain(extra).collect::<Vec<_>>().join(",");
                prop_assert_eq!(negotiate(&accept), OpenMetrics);
            }
        }
    }
}
