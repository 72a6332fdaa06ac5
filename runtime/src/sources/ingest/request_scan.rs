//! The fast path for request lines: most of a stream, and all of them in the shape bridges
//! write (`{"event":"request","role":…,"node":…,"time":…,…}`). A hand-written scanner reads
//! such a line into the same fields serde's [`RawLine`](super::RawLine) would hold, several times faster than
//! serde's derived visitor. It gives up (returns `None`) on anything outside that shape: an
//! escape or control character in a string, a key it does not read, a repeated key, a
//! `context` other than `{}` or `null`, a number JSON does not allow or a field cannot hold.
//! [`decode_line`](super::decode_line) then hands the line to serde_json, so every error
//! message and every odd-but-valid line is serde's, and the checks after parsing are shared.

use std::borrow::Cow;

use super::RequestLine;

/// The keys the scanner reads, one bit each, so a repeated key is seen.
#[derive(Clone, Copy)]
enum Key {
    Event,
    Role,
    Node,
    Time,
    RequestType,
    Name,
    ResponseTime,
    ResponseLength,
    Exception,
    ExceptionType,
    StartTime,
    Url,
    StatusCode,
    Context,
}

impl Key {
    fn parse(key: &str) -> Option<Self> {
        Some(match key {
            "event" => Self::Event,
            "role" => Self::Role,
            "node" => Self::Node,
            "time" => Self::Time,
            "request_type" => Self::RequestType,
            "name" => Self::Name,
            "response_time" => Self::ResponseTime,
            "response_length" => Self::ResponseLength,
            "exception" => Self::Exception,
            "exception_type" => Self::ExceptionType,
            "start_time" => Self::StartTime,
            "url" => Self::Url,
            "status_code" => Self::StatusCode,
            "context" => Self::Context,
            _ => return None,
        })
    }

    fn bit(self) -> u32 {
        1 << self as u32
    }
}

/// The keys in the order bridges write them, each with its quotes and colon: the scanner
/// first tries the key that follows the last one here, which costs one comparison.
const BRIDGE_ORDER: [(&str, Key); 14] = [
    ("\"event\":", Key::Event),
    ("\"role\":", Key::Role),
    ("\"node\":", Key::Node),
    ("\"time\":", Key::Time),
    ("\"request_type\":", Key::RequestType),
    ("\"name\":", Key::Name),
    ("\"response_time\":", Key::ResponseTime),
    ("\"response_length\":", Key::ResponseLength),
    ("\"exception\":", Key::Exception),
    ("\"exception_type\":", Key::ExceptionType),
    ("\"start_time\":", Key::StartTime),
    ("\"url\":", Key::Url),
    ("\"status_code\":", Key::StatusCode),
    ("\"context\":", Key::Context),
];

/// The keys serde requires (no `default`).
const REQUIRED: u32 =
    1 << Key::Event as u32 | 1 << Key::Role as u32 | 1 << Key::Node as u32 | 1 << Key::Time as u32;

/// Reads `line` if it is a request line of the common shape; `None` sends it to serde.
pub(super) fn scan(line: &str) -> Option<RequestLine<'_>> {
    let mut scanner = Scanner { line, pos: 0 };
    let mut raw = RequestLine::default();
    let mut is_request = false;
    let mut seen = 0u32;
    scanner.skip_whitespace();
    scanner.expect(b'{')?;
    // Where in BRIDGE_ORDER the next key is expected.
    let mut expected = 0;
    loop {
        scanner.skip_whitespace();
        let predicted = BRIDGE_ORDER[expected..]
            .iter()
            .take(2) // `exception_type` is written only for failures
            .position(|(text, _)| scanner.literal(text));
        let key = match predicted {
            Some(offset) => BRIDGE_ORDER[expected + offset].1,
            None => {
                let key = Key::parse(scanner.string()?)?;
                scanner.skip_whitespace();
                scanner.expect(b':')?;
                key
            }
        };
        // BRIDGE_ORDER lists the keys in the order of `Key`.
        expected = (key as usize + 1) % BRIDGE_ORDER.len();
        if seen & key.bit() != 0 {
            return None;
        }
        seen |= key.bit();
        scanner.skip_whitespace();
        match key {
            Key::Event => is_request = scanner.string()? == "request",
            Key::Role => raw.role = Cow::Borrowed(scanner.string()?),
            Key::Node => raw.node = Cow::Borrowed(scanner.string()?),
            Key::Time => raw.time = scanner.float()?,
            Key::RequestType => raw.request_type = scanner.or_null(Scanner::cow)?,
            Key::Name => raw.name = scanner.or_null(Scanner::cow)?,
            Key::ResponseTime => raw.response_time = scanner.or_null(Scanner::float)?,
            Key::ResponseLength => raw.response_length = scanner.or_null(Scanner::unsigned)?,
            Key::Exception => raw.exception = scanner.or_null(Scanner::cow)?,
            Key::ExceptionType => raw.exception_type = scanner.or_null(Scanner::cow)?,
            Key::StartTime => raw.start_time = scanner.or_null(Scanner::float)?,
            Key::Url => raw.url = scanner.or_null(Scanner::cow)?,
            Key::StatusCode => {
                raw.status_code = scanner.or_null(|scanner| {
                    scanner.unsigned().and_then(|code| u16::try_from(code).ok())
                })?
            }
            // serde keeps the raw text, which decode_line drops when it is exactly `{}` or
            // `null`; any other context (even `{ }`) needs serde's RawValue.
            Key::Context => {
                if !scanner.literal("null") && !scanner.literal("{}") {
                    return None;
                }
            }
        }
        scanner.skip_whitespace();
        match scanner.next_byte()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    scanner.skip_whitespace();
    let complete = scanner.pos == line.len() && seen & REQUIRED == REQUIRED;
    (complete && is_request).then_some(raw)
}

/// The index of the first quote, backslash or control character in `bytes`: the end of a
/// JSON string, or what makes it need serde. Eight bytes at a time: the strings of a request
/// line are short, and memchr's setup costs more than it saves on them.
fn special_byte(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("chunks of 8"));
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        // A byte's high bit is set where it is zero (after the xor) or below 0x20; a false
        // mark can only sit above a true one, so the lowest mark is the first such byte.
        let marks = (quote.wrapping_sub(ONES) & !quote
            | backslash.wrapping_sub(ONES) & !backslash
            | word.wrapping_sub(ONES * 0x20) & !word)
            & HIGHS;
        if marks != 0 {
            return Some(offset + (marks.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)
        .map(|index| offset + index)
}

/// `digits` (`123` or `123.456`, no sign or exponent) as the nearest f64, when that is one
/// division of exact values (Clinger's fast path: a mantissa below 2^53 and at most 22
/// decimals), which IEEE arithmetic rounds correctly; `None` sends the text to `str::parse`.
/// Python writes `time.time()` with 16 or 17 digits, so most times take this path.
fn exact_decimal(digits: &[u8]) -> Option<f64> {
    const POWERS: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    let mut mantissa = 0u64;
    let mut decimals = 0;
    for (index, &byte) in digits.iter().enumerate() {
        if byte == b'.' {
            decimals = digits.len() - index - 1;
        } else {
            mantissa = mantissa
                .checked_mul(10)?
                .checked_add(u64::from(byte - b'0'))?;
        }
    }
    if mantissa > 1 << 53 {
        return None;
    }
    Some(mantissa as f64 / *POWERS.get(decimals)?)
}

/// A cursor over one line.
struct Scanner<'a> {
    line: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn rest(&self) -> &'a [u8] {
        &self.line.as_bytes()[self.pos..]
    }

    fn next_byte(&mut self) -> Option<u8> {
        let byte = *self.rest().first()?;
        self.pos += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next_byte()? == byte).then_some(())
    }

    /// JSON's whitespace: space, tab, line feed, carriage return.
    fn skip_whitespace(&mut self) {
        let skipped = self
            .rest()
            .iter()
            .take_while(|byte| matches!(byte, b' ' | b'\t' | b'\n' | b'\r'))
            .count();
        self.pos += skipped;
    }

    /// Consumes `word` if the line continues with it.
    fn literal(&mut self, word: &str) -> bool {
        let found = self.rest().starts_with(word.as_bytes());
        if found {
            self.pos += word.len();
        }
        found
    }

    /// A string without escapes or control characters, borrowed from the line.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let rest = self.rest();
        let end = special_byte(rest)?;
        if rest[end] != b'"' {
            return None;
        }
        let start = self.pos;
        self.pos += end + 1;
        // Both ends sit next to an ASCII quote, so they are character boundaries.
        self.line.get(start..start + end)
    }

    fn cow(&mut self) -> Option<Cow<'a, str>> {
        self.string().map(Cow::Borrowed)
    }

    /// `null` as `Some(None)`, a value `read` accepts as `Some(Some(value))`.
    fn or_null<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.literal("null") {
            Some(None)
        } else {
            read(self).map(Some)
        }
    }

    /// The digits at the cursor: how many.
    fn digits(&self, from: usize) -> usize {
        self.line.as_bytes()[from..]
            .iter()
            .take_while(|byte| byte.is_ascii_digit())
            .count()
    }

    /// A JSON number, as serde_json (with `float_roundtrip`) reads it into an `f64`.
    fn float(&mut self) -> Option<f64> {
        let bytes = self.line.as_bytes();
        let start = self.pos;
        let negative = bytes.get(start) == Some(&b'-');
        let digits_start = start + usize::from(negative);
        let whole = self.digits(digits_start);
        // JSON: at least one digit, and no leading zero before another digit.
        if whole == 0 || (whole > 1 && bytes[digits_start] == b'0') {
            return None;
        }
        let mut end = digits_start + whole;
        if bytes.get(end) == Some(&b'.') {
            let fraction = self.digits(end + 1);
            if fraction == 0 {
                return None;
            }
            end += 1 + fraction;
        }
        let plain_end = end;
        if matches!(bytes.get(end), Some(b'e' | b'E')) {
            end += 1;
            if matches!(bytes.get(end), Some(b'+' | b'-')) {
                end += 1;
            }
            let exponent = self.digits(end);
            if exponent == 0 {
                return None;
            }
            end += exponent;
        }
        let exact = (plain_end == end)
            .then(|| exact_decimal(&bytes[digits_start..end]))
            .flatten();
        let value = match exact {
            Some(value) if negative => -value,
            Some(value) => value,
            None => self.line[start..end].parse().ok()?,
        };
        // serde_json refuses a number too large for an f64 rather than making it infinite.
        if !value.is_finite() {
            return None;
        }
        self.pos = end;
        Some(value)
    }

    /// A JSON integer from 0 to `u64::MAX`, as serde reads it into an unsigned field.
    fn unsigned(&mut self) -> Option<u64> {
        let start = self.pos;
        let count = self.digits(start);
        let bytes = self.line.as_bytes();
        if count == 0 || (count > 1 && bytes[start] == b'0') {
            return None;
        }
        // A fraction or an exponent makes it a float, which an integer field refuses.
        if matches!(bytes.get(start + count), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let value = self.line[start..start + count].parse().ok()?;
        self.pos = start + count;
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Every field the scanner can set, as text that tells values apart (`{:?}` of an f64 is
    /// its shortest round-trip form).
    fn fields(raw: &RequestLine<'_>) -> String {
        format!(
            "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
            raw.role,
            raw.node,
            raw.time,
            raw.request_type,
            raw.name,
            raw.response_time,
            raw.response_length,
            raw.exception,
            raw.exception_type,
            raw.start_time,
            raw.url,
            raw.status_code,
            raw.context.map(|context| context.get())
        )
    }

    /// What serde makes of a request line, with the empty context decode_line drops dropped;
    /// an error for any other event.
    fn serde_fields(line: &str) -> Result<String, String> {
        let raw: super::super::RawLine<'_> =
            serde_json::from_str(line).map_err(|e| e.to_string())?;
        if raw.event != "request" {
            return Err(format!("event {}", raw.event));
        }
        let mut request = RequestLine::from(raw);
        request.context = request.context.filter(|context| context.get() != "{}");
        Ok(fields(&request))
    }

    /// The scanner must read `line`, and read it as serde does.
    fn assert_same(line: &str) {
        let fast = scan(line).unwrap_or_else(|| panic!("the fast path refused {line}"));
        assert_eq!(Ok(fields(&fast)), serde_fields(line), "{line}");
    }

    const BRIDGE_LINE: &str = r#"{"event":"request","role":"worker","node":"worker-0","time":1764666000.1234,"request_type":"GET","name":"/items/[id]","response_time":12.34,"response_length":512,"exception":null,"start_time":1764666000.111,"url":"http://127.0.0.1:8089/items/7","status_code":200,"context":{}}"#;

    #[test]
    fn reads_the_lines_bridges_write_as_serde_does() {
        assert_same(BRIDGE_LINE);
        // A failure with its class; no status code; Python's exponent form; a non-ASCII name.
        assert_same(
            r#"{"event":"request","role":"standalone","node":"n","time":1.5e9,"request_type":"POST","name":"/é","response_time":1e-05,"response_length":0,"exception":"ConnectionRefusedError(111, 'Connection refused')","exception_type":"ConnectionRefusedError","start_time":1500000000.0,"url":null,"status_code":null,"context":null}"#,
        );
        // json.dumps's default separators, keys in another order, integers where floats go.
        assert_same(
            r#" { "node": "m", "time": 1700000000, "event": "request", "role": "master", "name": "x", "request_type": "GET", "response_time": 0 } "#,
        );
    }

    #[test]
    fn the_bridge_order_lists_the_keys_in_their_order() {
        for (index, (text, key)) in BRIDGE_ORDER.iter().enumerate() {
            assert_eq!(*key as usize, index);
            let name = &text[1..text.len() - 2];
            assert_eq!(
                Key::parse(name).map(|key| key as usize),
                Some(index),
                "{text}"
            );
        }
    }

    #[test]
    fn leaves_everything_else_to_serde() {
        let refused = [
            // Escapes and control characters.
            BRIDGE_LINE.replace("/items/[id]", r#"/a\"b"#),
            BRIDGE_LINE.replace("/items/[id]", "/a\tb"),
            BRIDGE_LINE.replace("\"name\"", r#""n\u0061me""#),
            // Keys: unknown, repeated, missing.
            BRIDGE_LINE.replace("\"url\"", "\"link\""),
            BRIDGE_LINE.replace("\"url\"", "\"name\""),
            BRIDGE_LINE.replace("\"time\":1764666000.1234,", ""),
            // Another event; a context with content or with space inside.
            BRIDGE_LINE.replace("\"request\"", "\"test_start\""),
            BRIDGE_LINE.replace("{}", r#"{"k":1}"#),
            BRIDGE_LINE.replace("{}", "{ }"),
            // Numbers JSON or the field refuses.
            BRIDGE_LINE.replace("12.34", "012.34"),
            BRIDGE_LINE.replace("12.34", "12."),
            BRIDGE_LINE.replace("12.34", ".5"),
            BRIDGE_LINE.replace("12.34", "+1"),
            BRIDGE_LINE.replace("12.34", "1e"),
            BRIDGE_LINE.replace("12.34", "1e999"),
            BRIDGE_LINE.replace("12.34", "NaN"),
            BRIDGE_LINE.replace(":512", ":5.0"),
            BRIDGE_LINE.replace(":512", ":-1"),
            BRIDGE_LINE.replace(":512", ":18446744073709551616"),
            BRIDGE_LINE.replace(":200", ":65536"),
            // Not one whole object.
            format!("{BRIDGE_LINE}x"),
            format!("{BRIDGE_LINE}{BRIDGE_LINE}"),
            BRIDGE_LINE.replace(",\"context\":{}}", ",}"),
            BRIDGE_LINE[..BRIDGE_LINE.len() - 1].to_owned(),
            String::new(),
        ];
        for line in &refused {
            assert!(scan(line).is_none(), "the fast path read {line}");
        }
        // The limits of the numbers it reads are serde's.
        assert_same(&BRIDGE_LINE.replace(":512", ":18446744073709551615"));
        assert_same(&BRIDGE_LINE.replace(":200", ":65535"));
        assert_same(&BRIDGE_LINE.replace("12.34", "-0.0"));
    }

    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<f64>().prop_map(|f| format!("{f:?}")),
            any::<f64>().prop_map(|f| format!("{f:e}")),
            any::<f64>().prop_map(|f| format!("{f:.17e}")),
            (0.0..2e9f64).prop_map(|f| format!("{f}")),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            "-?[0-9]{1,25}(\\.[0-9]{1,25})?([eE][+-]?[0-9]{1,3})?",
        ]
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9/_.\\[\\] -]{0,20}".prop_map(|s| format!("\"{s}\"")),
            ".{0,10}".prop_map(|s| serde_json::Value::String(s).to_string()),
            Just("null".to_owned()),
            Just("7".to_owned()),
        ]
    }

    fn request_line() -> impl Strategy<Value = String> {
        let keys = [
            "request_type",
            "name",
            "response_time",
            "response_length",
            "exception",
            "exception_type",
            "start_time",
            "url",
            "status_code",
            "context",
        ];
        let value = |key: &str| -> BoxedStrategy<String> {
            match key {
                "response_time" | "start_time" => {
                    prop_oneof![number(), Just("null".to_owned())].boxed()
                }
                "response_length" | "status_code" => prop_oneof![
                    (0u64..70_000).prop_map(|n| n.to_string()),
                    number(),
                    Just("null".to_owned())
                ]
                .boxed(),
                "context" => prop_oneof![
                    Just("{}".to_owned()),
                    Just("null".to_owned()),
                    Just("{ }".to_owned()),
                    Just(r#"{"a":1}"#.to_owned())
                ]
                .boxed(),
                _ => text().boxed(),
            }
        };
        let optional: Vec<BoxedStrategy<Option<(String, String)>>> = keys
            .iter()
            .map(|&key| {
                proptest::option::of(value(key).prop_map(move |v| (key.to_owned(), v))).boxed()
            })
            .collect();
        (
            prop_oneof![Just("request"), Just("test_stop")],
            number(),
            optional,
            prop_oneof![Just(""), Just(" "), Just("\n ")],
            any::<proptest::sample::Index>(),
        )
            .prop_map(|(event, time, optional, space, rotate)| {
                let mut pairs = vec![
                    ("event".to_owned(), format!("\"{event}\"")),
                    ("role".to_owned(), "\"worker\"".to_owned()),
                    ("node".to_owned(), "\"w-1\"".to_owned()),
                    ("time".to_owned(), time),
                ];
                pairs.extend(optional.into_iter().flatten());
                let turn = rotate.index(pairs.len());
                pairs.rotate_left(turn);
                let body: Vec<String> = pairs
                    .iter()
                    .map(|(key, value)| format!("{space}\"{key}\"{space}:{space}{value}"))
                    .collect();
                format!("{{{}{space}}}", body.join(","))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 5_000, ..ProptestConfig::default() })]

        /// Whatever the fast path reads, serde reads the same; a well-formed request line
        /// serde reads without escapes or extra context, the fast path reads too.
        #[test]
        fn the_fast_path_agrees_with_serde(line in request_line()) {
            match scan(&line) {
                Some(fast) => prop_assert_eq!(Ok(fields(&fast)), serde_fields(&line), "{}", line),
                None => {
                    let plain = !line.contains('\\') && !line.contains("{ }") && !line.contains("\"a\"");
                    let serde = serde_fields(&line);
                    prop_assert!(
                        !(plain && serde.is_ok() && line.contains("\"request\"")),
                        "the fast path refused a plain request line serde reads: {}", line
                    );
                }
            }
        }

        #[test]
        fn special_bytes_are_found_as_a_plain_search_finds_them(
            bytes in proptest::collection::vec(
                prop_oneof![any::<u8>(), Just(b'"'), Just(b'\\'), 0x20u8..0x7f], 0..40)
        ) {
            let plain = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            prop_assert_eq!(special_byte(&bytes), plain);
        }

        #[test]
        fn numbers_read_as_str_parse_reads_them(text in number()) {
            let line = format!("{text},");
            let mut scanner = Scanner { line: &line, pos: 0 };
            if let Some(value) = scanner.float() {
                let parsed: f64 = text.parse().expect("the scanner read a number");
                prop_assert_eq!(value.to_bits(), parsed.to_bits(), "{}", text);
                prop_assert_eq!(scanner.pos, text.len());
            }
        }

        #[test]
        fn the_fast_path_never_panics(line in ".{0,200}") {
            let _ = scan(&line);
            let _ = scan(&format!("{{\"event\":\"request\",{line}"));
        }
    }
}
