//! App metrics declared with `metric =` (uWSGI's syntax). Config owns the
//! declaration and its limits; the scoreboard lays its shared memory out
//! from them.

/// Metrics that can be declared with `metric =` (the scoreboard keeps one
/// row of this many counters per worker slot).
pub const MAX_METRICS: usize = 64;

/// A metric declared with uWSGI's syntax.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MetricDecl {
    pub name: String,
    /// counter or gauge (uWSGI's `absolute` is a gauge).
    pub counter: bool,
    pub initial: i64,
}

/// Why a metric declaration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricError {
    #[error("metric type {0:?}: expected counter or gauge")]
    Type(String),
    #[error("initial_value {0:?} is not a whole number")]
    Initial(String),
    #[error("metric key {0:?} is not supported (name, type, initial_value)")]
    Key(String),
    #[error("a metric needs name=...")]
    NoName,
    #[error("metric name {0:?}: use letters, digits, _ . -")]
    Name(String),
}

/// Parses `name=requests,type=counter,initial_value=0`.
pub fn parse_metric(spec: &str) -> Result<MetricDecl, MetricError> {
    let mut decl = MetricDecl { name: String::new(), counter: true, initial: 0 };
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        match k.trim() {
            "name" => decl.name = v.trim().to_owned(),
            "type" => {
                decl.counter = match v.trim() {
                    "counter" => true,
                    "gauge" | "absolute" => false,
                    other => return Err(MetricError::Type(other.to_owned())),
                }
            }
            "initial_value" | "initial-value" => {
                decl.initial = v.trim().parse().map_err(|_| MetricError::Initial(v.to_owned()))?
            }
            other => return Err(MetricError::Key(other.to_owned())),
        }
    }
    if decl.name.is_empty() {
        return Err(MetricError::NoName);
    }
    if !decl.name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        return Err(MetricError::Name(decl.name));
    }
    Ok(decl)
}

#[cfg(test)]
mod clash_tests {
    use super::*;

    #[test]
    fn names_that_meet_in_the_exposition_clash() {
        let m = |spec: &str| parse_metric(spec).unwrap();
        for (a, b) in [
            ("name=req.count", "name=req_count"),
            ("name=x", "name=x_per_worker"),
            ("name=y", "name=y_total,type=gauge"),
            ("name=a-b,type=gauge", "name=a.b,type=gauge"),
        ] {
            assert!(clash(&[m(a)], &m(b)).is_some(), "{a} / {b}");
        }
        assert!(clash(&[m("name=requests")], &m("name=errors")).is_none());
        assert!(clash(&[m("name=y,type=gauge")], &m("name=y_total_x")).is_none());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_specs() {
        assert_eq!(
            parse_metric("name=requests,type=counter").unwrap(),
            MetricDecl { name: "requests".into(), counter: true, initial: 0 }
        );
        assert_eq!(
            parse_metric("name=inflight, type=gauge, initial_value=5").unwrap(),
            MetricDecl { name: "inflight".into(), counter: false, initial: 5 }
        );
        for bad in ["type=counter", "name=a,type=histogram", "name=a,initial_value=x", "name=a b", "name=a,oid=1.2"] {
            assert!(parse_metric(bad).is_err(), "{bad}");
        }
    }
}

/// The names a metric claims in the exposition: its family
/// (`podmaster_app_<clean>`) and per-worker family, each with `_total` for
/// a counter. Two metrics whose claims meet would make the exposition
/// unparseable (`Clashing name`), so the second is refused.
pub fn exposed_names(d: &MetricDecl) -> Vec<String> {
    let clean: String = d.name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    let mut out = Vec::new();
    for family in [clean.clone(), format!("{clean}_per_worker")] {
        if d.counter {
            out.push(format!("{family}_total"));
        }
        out.push(family);
    }
    out
}

/// The declared metric whose exposed names meet `d`'s, if any.
pub fn clash<'a>(declared: &'a [MetricDecl], d: &MetricDecl) -> Option<&'a MetricDecl> {
    let mine = exposed_names(d);
    declared.iter().find(|m| exposed_names(m).iter().any(|n| mine.contains(n)))
}
