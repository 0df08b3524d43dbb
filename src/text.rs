//! Free text that people write and others read: repository descriptions
//! and commit authors. One rule for every path it arrives by (the API, the
//! configuration, a commit object), with limits counted in characters.

/// Longest commit author kept, in characters.
pub const MAX_AUTHOR_CHARS: usize = 512;

/// Longest repository description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;

/// Characters that change how the text around them is shown without being
/// seen: bidirectional overrides and isolates (which can make a name read
/// as another), and zero-width characters (which make two names look the
/// same).
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// Why `text` is not acceptable as free text of at most `max` characters;
/// `newlines` allows line breaks (a description, not a name).
pub fn check(text: &str, max: usize, newlines: bool) -> Result<(), String> {
    let count = text.chars().count();
    if count > max {
        return Err(format!("must be at most {max} characters (has {count})"));
    }
    if let Some(bad) = text
        .chars()
        .find(|c| (c.is_control() && !(newlines && *c == '\n')) || invisible(*c))
    {
        return Err(format!(
            "must not contain control, bidirectional or zero-width characters (found U+{:04X})",
            u32::from(bad)
        ));
    }
    Ok(())
}

/// `text` made acceptable: offending characters replaced with U+FFFD and
/// cut to `max` characters. For text the daemon reads (a commit's author)
/// rather than is sent: the build goes ahead, the oddity stays visible.
pub fn sanitize(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || invisible(c) {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_characters_and_hidden_characters_are_refused() {
        assert!(check(&"é".repeat(1000), 1000, false).is_ok());
        let err = check(&"é".repeat(1001), 1000, false).unwrap_err();
        assert!(err.contains("1000 characters (has 1001)"), "{err}");
        assert!(check("line\nline", 100, true).is_ok());
        assert!(check("line\nline", 100, false).is_err());
        for bad in [
            "admin\u{202E}nimda",
            "a\u{2066}b",
            "zero\u{200B}width",
            "joiner\u{200D}",
            "bom\u{FEFF}",
            "bell\u{7}",
            "esc\u{1B}[31m",
            "cr\r",
        ] {
            let err = check(bad, 100, true).unwrap_err();
            assert!(err.contains("U+"), "{bad:?}: {err}");
        }
        assert!(check("Ann Example <ann@example.org>", 512, false).is_ok());
        assert!(check("日本語の説明", 6, false).is_ok());
    }

    #[test]
    fn sanitized_text_passes_the_check() {
        let text = format!("A\u{202E}n\u{200B}n\u{1B} {}", "x".repeat(600));
        let clean = sanitize(&text, 512);
        assert!(check(&clean, 512, false).is_ok(), "{clean:?}");
        assert!(clean.starts_with("A\u{FFFD}n\u{FFFD}n\u{FFFD} "));
        assert_eq!(clean.chars().count(), 512);
    }
}
