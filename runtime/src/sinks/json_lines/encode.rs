//! The JSON-lines encoding: one compact JSON value a line, safe to show on a terminal.
//!
//! Strings are escaped for a terminal as well as for JSON: besides what JSON requires (`"`,
//! `\\`, C0 controls), DEL and the C1 controls (a CSI can start an escape sequence) are written
//! as `\\u` escapes, so no guest text in a line can drive the terminal that shows it. The JSON
//! value is the same.

use std::io::{self, Write};

use serde::Serialize;

/// Writes `value` as one line to `out`.
pub fn write_line<W: Write, T: Serialize + ?Sized>(out: &mut W, value: &T) -> io::Result<()> {
    let mut serializer = serde_json::Serializer::with_formatter(&mut *out, TerminalSafeFormatter);
    value.serialize(&mut serializer)?;
    out.write_all(b"\n")
}

/// serde_json's compact output, with DEL and C1 control characters escaped too.
struct TerminalSafeFormatter;

impl serde_json::ser::Formatter for TerminalSafeFormatter {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (index, c) in fragment.char_indices() {
            if c == '\u{7f}' || ('\u{80}'..='\u{9f}').contains(&c) {
                writer.write_all(&fragment.as_bytes()[start..index])?;
                write!(writer, "\\u{:04x}", u32::from(c))?;
                start = index + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}
