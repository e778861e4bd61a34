//! Path patterns for `for-glob`, with the standard library only.
//!
//! A pattern is matched one path component at a time, as glob(3) does:
//! `*` (any run of characters), `?` (one character), `[abc]`, `[a-z]`,
//! `[!a-z]` / `[^a-z]` (a set, or not), `\x` (the character `x`). A
//! wildcard never matches `/`, and a name starting with `.` only matches a
//! pattern component that starts with `.`. Components without wildcards
//! are taken as written. Matches come sorted (bytewise); directories end
//! with `/` (uWSGI asks glob(3) for `GLOB_MARK`). A pattern that matches
//! nothing gives no paths (uWSGI's `GLOB_NOCHECK` would give the pattern
//! itself; a loop over no files runs no times here). Bounded: at most
//! [`MAX_GLOB_MATCHES`] matches and [`MAX_GLOB_SCANNED`] directory
//! entries read, whatever the pattern.

use std::path::{Path, PathBuf};

/// Paths one `for-glob` may give (the loop bound is the same).
pub const MAX_GLOB_MATCHES: usize = 10_000;
/// Directory entries one pattern may read in all (`/*/*/*` on a large
/// tree stops here instead of walking the disk).
pub const MAX_GLOB_SCANNED: usize = 100_000;

/// One element of a pattern component.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(char),
    Any,
    Star,
    /// `[...]`: ranges (a single character is `(c, c)`), negated or not.
    Set(bool, Vec<(char, char)>),
}

/// The paths matching `pattern`; a relative pattern is matched in `base`
/// and its matches stay relative (as written).
pub fn glob(pattern: &str, base: &Path) -> Result<Vec<String>, String> {
    let absolute = pattern.starts_with('/');
    let dirs_only = pattern.ends_with('/');
    // (as shown, as found on disk)
    let mut found: Vec<(String, PathBuf)> =
        vec![if absolute { ("/".to_owned(), PathBuf::from("/")) } else { (String::new(), base.to_owned()) }];
    let mut scanned = 0usize;
    for comp in pattern.split('/').filter(|c| !c.is_empty()) {
        let toks = tokens(comp);
        let wild = toks.iter().any(|t| !matches!(t, Tok::Lit(_)));
        let mut next = Vec::new();
        for (shown, disk) in found {
            let join = |name: &str| {
                let s = if shown.is_empty() || shown.ends_with('/') {
                    format!("{shown}{name}")
                } else {
                    format!("{shown}/{name}")
                };
                (s, disk.join(name))
            };
            if !wild {
                let name: String = toks.iter().map(|t| if let Tok::Lit(c) = t { *c } else { '?' }).collect();
                next.push(join(&name));
                continue;
            }
            let Ok(rd) = std::fs::read_dir(&disk) else { continue };
            let mut names = Vec::new();
            for entry in rd {
                scanned += 1;
                if scanned > MAX_GLOB_SCANNED {
                    return Err(format!("{pattern}: more than {MAX_GLOB_SCANNED} directory entries to look at"));
                }
                let Ok(entry) = entry else { continue };
                // Names that are not UTF-8 cannot be a value: skipped.
                let Ok(name) = entry.file_name().into_string() else { continue };
                if matches(&toks, &name) {
                    names.push(name);
                }
            }
            names.sort();
            next.extend(names.iter().map(|n| join(n)));
            if next.len() > MAX_GLOB_MATCHES {
                return Err(format!("{pattern}: more than {MAX_GLOB_MATCHES} paths match"));
            }
        }
        found = next;
    }
    let mut out: Vec<String> = Vec::new();
    for (mut shown, disk) in found {
        // Literal components were not checked on the way: only what
        // exists is a match.
        let Ok(meta) = std::fs::metadata(&disk) else { continue };
        if meta.is_dir() {
            if !shown.ends_with('/') {
                shown.push('/');
            }
        } else if dirs_only {
            continue;
        }
        out.push(shown);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn tokens(comp: &str) -> Vec<Tok> {
    let chars: Vec<char> = comp.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => {
                if out.last() != Some(&Tok::Star) {
                    out.push(Tok::Star);
                }
            }
            '?' => out.push(Tok::Any),
            '\\' if i + 1 < chars.len() => {
                i += 1;
                out.push(Tok::Lit(chars[i]));
            }
            '[' => match set(&chars[i + 1..]) {
                Some((tok, used)) => {
                    out.push(tok);
                    i += used;
                }
                // No closing `]`: a literal `[`, as glob(3) reads it.
                None => out.push(Tok::Lit('[')),
            },
            c => out.push(Tok::Lit(c)),
        }
        i += 1;
    }
    out
}

/// A set after its `[`: the token and how many characters it used.
fn set(chars: &[char]) -> Option<(Tok, usize)> {
    let mut i = 0;
    let negated = matches!(chars.first(), Some('!') | Some('^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    // A `]` right after `[` or `[!` is a member, not the end.
    let mut first = true;
    while i < chars.len() {
        let c = chars[i];
        if c == ']' && !first {
            return Some((Tok::Set(negated, ranges), i + 1));
        }
        first = false;
        if i + 2 < chars.len() && chars[i + 1] == '-' && chars[i + 2] != ']' {
            ranges.push((c, chars[i + 2]));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
    None
}

fn one(tok: &Tok, c: char) -> bool {
    match tok {
        Tok::Lit(l) => *l == c,
        Tok::Any => true,
        Tok::Set(negated, ranges) => ranges.iter().any(|(a, b)| *a <= c && c <= *b) != *negated,
        Tok::Star => false,
    }
}

/// Whether `name` matches the component `toks`: the usual linear scan
/// that remembers the last `*` and retries from one character further.
fn matches(toks: &[Tok], name: &str) -> bool {
    let s: Vec<char> = name.chars().collect();
    if s.first() == Some(&'.') && toks.first() != Some(&Tok::Lit('.')) {
        return false;
    }
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < toks.len() && toks[p] == Tok::Star {
            star = Some((p, i));
            p += 1;
        } else if p < toks.len() && one(&toks[p], s[i]) {
            p += 1;
            i += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    toks[p..].iter().all(|t| *t == Tok::Star)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_matching() {
        let cases = [
            ("*", "app.ini", true),
            ("*.ini", "app.ini", true),
            ("*.ini", "app.yaml", false),
            ("*", ".hidden", false),
            (".*", ".hidden", true),
            ("?pp.ini", "app.ini", true),
            ("?", "", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("[ab]x", "bx", true),
            ("[a-c]x", "cx", true),
            ("[!a-c]x", "cx", false),
            ("[^a-c]x", "dx", true),
            ("[]]", "]", true),
            ("[!]]", "a", true),
            ("[x", "[x", true),
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("**", "abc", true),
            ("日*", "日本", true),
        ];
        for (pat, name, want) in cases {
            assert_eq!(matches(&tokens(pat), name), want, "{pat} vs {name}");
        }
    }

    #[test]
    fn paths_sorted_marked_and_relative_as_written() {
        let d = std::env::temp_dir().join(format!("podmaster-glob-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        for sub in ["conf.d/b", "conf.d/a", "other"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        for f in ["conf.d/2.ini", "conf.d/1.ini", "conf.d/.3.ini", "conf.d/a/x.ini", "conf.d/b/y.txt"] {
            std::fs::write(d.join(f), "").unwrap();
        }
        let g = |p: &str| glob(p, &d).unwrap();
        assert_eq!(g("conf.d/*.ini"), ["conf.d/1.ini", "conf.d/2.ini"]);
        assert_eq!(g("conf.d/*"), ["conf.d/1.ini", "conf.d/2.ini", "conf.d/a/", "conf.d/b/"]);
        assert_eq!(g("conf.d/*/"), ["conf.d/a/", "conf.d/b/"]);
        assert_eq!(g("conf.d/*/*.ini"), ["conf.d/a/x.ini"]);
        assert_eq!(g("*/[ab]/*"), ["conf.d/a/x.ini", "conf.d/b/y.txt"]);
        assert_eq!(g("conf.d/2.ini"), ["conf.d/2.ini"]);
        assert!(g("conf.d/9.ini").is_empty());
        assert!(g("nowhere/*").is_empty());
        let abs = format!("{}/conf.d/?.ini", d.display());
        assert_eq!(g(&abs), [format!("{}/conf.d/1.ini", d.display()), format!("{}/conf.d/2.ini", d.display())]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bounded() {
        let d = std::env::temp_dir().join(format!("podmaster-glob-many-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..=MAX_GLOB_MATCHES {
            std::fs::write(d.join(format!("f{i}")), "").unwrap();
        }
        let err = glob("*", &d).unwrap_err();
        assert_eq!(err, format!("*: more than {MAX_GLOB_MATCHES} paths match"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
