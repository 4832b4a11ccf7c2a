//! The rule for the short pieces of text that name things: kinds, runner names, hostnames,
//! label keys and values, tags, resource names, idempotency keys, organization ids.
//!
//! They end up in logs, terminals, metrics labels, SQL text columns (PostgreSQL refuses NUL in
//! text) and other people's scripts, so none of them may hold a control character (NUL, the
//! other C0 characters, DEL and the C1 range: what `char::is_control` calls control). Message
//! texts (log lines, error messages, progress messages) are prose and are not names: they keep
//! newlines and tabs, and are not checked here.
//!
//! The wire schema states the same rule as a pattern (`muster_api::NAME_PATTERN`).

use crate::job::{JobSpecError, spec_error};

/// How long a piece of text may be and whether it may be empty or blank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextRule {
    /// Fewest characters (Unicode scalar values, as JSON Schema's `minLength` counts them);
    /// 0 lets the text be empty.
    pub min_chars: usize,
    pub max_chars: usize,
    /// Refuse text that is only white space (a kind of "  " would never match anything).
    pub not_blank: bool,
}

impl TextRule {
    /// 1 to `max_chars` characters, not only white space.
    pub const fn name(max_chars: usize) -> TextRule {
        TextRule {
            min_chars: 1,
            max_chars,
            not_blank: true,
        }
    }

    /// 1 to `max_chars` characters (white space counts as content).
    pub const fn key(max_chars: usize) -> TextRule {
        TextRule {
            min_chars: 1,
            max_chars,
            not_blank: false,
        }
    }

    /// 0 to `max_chars` characters.
    pub const fn optional(max_chars: usize) -> TextRule {
        TextRule {
            min_chars: 0,
            max_chars,
            not_blank: false,
        }
    }
}

/// What is wrong with a piece of text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TextProblem {
    #[error("must not be empty")]
    Empty,
    #[error("must not be only white space")]
    Blank,
    #[error("must be at most {max_chars} characters")]
    TooLong { max_chars: usize },
    #[error("must not contain control characters (found U+{code:04X} at byte {at})")]
    ControlCharacter { code: u32, at: usize },
}

/// Check `text` against `rule`.
pub fn check_text(text: &str, rule: TextRule) -> Result<(), TextProblem> {
    // Counting stops past the limit, so a huge text costs no more than a long one.
    let length = text.chars().take(rule.max_chars.saturating_add(1)).count();
    if length < rule.min_chars {
        return Err(TextProblem::Empty);
    }
    if rule.not_blank && !text.is_empty() && text.trim().is_empty() {
        return Err(TextProblem::Blank);
    }
    if length > rule.max_chars {
        return Err(TextProblem::TooLong {
            max_chars: rule.max_chars,
        });
    }
    if let Some((at, control)) = text.char_indices().find(|(_, c)| c.is_control()) {
        return Err(TextProblem::ControlCharacter {
            code: u32::from(control),
            at,
        });
    }
    Ok(())
}

/// [`check_text`], with the error naming `field`.
pub fn check_field(field: &str, text: &str, rule: TextRule) -> Result<(), JobSpecError> {
    check_text(text, rule).map_err(|problem| spec_error(field, problem.to_string()))
}

/// [`check_text`] for a map key: the error names the map (`field`) and shows the key, escaped,
/// since a key with a control character cannot be written into a field path readably.
pub fn check_key(field: &str, key: &str, rule: TextRule) -> Result<(), JobSpecError> {
    check_text(key, rule).map_err(|problem| {
        let shown: String = key.chars().take(64).collect();
        spec_error(field, format!("key \"{}\" {problem}", shown.escape_debug()))
    })
}

/// Longest job kind, in characters.
pub const MAX_KIND_LEN: usize = 200;
/// Longest runner name, in characters.
pub const MAX_RUNNER_NAME_LEN: usize = 200;
/// Longest organization id, in characters.
pub const MAX_ORGANIZATION_ID_LEN: usize = 200;
/// Longest hostname or version a runner reports, in characters.
pub const MAX_RUNNER_REPORT_LEN: usize = 256;

/// A job kind, in a submission or among the kinds a runner claims.
pub fn check_kind(field: &str, kind: &str) -> Result<(), JobSpecError> {
    check_field(field, kind, TextRule::name(MAX_KIND_LEN))
}

/// A runner's name as registered, with surrounding white space dropped. The length is checked
/// as sent, so the limit the schema states holds for what the caller sends.
pub fn runner_name(name: &str) -> Result<String, JobSpecError> {
    check_field("name", name, TextRule::name(MAX_RUNNER_NAME_LEN))?;
    Ok(name.trim().to_string())
}

/// An organization id given by a caller.
pub fn check_organization_id(id: &str) -> Result<(), JobSpecError> {
    check_field(
        "organization_id",
        id,
        TextRule::key(MAX_ORGANIZATION_ID_LEN),
    )
}

/// What a runner reports about itself in a heartbeat (`hostname`, `version`).
pub fn check_runner_report(field: &str, text: &str) -> Result<(), JobSpecError> {
    check_field(field, text, TextRule::optional(MAX_RUNNER_REPORT_LEN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_character_is_refused_wherever_it_stands() {
        let controls = (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32);
        for control in controls {
            for text in [
                format!("{control}"),
                format!("a{control}"),
                format!("{control}b"),
                format!("a{control}b"),
            ] {
                let problem = check_text(&text, TextRule::optional(100))
                    .expect_err("a control character is refused");
                assert!(
                    matches!(problem, TextProblem::ControlCharacter { code, .. } if code == u32::from(control)),
                    "{text:?}: {problem}"
                );
            }
        }
    }

    #[test]
    fn ordinary_text_passes() {
        for text in [
            "exec",
            "gpu-box-1",
            "zone=eu",
            "ünïcødé ✓",
            "a b",
            "x".repeat(200).as_str(),
        ] {
            assert_eq!(check_text(text, TextRule::name(200)), Ok(()), "{text:?}");
        }
        assert_eq!(check_text("", TextRule::optional(10)), Ok(()));
    }

    #[test]
    fn lengths_and_blanks() {
        assert_eq!(check_text("", TextRule::name(5)), Err(TextProblem::Empty));
        assert_eq!(check_text("", TextRule::key(5)), Err(TextProblem::Empty));
        assert_eq!(
            check_text("   ", TextRule::name(5)),
            Err(TextProblem::Blank)
        );
        assert_eq!(check_text("   ", TextRule::key(5)), Ok(()));
        assert_eq!(
            check_text("abcdef", TextRule::key(5)),
            Err(TextProblem::TooLong { max_chars: 5 })
        );
        // Characters, as JSON Schema counts them, not bytes: "é" is two bytes but one character.
        assert_eq!(check_text("ééééé", TextRule::key(5)), Ok(()));
        assert!(check_text("éééééé", TextRule::key(5)).is_err());
    }

    #[test]
    fn errors_name_the_field_and_show_the_key() {
        let error =
            check_field("hostname", "a\u{0}b", TextRule::optional(10)).expect_err("NUL is refused");
        assert_eq!(error.field, "hostname");
        assert!(error.problem.contains("U+0000"), "{error}");

        let error =
            check_key("requirements.labels", "g\u{1b}pu", TextRule::key(10)).expect_err("ESC");
        assert_eq!(error.field, "requirements.labels");
        assert!(error.to_string().contains(r#"key "g\u{1b}pu""#), "{error}");
        assert!(error.problem.contains("U+001B"), "{error}");

        let error = check_key("labels", "", TextRule::key(10)).expect_err("empty key");
        assert!(error.to_string().contains("empty"), "{error}");
    }

    #[test]
    fn runner_names_are_trimmed_then_checked() {
        assert_eq!(runner_name("  laptop  "), Ok("laptop".to_string()));
        assert!(
            runner_name("laptop\t").is_err(),
            "a tab is a control character"
        );
        assert_eq!(runner_name("   ").expect_err("blank").field, "name");
        assert_eq!(runner_name("lap\u{0}top").expect_err("NUL").field, "name");
        assert!(runner_name(&"x".repeat(201)).is_err());
    }

    #[test]
    fn kinds_and_reports() {
        assert_eq!(check_kind("kind", "exec"), Ok(()));
        assert_eq!(
            check_kind("kinds[2]", " ").expect_err("blank").field,
            "kinds[2]"
        );
        assert_eq!(check_runner_report("version", ""), Ok(()));
        assert_eq!(
            check_runner_report("version", "1.0\n")
                .expect_err("newline")
                .field,
            "version"
        );
        assert!(check_runner_report("hostname", &"h".repeat(257)).is_err());
        assert!(check_organization_id("").is_err());
        assert!(check_organization_id("acme\u{7f}").is_err());
    }
}
