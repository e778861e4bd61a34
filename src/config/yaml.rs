//! YAML and JSON configs (serde_yaml, serde_json), Kubernetes ConfigMap
//! manifests, and ConfigMaps projected as a directory by kubelet.
//!
//! Accepted shapes:
//! - uWSGI YAML/JSON: a root mapping `uwsgi:` (or the section named by
//!   `FILE:section`) whose values are scalars or lists (a list is a
//!   repeated option); YAML booleans and numbers are taken as written.
//! - A `kind: ConfigMap` manifest, alone, in a multi-document file or in a
//!   `kind: List`. Its `data` either holds a config document under a key
//!   (`uwsgi.ini`, `uwsgi.yaml`, `podmaster.ini`, `podmaster.yaml`, or the
//!   key named by `FILE:KEY`), or its keys are option names themselves
//!   (string values, one value per line for a repeated option). The first
//!   ConfigMap is used unless `FILE:NAME` names another by `metadata.name`.
//! - A directory (`--config-dir`), as kubelet projects a ConfigMap: one file
//!   per key, read through kubelet's `..data` symlink; hidden entries skipped.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::Value;

use super::ini;
use super::placeholders::{FileCtx, expand_into};
use super::{ConfigError, Entry, Origin};

/// `data` keys that hold a whole config document, in preference order.
pub const DOC_KEYS: &[&str] =
    &["podmaster.yaml", "podmaster.yml", "podmaster.ini", "uwsgi.yaml", "uwsgi.yml", "uwsgi.ini", "podmaster.json"];

/// Flow-collection nesting (`[`, `{`) beyond this is refused before the
/// parser sees it: the YAML parser takes quadratic time on pathological
/// nesting, and no configuration nests more than a few levels.
const MAX_NESTING: usize = 100;
/// YAML alias uses (`*name`) allowed in one document: each may copy a
/// whole subtree, so this bounds the expansion to a small multiple of the
/// file (at most 2^(8/2) = 16 copies of the largest anchored node).
const MAX_ALIASES: usize = 8;

/// Linear scan for `[`/`{` nesting deeper than [`MAX_NESTING`]; counts
/// brackets inside quoted strings too, which can only make it stricter
/// for values made of a hundred brackets.
fn check_nesting(text: &str, shown: &Path) -> Result<(), ConfigError> {
    let (mut depth, mut line) = (0usize, 1usize);
    let mut aliases = 0usize;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        // An alias (`*name`) is copied wherever it is used, so a few of them
        // nested make a document exponentially large (a "billion laughs"):
        // a handful is allowed. Counts `*` followed by a name character
        // anywhere, which can only make it stricter.
        if b == b'*' && bytes.get(i + 1).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_') {
            aliases += 1;
            if aliases > MAX_ALIASES {
                return Err(line_err(shown, line, format!("more than {MAX_ALIASES} YAML aliases (*name)")));
            }
        }
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(line_err(shown, line, format!("nested deeper than {MAX_NESTING} levels")));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'\n' => line += 1,
            _ => {}
        }
    }
    Ok(())
}

/// How deep documents may embed documents (a ConfigMap holding YAML
/// holding ...): real configs need one level.
const MAX_EMBED_DEPTH: usize = 4;

pub fn load_yaml_spec(spec: &str, entries: &mut Vec<Entry>) -> Result<(), ConfigError> {
    load_spec(spec, Syntax::Yaml, entries)
}

pub fn load_json_spec(spec: &str, entries: &mut Vec<Entry>) -> Result<(), ConfigError> {
    load_spec(spec, Syntax::Json, entries)
}

/// The two document syntaxes of this module (JSON is read with serde_json,
/// then handled exactly like YAML).
#[derive(Debug, Clone, Copy)]
enum Syntax {
    Yaml,
    Json,
}

fn load_spec(spec: &str, syntax: Syntax, entries: &mut Vec<Entry>) -> Result<(), ConfigError> {
    let (path, sel) = ini::split_spec(spec);
    if path == ini::STDIN {
        let text = ini::stdin_text()?;
        let shown = Path::new(ini::STDIN_SHOWN);
        let abs = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")).join(ini::STDIN_SHOWN);
        return load_docs(parse(&text, shown, syntax)?, shown, &abs, sel, entries, 0);
    }
    let path = Path::new(path);
    let text = ini::read_text(path)?;
    let abs = absolute(path)?;
    load_docs(parse(&text, path, syntax)?, path, &abs, sel, entries, 0)
}

fn absolute(path: &Path) -> Result<PathBuf, ConfigError> {
    std::fs::canonicalize(path)
        .map_err(|e| ConfigError::new(None, None, format!("{}: cannot resolve path: {e}", path.display())))
}

fn at(shown: &Path, what: impl Into<String>) -> Origin {
    Origin::Doc { path: shown.to_owned(), at: what.into() }
}

fn line_err(shown: &Path, line: usize, msg: impl Into<String>) -> ConfigError {
    ConfigError::new(Some(Origin::File { path: shown.to_owned(), line }), None, msg)
}

/// Parses every document of `text` (a multi-document YAML stream, or one
/// JSON value), after refusing pathological nesting.
fn parse(text: &str, shown: &Path, syntax: Syntax) -> Result<Vec<Value>, ConfigError> {
    check_nesting(text, shown)?;
    match syntax {
        Syntax::Json => {
            let json: serde_json::Value =
                serde_json::from_str(text).map_err(|e| line_err(shown, e.line(), format!("invalid JSON: {e}")))?;
            let doc = serde_yaml::to_value(json).map_err(|e| line_err(shown, 0, format!("invalid JSON: {e}")))?;
            Ok(vec![doc])
        }
        Syntax::Yaml => serde_yaml::Deserializer::from_str(text)
            .map(|d| {
                Value::deserialize(d).map_err(|e| {
                    let line = e.location().map(|l| l.line()).unwrap_or(0);
                    line_err(shown, line, format!("invalid YAML: {e}"))
                })
            })
            .collect(),
    }
}

fn kind(doc: &Value) -> Option<&str> {
    doc.get("kind").and_then(Value::as_str)
}

fn load_docs(
    docs: Vec<Value>,
    shown: &Path,
    abs: &Path,
    sel: Option<&str>,
    entries: &mut Vec<Entry>,
    depth: usize,
) -> Result<(), ConfigError> {
    // ConfigMaps anywhere in the file (top level or inside a List).
    let mut maps: Vec<&Value> = Vec::new();
    for d in &docs {
        match kind(d) {
            Some("ConfigMap") => maps.push(d),
            Some("List") => {
                if let Some(items) = d.get("items").and_then(Value::as_sequence) {
                    maps.extend(items.iter().filter(|i| kind(i) == Some("ConfigMap")));
                }
            }
            _ => {}
        }
    }
    if !maps.is_empty() {
        let named = sel.and_then(|s| {
            maps.iter().find(|m| m.get("metadata").and_then(|md| md.get("name")).and_then(Value::as_str) == Some(s))
        });
        let (cm, key_sel) = match named {
            Some(m) => (*m, None),
            None => (maps[0], sel),
        };
        return load_configmap(cm, shown, abs, key_sel, entries, depth);
    }
    let section = sel.unwrap_or("uwsgi");
    let root = docs.iter().find_map(|d| d.get(section)).ok_or_else(|| {
        ConfigError::new(
            Some(at(shown, "")),
            None,
            format!("no `{section}:` mapping and no ConfigMap in this document"),
        )
    })?;
    let map = root
        .as_mapping()
        .ok_or_else(|| ConfigError::new(Some(at(shown, section)), None, "expected a mapping of options"))?;
    let ctx = FileCtx { path: shown, abs: abs.to_owned() };
    for (k, v) in map {
        let key = scalar(k).ok_or_else(|| {
            ConfigError::new(Some(at(shown, section)), None, format!("option names must be strings, found {k:?}"))
        })?;
        refuse_logic(&key, || at(shown, format!("{section}.{key}")))?;
        let values: Vec<(String, Value)> = match v {
            Value::Sequence(items) => {
                items.iter().enumerate().map(|(i, it)| (format!("{section}.{key}[{i}]"), it.clone())).collect()
            }
            other => vec![(format!("{section}.{key}"), other.clone())],
        };
        for (where_, item) in values {
            let origin = at(shown, where_);
            let raw = match &item {
                Value::Null => "true".to_owned(),
                other => scalar(other).ok_or_else(|| {
                    ConfigError::new(Some(origin.clone()), None, "expected a value or a list of values")
                })?,
            };
            let value = expand_into(&raw, &ctx, entries)
                .map_err(|m| ConfigError::new(Some(origin.clone()), None, m.to_string()))?;
            entries.push(Entry::new(key.clone(), value, origin));
        }
    }
    Ok(())
}

/// Configuration logic (`if-env`, `for`, `endif`, ...) needs repeated keys
/// in file order, which a mapping cannot hold: refused, pointing at ini.
fn refuse_logic(key: &str, origin: impl FnOnce() -> Origin) -> Result<(), ConfigError> {
    if !ini::is_logic_key(key) {
        return Ok(());
    }
    Err(ConfigError::new(
        Some(origin()),
        None,
        "configuration logic (if-*, for, endif, ...) is supported in ini files only; \
         put these lines in an ini file (a ConfigMap can hold one as uwsgi.ini)",
    ))
}

/// A YAML scalar as text (strings as-is, numbers and booleans as written).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn load_configmap(
    cm: &Value,
    shown: &Path,
    abs: &Path,
    key_sel: Option<&str>,
    entries: &mut Vec<Entry>,
    depth: usize,
) -> Result<(), ConfigError> {
    let data = cm
        .get("data")
        .and_then(Value::as_mapping)
        .ok_or_else(|| ConfigError::new(Some(at(shown, "data")), None, "ConfigMap has no `data` mapping"))?;
    let mut pairs = Vec::new();
    for (k, v) in data {
        let (Some(k), Some(v)) = (k.as_str(), v.as_str()) else {
            let name = scalar(k).unwrap_or_else(|| "?".into());
            return Err(ConfigError::new(
                Some(at(shown, format!("data.{name}"))),
                None,
                "ConfigMap data values must be strings; quote numbers and booleans (processes: \"4\")",
            ));
        };
        refuse_logic(k, || at(shown, format!("data.{k}")))?;
        pairs.push((k.to_owned(), v.to_owned()));
    }
    let doc_key = match key_sel {
        Some(k) => Some(pairs.iter().find(|(pk, _)| pk == k).map(|(pk, _)| pk.clone()).ok_or_else(|| {
            ConfigError::new(Some(at(shown, "data")), None, format!("no key {k:?} in ConfigMap data"))
        })?),
        None => DOC_KEYS.iter().find(|d| pairs.iter().any(|(k, _)| k == *d)).map(|d| d.to_string()),
    };
    match doc_key {
        Some(key) => {
            let text = &pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()).unwrap_or_default();
            let inner = PathBuf::from(format!("{}[data.{key}]", shown.display()));
            load_document(&key, text, &inner, abs, entries, depth + 1)
        }
        None => {
            for (k, v) in pairs {
                for line in v.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    entries.push(Entry::new(k.clone(), line, at(shown, format!("data.{k}"))));
                }
            }
            Ok(())
        }
    }
}

/// Loads an embedded document by the extension of its name.
fn load_document(
    name: &str,
    text: &str,
    shown: &Path,
    abs: &Path,
    entries: &mut Vec<Entry>,
    depth: usize,
) -> Result<(), ConfigError> {
    if depth > MAX_EMBED_DEPTH {
        return Err(ConfigError::new(Some(at(shown, "")), None, "documents embedded too deeply"));
    }
    if name.ends_with(".ini") {
        ini::load_text(text, shown, abs, "uwsgi", entries, &mut ini::Chain::default())
    } else {
        let syntax = if name.ends_with(".json") { Syntax::Json } else { Syntax::Yaml };
        load_docs(parse(text, shown, syntax)?, shown, abs, None, entries, depth)
    }
}

/// A ConfigMap projected as a directory: each visible file is an option
/// (one value per non-empty line), or, if named like a document key, a
/// whole config document.
pub fn load_dir(dir: &Path, entries: &mut Vec<Entry>) -> Result<(), ConfigError> {
    let err = |m: String| ConfigError::new(None, None, format!("{}: {m}", dir.display()));
    let rd = std::fs::read_dir(dir).map_err(|e| err(format!("cannot read config directory: {e}")))?;
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        // kubelet's `..data`, `..2024_..` and any dotfile are not keys.
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        if std::fs::metadata(&path).map(|m| m.is_dir()).unwrap_or(false) {
            continue;
        }
        let text = ini::read_text(&path)?;
        if DOC_KEYS.contains(&name.as_str()) {
            let abs = absolute(&path)?;
            load_document(&name, &text, &path, &abs, entries, 1)?;
            continue;
        }
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if !line.is_empty() {
                entries.push(Entry::new(name.clone(), line, Origin::File { path: path.clone(), line: i + 1 }));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("podmaster-yaml-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn kv(entries: &[Entry]) -> Vec<(String, String)> {
        entries.iter().map(|e| (e.key.clone(), e.value.clone())).collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn uwsgi_yaml_lists_bools_numbers() {
        let d = tmp("u");
        let p = d.join("a.yaml");
        std::fs::write(
            &p,
            "uwsgi:\n  socket: [':1', ':2']\n  processes: 4\n  master: true\n  vacuum:\n  chdir: '%d'\n",
        )
        .unwrap();
        let mut e = Vec::new();
        load_yaml_spec(p.to_str().unwrap(), &mut e).unwrap();
        let dir = format!("{}/", std::fs::canonicalize(&d).unwrap().display());
        assert_eq!(
            kv(&e),
            pairs(&[
                ("socket", ":1"),
                ("socket", ":2"),
                ("processes", "4"),
                ("master", "true"),
                ("vacuum", "true"),
                ("chdir", &dir)
            ])
        );
        assert_eq!(e[1].origin.to_string(), format!("{}: uwsgi.socket[1]", p.display()));
    }

    #[test]
    fn configmap_forms() {
        let d = tmp("cm");
        // data holds an ini document, inside a multi-document file after a Deployment.
        let p = d.join("cm.yaml");
        std::fs::write(
            &p,
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n---\napiVersion: v1\nkind: ConfigMap\n\
             metadata: {name: app}\ndata:\n  uwsgi.ini: |\n    [uwsgi]\n    processes = 3\n    socket = :9\n",
        )
        .unwrap();
        let mut e = Vec::new();
        load_yaml_spec(p.to_str().unwrap(), &mut e).unwrap();
        assert_eq!(kv(&e), pairs(&[("processes", "3"), ("socket", ":9")]));
        assert_eq!(e[0].origin.to_string(), format!("{}[data.uwsgi.ini]:2", p.display()));

        // data keys are options; a List wrapper; a repeated option one per line.
        std::fs::write(
            &p,
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: opts}\n  data:\n    processes: \"2\"\n    socket: |\n      :1\n      :2\n",
        )
        .unwrap();
        let mut e = Vec::new();
        load_yaml_spec(p.to_str().unwrap(), &mut e).unwrap();
        assert_eq!(kv(&e), pairs(&[("processes", "2"), ("socket", ":1"), ("socket", ":2")]));
        assert_eq!(e[0].origin.to_string(), format!("{}: data.processes", p.display()));

        // Non-string data values are a Kubernetes error too.
        std::fs::write(&p, "apiVersion: v1\nkind: ConfigMap\ndata:\n  processes: 2\n").unwrap();
        let err = load_yaml_spec(p.to_str().unwrap(), &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("quote numbers") && err.contains("data.processes"), "{err}");
    }

    #[test]
    fn json_same_shape() {
        let d = tmp("j");
        let p = d.join("a.json");
        std::fs::write(&p, r#"{"uwsgi": {"processes": 2, "socket": [":1"]}}"#).unwrap();
        let mut e = Vec::new();
        load_json_spec(p.to_str().unwrap(), &mut e).unwrap();
        assert_eq!(kv(&e), pairs(&[("processes", "2"), ("socket", ":1")]));
        std::fs::write(&p, "{\"uwsgi\": \n{").unwrap();
        let err = load_json_spec(p.to_str().unwrap(), &mut Vec::new()).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:2: invalid JSON", p.display())), "{err}");
    }

    #[test]
    fn projected_directory_with_kubelet_symlinks() {
        let d = tmp("dir");
        let ts = d.join("..2026_11_26_00_00_00.1");
        std::fs::create_dir(&ts).unwrap();
        std::fs::write(ts.join("processes"), "3\n").unwrap();
        std::fs::write(ts.join("socket"), ":1\n:2\n").unwrap();
        std::os::unix::fs::symlink("..2026_11_26_00_00_00.1", d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/processes", d.join("processes")).unwrap();
        std::os::unix::fs::symlink("..data/socket", d.join("socket")).unwrap();
        std::fs::write(d.join(".hidden"), "junk").unwrap();
        let mut e = Vec::new();
        load_dir(&d, &mut e).unwrap();
        assert_eq!(kv(&e), pairs(&[("processes", "3"), ("socket", ":1"), ("socket", ":2")]));
        assert_eq!(e[2].origin.to_string(), format!("{}:2", d.join("socket").display()));
    }
}
