//! uWSGI's placeholder maths: `%(processes + 1)`, `%(%k * 2)`.
//!
//! The text between the parentheses (magic variables already expanded) is
//! split at spaces into operands and operators and evaluated as uWSGI
//! does, as a pipeline from left to right with no precedence:
//! `%(a + 3 * 2)` is `(a + 3) * 2`. An operand is a whole number written
//! in digits or the name of a placeholder (a key set earlier, `_` inside
//! a logic block); `+ - * /` apply to the next operand (64-bit integers,
//! division rounds toward zero); `++` and `--` add or take one; two
//! operands with no operator between them are joined as text (`%(a b)`).
//!
//! Where uWSGI quietly computes something (a division by zero gives 0, a
//! value that is not a number counts as 0, an unknown name as empty), this
//! is an error: a configuration that relies on those is a mistake.

use super::{ExpandError, MAX_VALUE_BYTES};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

impl Op {
    fn parse(token: &str) -> Option<Op> {
        match token {
            "+" => Some(Op::Add),
            "-" => Some(Op::Sub),
            "*" => Some(Op::Mul),
            "/" => Some(Op::Div),
            _ => None,
        }
    }

    fn apply(self, a: i64, b: i64) -> Result<i64, String> {
        let r = match self {
            Op::Add => a.checked_add(b),
            Op::Sub => a.checked_sub(b),
            Op::Mul => a.checked_mul(b),
            Op::Div if b == 0 => return Err("division by zero".into()),
            Op::Div => a.checked_div(b),
        };
        r.ok_or_else(|| "the result does not fit in a 64-bit integer".into())
    }
}

/// Evaluates `expr` (the inside of `%( )`), looking names up with `name`.
/// A single token is a plain `%(key)`: `name`'s error (unknown key) is
/// returned as it is.
pub fn evaluate(expr: &str, name: &mut dyn FnMut(&str) -> Result<String, ExpandError>) -> Result<String, ExpandError> {
    let fail = |why: String| ExpandError::Maths { expr: expr.to_owned(), why };
    let mut acc: Option<String> = None;
    let mut pending: Option<(Op, &str)> = None;
    let mut tokens = 0;
    for token in expr.split(' ').filter(|t| !t.is_empty()) {
        tokens += 1;
        if let Some(op) = Op::parse(token) {
            if acc.is_none() {
                return Err(fail(format!("`{token}` has no value before it")));
            }
            if let Some((_, prev)) = pending {
                return Err(fail(format!("`{prev}` is followed by another operator, `{token}`")));
            }
            pending = Some((op, token));
            continue;
        }
        if token == "++" || token == "--" {
            let (Some(a), None) = (&acc, pending) else {
                return Err(fail(format!("`{token}` needs a value right before it")));
            };
            let op = if token == "++" { Op::Add } else { Op::Sub };
            acc = Some(op.apply(number(a).map_err(fail)?, 1).map_err(fail)?.to_string());
            continue;
        }
        let value = if token.bytes().all(|b| b.is_ascii_digit()) { token.to_owned() } else { name(token)? };
        acc = Some(match (acc.take(), pending.take()) {
            (None, _) => value,
            (Some(mut a), None) => {
                if a.len() + value.len() > MAX_VALUE_BYTES {
                    return Err(ExpandError::TooLong);
                }
                a.push_str(&value);
                a
            }
            (Some(a), Some((op, _))) => {
                op.apply(number(&a).map_err(fail)?, number(&value).map_err(fail)?).map_err(fail)?.to_string()
            }
        });
    }
    if let Some((_, op)) = pending {
        return Err(fail(format!("`{op}` has no value after it")));
    }
    match acc {
        Some(v) => Ok(v),
        None if tokens == 0 => Err(ExpandError::UnknownKey(expr.to_owned())),
        None => Err(fail("nothing to compute".into())),
    }
}

/// A value as a whole number (surrounding spaces allowed, as in `4 `).
fn number(v: &str) -> Result<i64, String> {
    v.trim().parse::<i64>().map_err(|_| format!("{v:?} is not a whole number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(expr: &str) -> Result<String, String> {
        let vars = [("processes", "4"), ("foo", "17"), ("bar", "30"), ("name", "web"), ("auto", "auto"), ("_", "8")];
        let mut lookup = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
                .ok_or_else(|| ExpandError::UnknownKey(k.to_owned()))
        };
        evaluate(expr, &mut lookup).map_err(|e| e.to_string())
    }

    #[test]
    fn uwsgi_examples_and_ours() {
        let ok = [
            ("processes", "4"),
            ("processes + 1", "5"),
            ("foo + bar + 3", "50"),
            // A pipeline, not precedence: ((17 + 30) + 3) * 2.
            ("foo + bar + 3 * 2", "100"),
            ("foo ++", "18"),
            ("foo --", "16"),
            ("foo bar", "1730"),
            ("foo bar ++", "1731"),
            ("8 * 2", "16"),
            ("bar / 4", "7"),
            ("0 - bar / 4", "-7"),
            ("_ + 8000", "8008"),
            ("  processes   *  2 ", "8"),
            ("12", "12"),
        ];
        for (expr, want) in ok {
            assert_eq!(eval(expr).as_deref(), Ok(want), "%({expr})");
        }
    }

    #[test]
    fn mistakes_are_errors() {
        let bad = [
            ("bar / 0", "%(bar / 0): division by zero"),
            ("auto + 1", "%(auto + 1): \"auto\" is not a whole number"),
            ("name ++", "%(name ++): \"web\" is not a whole number"),
            ("+ 1", "%(+ 1): `+` has no value before it"),
            ("foo +", "%(foo +): `+` has no value after it"),
            ("foo + * 2", "%(foo + * 2): `+` is followed by another operator, `*`"),
            ("++", "%(++): `++` needs a value right before it"),
            ("foo + ++", "%(foo + ++): `++` needs a value right before it"),
            ("9223372036854775807 + 1", "%(9223372036854775807 + 1): the result does not fit in a 64-bit integer"),
            ("99999999999999999999 + 1", "%(99999999999999999999 + 1): \"99999999999999999999\" is not a whole number"),
            ("nope + 1", "placeholder %(nope) refers to a key that is not set before it"),
            ("nope", "placeholder %(nope) refers to a key that is not set before it"),
            ("", "placeholder %() refers to a key that is not set before it"),
        ];
        for (expr, want) in bad {
            assert_eq!(eval(expr).unwrap_err(), want, "%({expr})");
        }
    }
}
