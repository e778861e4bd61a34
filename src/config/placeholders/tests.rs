//! The expansion rules, one table per rule: which `%` sequences are magic,
//! placeholders inside placeholders, maths through `%( )`, `%(_)`,
//! `@(exec://)`, and the errors with their exact text.

use super::*;
use crate::config::Origin;

fn magic() -> Magic {
    Magic::single(FileMagic {
        shown: "/srv/app/app.ini".into(),
        abs: "/srv/app/app.ini".into(),
        given: "app.ini".into(),
        section: "uwsgi".into(),
    })
}

fn entries() -> Vec<Entry> {
    let at = Origin::File { path: "/srv/app/app.ini".into(), line: 1 };
    [("processes", "4"), ("base", "/srv"), ("name", "web"), ("shell", "echo")]
        .iter()
        .map(|(k, v)| Entry::new(*k, *v, at.clone()))
        .collect()
}

/// Expands `raw` with `%(_)` = `context`; exec:// allowed.
fn ex(raw: &str, context: Option<&str>) -> Result<String, String> {
    let (m, failed, mut budget) = (magic(), HashSet::from(["broken".to_string()]), ExecBudget::default());
    let mut e =
        Expander { magic: &m, context, failed: &failed, exec: Some(&mut budget), request_log: false, used: Vec::new() };
    e.expand(raw, &entries()).map_err(|e| e.to_string())
}

#[test]
fn percent_is_magic_only_before_a_letter_digit_or_bracket() {
    let k = std::thread::available_parallelism().unwrap().get().to_string();
    let cases = [
        ("660", "660"),
        ("50%", "50%"),
        ("80% ", "80% "),
        ("80% of it", "80% of it"),
        ("100%%", "100%"),
        ("%%d", "%d"),
        ("a%-b%.c%,d%/e", "a%-b%.c%,d%/e"),
        ("%", "%"),
        ("%é", "%é"),
        ("%d", "/srv/app/"),
        ("%n.sock", "app.sock"),
        ("%0-%1", "srv-app"),
        ("%k", &k),
        ("x%[y", "x\x1by"),
    ];
    for (raw, want) in cases {
        assert_eq!(ex(raw, None).as_deref(), Ok(want), "{raw:?}");
    }
    for (raw, letter) in [("%q", 'q'), ("50%fff", 'f'), ("a%zb", 'z'), ("%A", 'A')] {
        let err = ex(raw, None).unwrap_err();
        assert_eq!(err, format!("unknown magic variable %{letter} (write %% for a literal %)"), "{raw:?}");
    }
}

#[test]
fn placeholders_maths_and_context() {
    let k: i64 = std::thread::available_parallelism().unwrap().get() as i64;
    let cases = [
        ("%(processes)", "4".to_string()),
        ("%(processes + 1)", "5".into()),
        ("%(processes - 1)", "3".into()),
        ("%(processes / 2)", "2".into()),
        ("%(%k * 2)", (k * 2).to_string()),
        ("x%(processes * %k)y", format!("x{}y", 4 * k)),
        ("%(name processes)", "web4".into()),
        ("%(_)", "ctx".into()),
        ("%(_ processes)", "ctx4".into()),
        ("%(base)/%(_)", "/srv/ctx".into()),
        // Inside out: $( ) gives the name %( ) looks up, @( ) reads a
        // file %d names.
        ("$(PODMASTER_PH_TEST_UNSET:-%(base))", "/srv".into()),
        ("%($(PODMASTER_PH_TEST_UNSET:-name))", "web".into()),
        ("$(PODMASTER_PH_TEST_UNSET:-50%)", "50%".into()),
        ("$(PODMASTER_PH_TEST_UNSET:-(a))", "(a)".into()),
    ];
    for (raw, want) in cases {
        assert_eq!(ex(raw, Some("ctx")), Ok(want), "{raw:?}");
    }
}

#[test]
fn errors_name_what_failed() {
    let cases = [
        ("%(nope)", "placeholder %(nope) refers to a key that is not set before it"),
        ("%(nope + 1)", "placeholder %(nope) refers to a key that is not set before it"),
        ("%(processes / 0)", "%(processes / 0): division by zero"),
        ("%(name + 1)", "%(name + 1): \"web\" is not a whole number"),
        ("%(_)", "%(_) has a value only inside an if-* or for block"),
        ("%(broken)", "placeholder %(broken) refers to a key whose value could not be expanded"),
        ("%(processes", "unclosed `%(` in \"%(processes\""),
        ("$(a(b)", "unclosed `$(` in \"$(a(b)\""),
        (
            "@(sym://main)",
            "@(sym://main): only files and exec:// can be read (uWSGI's other schemes are not supported)",
        ),
        (
            "$(PODMASTER_PH_TEST_UNSET)",
            "environment variable PODMASTER_PH_TEST_UNSET is not set (use $(PODMASTER_PH_TEST_UNSET:-default) for a fallback)",
        ),
    ];
    for (raw, want) in cases {
        assert_eq!(ex(raw, None).unwrap_err(), want, "{raw:?}");
    }
    let deep = format!("{}x{}", "$(A:-".repeat(MAX_NESTING + 2), ")".repeat(MAX_NESTING + 2));
    assert_eq!(ex(&deep, None).unwrap_err(), format!("placeholders nested more than {MAX_NESTING} levels deep"));
}

#[test]
fn growth_is_bounded_but_written_text_is_not() {
    let long = "x".repeat(MAX_VALUE_BYTES + 10);
    assert_eq!(ex(&long, None).map(|v| v.len()), Ok(long.len()), "text as written");
    let at = Origin::File { path: "a.ini".into(), line: 1 };
    let big = vec![Entry::new("big", "y".repeat(MAX_VALUE_BYTES / 2 + 1), at)];
    let (m, failed) = (magic(), HashSet::new());
    let mut e =
        Expander { magic: &m, context: None, failed: &failed, exec: None, request_log: false, used: Vec::new() };
    assert_eq!(e.expand("%(big)", &big).map(|v| v.len()).ok(), Some(MAX_VALUE_BYTES / 2 + 1));
    assert_eq!(e.expand("%(big)%(big)", &big).unwrap_err().to_string(), ExpandError::TooLong.to_string());
    assert_eq!(e.expand("%(big big)", &big).unwrap_err().to_string(), ExpandError::TooLong.to_string());
    assert_eq!(e.used, ["big", "big", "big", "big", "big"]);
}

#[test]
fn exec_output_and_failures() {
    let cases = [
        ("@(exec://echo hello)", Ok("hello")),
        ("@(exec://printf '%%s' abc | wc -c | tr -d ' ')x", Ok("3x")),
        // $( ) inside a command is the shell's, %( ) and magic are ours.
        ("@(exec://echo $(echo %(name)))", Ok("web")),
        ("@(exec://%(shell) %n)", Ok("app")),
        ("@(exec://exit 7)", Err("@(exec://exit 7): exited with status 7")),
        ("@(exec://echo $(%(nope)))", Err("placeholder %(nope) refers to a key that is not set before it")),
    ];
    for (raw, want) in cases {
        assert_eq!(ex(raw, None), want.map(str::to_owned).map_err(str::to_owned), "{raw:?}");
    }
}

#[test]
fn yaml_values_refuse_exec_and_mark_used_keys() {
    let ctx = FileCtx { path: Path::new("/srv/app/a.yaml"), abs: "/srv/app/a.yaml".into() };
    let mut e = entries();
    assert_eq!(
        expand_into("@(exec://echo hi)", &ctx, &mut e).unwrap_err().to_string(),
        "@(exec://...) is supported in ini files only"
    );
    assert!(expand_into("%(name)%(nope)", &ctx, &mut e).is_err());
    assert!(e.iter().find(|x| x.key == "name").unwrap().variable, "marked though the value failed");
    assert_eq!(expand_into("%n-%e-%x", &ctx, &mut e).unwrap(), "a-yaml-uwsgi");
}

/// uWSGI's request-log variables are not placeholders: in `log-format`
/// an unknown `%(name)` stays as written, a known one still expands.
#[test]
fn request_log_formats_keep_their_variables() {
    let (m, failed) = (magic(), HashSet::new());
    let mut e = Expander { magic: &m, context: None, failed: &failed, exec: None, request_log: true, used: Vec::new() };
    let raw = "%(addr) [%(ltime)] \"%(method) %(uri)\" %(status) %(name) %(_) %n";
    assert_eq!(e.expand(raw, &entries()).unwrap(), "%(addr) [%(ltime)] \"%(method) %(uri)\" %(status) web %(_) app");
    assert_eq!(
        e.expand("%q", &entries()).unwrap_err().to_string(),
        "unknown magic variable %q (write %% for a literal %)"
    );
}
