//! uWSGI's configuration logic in ini files: which keys open and close
//! blocks, the block tree of one section, and what each test and loop
//! means. Running the tree (expanding, including, pushing entries) is
//! [`super::walk`]'s.
//!
//! Openers: `if-env`, `if-not-env`, `if-exists`, `if-not-exists`,
//! `if-file`, `if-not-file`, `if-dir`, `if-not-dir`, `if-opt`,
//! `if-not-opt`, `if-hostname`, `if-not-hostname` (and uWSGI's spellings
//! `ifenv`, `ifexists`, `ifdir`, `if-directory`), closed by `endif`
//! (`end-if`); `for`, `for-glob`, `for-readline`, `for-times`, closed by
//! `endfor` (`end-for`). `end` closes either; `else` starts the other
//! branch of an if. Blocks nest, up to [`MAX_BLOCK_NESTING`] (uWSGI allows
//! none). uWSGI's `if-reload`, `if-plugin` and `if-hostname-match` are
//! refused: podmaster cannot answer them.
//!
//! Structural mistakes are collected with the line they are about: a
//! closer with no open block (ignored), a closer of the wrong kind (it
//! still closes the innermost block), an opener never closed (reported at
//! its line; its body runs to the end of the section). Never reads a file
//! or the environment except in [`test`] and [`items`].

use std::path::Path;

use super::super::Entry;
use super::super::placeholders::{find, mark_used};
use super::glob::glob;

/// Bodies of `for` loops run at most this many times in all in one load
/// (nested loops multiply): a loop over a few hundred sockets or files is
/// plenty, and a loop in a loop cannot run for minutes.
pub const MAX_REPETITIONS: usize = 10_000;
/// Blocks inside blocks: real configurations nest two or three.
pub const MAX_BLOCK_NESTING: usize = 16;

/// One `key = value` line of the section, as written.
#[derive(Debug, Clone)]
pub struct Line {
    pub key: String,
    pub raw: String,
    pub line: usize,
}

/// A test of an `if-*` block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    Env,
    Exists,
    File,
    Dir,
    Opt,
    Hostname,
}

/// What a `for*` block repeats over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Each {
    Words,
    Glob,
    Readline,
    Times,
}

/// What opens a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opener {
    /// A test, negated or not.
    If(Test, bool),
    For(Each),
    /// A uWSGI test podmaster cannot answer: an error, body skipped.
    Refused(&'static str),
}

impl Opener {
    fn is_if(self) -> bool {
        !matches!(self, Opener::For(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyword {
    Open(Opener),
    EndIf,
    EndFor,
    End,
    Else,
}

fn keyword(key: &str) -> Option<Keyword> {
    use Keyword::*;
    use Opener::*;
    Some(match key {
        "if-env" | "ifenv" => Open(If(Test::Env, false)),
        "if-not-env" => Open(If(Test::Env, true)),
        "if-exists" | "ifexists" => Open(If(Test::Exists, false)),
        "if-not-exists" => Open(If(Test::Exists, true)),
        "if-file" => Open(If(Test::File, false)),
        "if-not-file" => Open(If(Test::File, true)),
        "if-dir" | "ifdir" | "if-directory" => Open(If(Test::Dir, false)),
        "if-not-dir" => Open(If(Test::Dir, true)),
        "if-opt" => Open(If(Test::Opt, false)),
        "if-not-opt" => Open(If(Test::Opt, true)),
        "if-hostname" => Open(If(Test::Hostname, false)),
        "if-not-hostname" => Open(If(Test::Hostname, true)),
        "if-reload" | "if-not-reload" => Open(Refused("podmaster reads its configuration afresh at every reload")),
        "if-plugin" | "if-not-plugin" | "ifplugin" => Open(Refused("podmaster has no plugins")),
        "if-hostname-match" | "if-not-hostname-match" => {
            Open(Refused("podmaster has no regular expressions; use if-hostname"))
        }
        "for" => Open(For(Each::Words)),
        "for-glob" => Open(For(Each::Glob)),
        "for-readline" => Open(For(Each::Readline)),
        "for-times" => Open(For(Each::Times)),
        "endif" | "end-if" => EndIf,
        "endfor" | "end-for" => EndFor,
        "end" => End,
        "else" => Else,
        _ => return None,
    })
}

/// Whether `key` is a configuration-logic key (for the readers that
/// refuse them).
pub fn is_logic_key(key: &str) -> bool {
    keyword(key).is_some()
}

/// A line, or a block and what it holds.
#[derive(Debug)]
pub enum Node {
    Line(usize),
    Block(Block),
}

#[derive(Debug)]
pub struct Block {
    /// The opener's index in the lines.
    pub at: usize,
    pub opener: Opener,
    pub body: Vec<Node>,
    /// After `else`.
    pub otherwise: Vec<Node>,
}

/// A structural mistake: the index of the line it is about, and why.
pub type Mistake = (usize, String);

struct Frame {
    block: Block,
    in_else: bool,
}

/// The block tree of `lines`, and the mistakes found building it. `Err`:
/// blocks nested too deep (the section is not read).
pub fn parse(lines: &[Line]) -> Result<(Vec<Node>, Vec<Mistake>), Mistake> {
    let mut top: Vec<Node> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut mistakes = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let Some(kw) = keyword(&l.key) else {
            add(&mut stack, &mut top, Node::Line(i));
            continue;
        };
        match kw {
            Keyword::Open(opener) => {
                if stack.len() >= MAX_BLOCK_NESTING {
                    return Err((i, format!("blocks nested more than {MAX_BLOCK_NESTING} deep")));
                }
                let block = Block { at: i, opener, body: Vec::new(), otherwise: Vec::new() };
                stack.push(Frame { block, in_else: false });
            }
            Keyword::Else => match stack.last_mut() {
                None => mistakes.push((i, "no if-* block is open here".into())),
                Some(f) if !f.block.opener.is_if() => {
                    let at = &lines[f.block.at];
                    mistakes
                        .push((i, format!("else belongs to an if-* block, not to the {} at line {}", at.key, at.line)));
                }
                Some(f) if f.in_else => {
                    let at = &lines[f.block.at];
                    mistakes.push((i, format!("the {} at line {} already has an else", at.key, at.line)));
                }
                Some(f) => f.in_else = true,
            },
            closer => {
                let Some(f) = stack.pop() else {
                    let what = match closer {
                        Keyword::EndIf => "no if-* block is open here",
                        Keyword::EndFor => "no for block is open here",
                        _ => "no block is open here",
                    };
                    mistakes.push((i, what.into()));
                    continue;
                };
                let wrong = match closer {
                    Keyword::EndIf => !f.block.opener.is_if(),
                    Keyword::EndFor => f.block.opener.is_if(),
                    _ => false,
                };
                if wrong {
                    let at = &lines[f.block.at];
                    let right = if f.block.opener.is_if() { "endif" } else { "endfor" };
                    mistakes.push((i, format!("closes the {} at line {}, which takes {right}", at.key, at.line)));
                }
                add(&mut stack, &mut top, Node::Block(f.block));
            }
        }
    }
    while let Some(f) = stack.pop() {
        let right = if f.block.opener.is_if() { "endif" } else { "endfor" };
        mistakes.push((f.block.at, format!("this block is never closed (add {right})")));
        add(&mut stack, &mut top, Node::Block(f.block));
    }
    mistakes.sort_by_key(|(i, _)| *i);
    Ok((top, mistakes))
}

fn add(stack: &mut [Frame], top: &mut Vec<Node>, node: Node) {
    match stack.last_mut() {
        Some(f) if f.in_else => f.block.otherwise.push(node),
        Some(f) => f.block.body.push(node),
        None => top.push(node),
    }
}

/// Evaluates an `if-*` test on its (expanded) argument: whether it holds
/// (negation applied) and the value of `%(_)` inside the block. Relative
/// paths are taken in `dir` (the config file's directory, as `include`
/// and `@(file)` take them). `if-opt` marks the entry it reads as a
/// variable, as `%(key)` does.
pub fn test(test: Test, negated: bool, arg: &str, dir: &Path, entries: &mut [Entry]) -> Result<(bool, String), String> {
    if arg.is_empty() {
        return Err("needs a value to test".into());
    }
    let (name, want) = match arg.split_once('=') {
        Some((n, w)) => (n, Some(w)),
        None => (arg, None),
    };
    let (holds, context) = match test {
        Test::Env => {
            let value = match std::env::var_os(name) {
                None => None,
                Some(v) => {
                    Some(v.into_string().map_err(|_| format!("environment variable {name} is not valid UTF-8"))?)
                }
            };
            // Set and not empty (an empty value is how a Helm chart
            // leaves a variable off), or equal to the value asked for.
            let holds = match (&value, want) {
                (Some(v), Some(w)) => v == w,
                (Some(v), None) => !v.is_empty(),
                (None, _) => false,
            };
            (holds, value.unwrap_or_default())
        }
        Test::Opt => {
            let value = find(entries, name).map(str::to_owned);
            mark_used(entries, &[name.to_owned()]);
            let holds = match (&value, want) {
                (Some(v), Some(w)) => v == w,
                (Some(_), None) => true,
                (None, _) => false,
            };
            (holds, value.unwrap_or_default())
        }
        Test::Exists | Test::File | Test::Dir => {
            let path = if Path::new(arg).is_absolute() { Path::new(arg).to_owned() } else { dir.join(arg) };
            let holds = match test {
                Test::Exists => path.exists(),
                Test::File => path.is_file(),
                _ => path.is_dir(),
            };
            (holds, arg.to_owned())
        }
        Test::Hostname => {
            let host = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
            (host == arg, arg.to_owned())
        }
    };
    Ok((holds != negated, context))
}

/// The values `%(_)` takes in a `for*` block, in order, from its
/// (expanded) argument: the words of `for` (split at spaces and tabs),
/// the paths `for-glob` matches (see [`super::glob`]), the non-blank lines
/// of the `for-readline` file (trimmed; read with the config-file checks),
/// `1`..`N` for `for-times = N`. Relative paths are taken in `dir`.
pub fn items(each: Each, arg: &str, dir: &Path) -> Result<Vec<String>, String> {
    match each {
        Each::Words => Ok(arg.split_ascii_whitespace().map(str::to_owned).collect()),
        Each::Glob if arg.is_empty() => Err("needs a pattern".into()),
        Each::Glob => glob(arg, dir),
        Each::Readline => {
            let path = if Path::new(arg).is_absolute() { Path::new(arg).to_owned() } else { dir.join(arg) };
            let text = super::read_text(&path).map_err(|e| e.to_string())?;
            let lines: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
            if lines.len() > MAX_REPETITIONS {
                return Err(format!("more than {MAX_REPETITIONS} lines"));
            }
            Ok(lines)
        }
        Each::Times => {
            let n: usize = arg.trim().parse().map_err(|_| format!("expected a whole number, found {arg:?}"))?;
            if n > MAX_REPETITIONS {
                return Err(format!("{n} is more than the {MAX_REPETITIONS} repetitions allowed"));
            }
            Ok((1..=n).map(|i| i.to_string()).collect())
        }
    }
}
