//! Guest text: every string a plugin supplies that the host prints (to a terminal or a log)
//! or copies into its own records goes through here first, so escape sequences cannot reach a
//! terminal and a plugin cannot make the host's own lines any larger than these caps.

/// Most characters of a guest string shown in a diagnostic line or error message.
pub const MAX_SHOWN_CHARS: usize = 1_024;

/// Most characters of a guest string the host copies into its own telemetry records (fault
/// and refusal messages in `PLUGIN_FAULT`, `PLUGIN_DISABLED`).
pub const MAX_RECORDED_CHARS: usize = 1_024;

/// Control characters escaped (escape sequences, carriage returns that could overwrite our
/// own lines, NUL), and cut after `max_chars` characters with a note of how many more there
/// were. Works in one pass over at most `max_chars + 1` characters, so a 10 MB string costs
/// no more than a short one.
pub fn capped(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars * 2));
    let mut chars = text.char_indices();
    for (_, c) in chars.by_ref().take(max_chars) {
        if must_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if let Some((rest_start, _)) = chars.next() {
        // Count what is left by bytes: exact enough, and O(1).
        out.push_str(&format!(
            "… ({} more bytes)",
            text.len().saturating_sub(rest_start)
        ));
    }
    out
}

/// Whether `c` could change how a terminal shows the text around it: control characters,
/// and the invisible format characters that reorder or split text (bidirectional overrides
/// and isolates, line and paragraph separators), which can spoof a log line.
fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// [`capped`] at [`MAX_SHOWN_CHARS`]: for any guest string in a message or on a terminal.
pub fn shown(text: &str) -> String {
    capped(text, MAX_SHOWN_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(shown("a\u{1b}[2Jb\r\n\0"), "a\\u{1b}[2Jb\\r\\n\\u{0}");
        assert_eq!(shown("C1 \u{9b}31m"), "C1 \\u{9b}31m");
        assert_eq!(shown("plain ünïcode"), "plain ünïcode");
        assert_eq!(shown("ok\u{202e}gnp.exe"), "ok\\u{202e}gnp.exe");
        assert_eq!(shown("a\u{2028}b\u{2066}c"), "a\\u{2028}b\\u{2066}c");
    }

    #[test]
    fn long_text_is_cut_with_a_count() {
        let long = "x".repeat(10_000_000);
        let out = shown(&long);
        assert_eq!(
            out.chars().count(),
            MAX_SHOWN_CHARS + "… (9998976 more bytes)".len() - 2
        );
        assert!(out.ends_with("… (9998976 more bytes)"), "{}", &out[1000..]);
        assert_eq!(capped("abc", 3), "abc");
        assert_eq!(capped("abcd", 3), "abc… (1 more bytes)");
    }
}
