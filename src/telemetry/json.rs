//! JSON log lines, one object per event: `timestamp`, `level`, the event's fields (`message`
//! among them), inside a request `request` with the request's fields, and inside a span
//! `span` with the span's name and fields.
//!
//! tracing-subscriber's own JSON format stores a span's fields as a JSON object and parses
//! that object back into a map for every event in the span. Here a span's fields are stored
//! as a JSON fragment (`"method":"GET","route":"/"`) that every event copies as it is.

use std::fmt::{self, Write};

use time::OffsetDateTime;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use super::request;

/// Formats fields as the members of a JSON object, without the braces.
pub struct JsonFields;

impl<'writer> FormatFields<'writer> for JsonFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = MemberWriter::new(&mut writer, false);
        fields.record(&mut visitor);
        visitor.result
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let separate = !current.fields.is_empty();
        let mut writer = current.as_writer();
        let mut visitor = MemberWriter::new(&mut writer, separate);
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Formats an event as one JSON object on one line.
pub struct JsonLines;

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut writer, OffsetDateTime::now_utc())?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(event.metadata().level().as_str())?;
        writer.write_char('"')?;
        let mut visitor = MemberWriter::new(&mut writer, true);
        event.record(&mut visitor);
        visitor.result?;

        let mut in_request = false;
        request::visit_current(|name, value| {
            writer.write_str(if in_request {
                ",\""
            } else {
                ",\"request\":{\""
            })?;
            in_request = true;
            writer.write_str(name)?;
            writer.write_str("\":\"")?;
            write_escaped(&mut writer, value)?;
            writer.write_char('"')
        })?;
        if in_request {
            writer.write_char('}')?;
        }

        if let Some(span) = ctx.parent_span() {
            writer.write_str(",\"span\":{\"name\":\"")?;
            write_escaped(&mut writer, span.name())?;
            writer.write_char('"')?;
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<JsonFields>>()
                && !fields.fields.is_empty()
            {
                writer.write_char(',')?;
                writer.write_str(&fields.fields)?;
            }
            writer.write_char('}')?;
        }
        writer.write_str("}\n")
    }
}

/// Writes each field it visits as a JSON member, `"name":value`, separated by commas.
struct MemberWriter<'a, W> {
    out: &'a mut W,
    /// Whether a comma goes before the next member.
    separate: bool,
    result: fmt::Result,
}

impl<'a, W: Write> MemberWriter<'a, W> {
    fn new(out: &'a mut W, separate: bool) -> Self {
        MemberWriter {
            out,
            separate,
            result: Ok(()),
        }
    }

    /// Writes the member's name and then its value with `value`, unless a write failed before.
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.separate { ",\"" } else { "\"" };
        self.separate = true;
        self.result = self
            .out
            .write_str(separator)
            .and_then(|()| write_escaped(self.out, field.name()))
            .and_then(|()| self.out.write_str("\":"))
            .and_then(|()| value(self.out));
    }
}

impl<W: Write> Visit for MemberWriter<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |out| {
            out.write_char('"')?;
            write_escaped(out, value)?;
            out.write_char('"')
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |out| {
            out.write_str(itoa::Buffer::new().format(value))
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |out| {
            out.write_str(itoa::Buffer::new().format(value))
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity; those are written as strings.
        if value.is_finite() {
            self.member(field, |out| write!(out, "{value}"));
        } else {
            self.member(field, |out| write!(out, "\"{value}\""));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |out| {
            out.write_char('"')?;
            write!(Escaping(out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

/// Writes `now` in RFC 3339 with microseconds, such as `2026-12-05T06:30:00.903915Z`. The
/// digits go into a buffer on the stack and reach `out` in one call, not one per number.
fn write_timestamp(out: &mut impl Write, now: OffsetDateTime) -> fmt::Result {
    let Ok(year @ 0..=9999) = u32::try_from(now.year()) else {
        // Years outside RFC 3339's four digits, which only a wrong clock gives.
        return write!(
            out,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.microsecond()
        );
    };
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    put_digits(&mut text[0..4], year);
    put_digits(&mut text[5..7], u8::from(now.month()).into());
    put_digits(&mut text[8..10], now.day().into());
    put_digits(&mut text[11..13], now.hour().into());
    put_digits(&mut text[14..16], now.minute().into());
    put_digits(&mut text[17..19], now.second().into());
    put_digits(&mut text[20..26], now.microsecond());
    out.write_str(std::str::from_utf8(&text).expect("digits and separators are ASCII"))
}

/// Writes `value` in decimal into `slot`, right-aligned and padded with zeros. Digits beyond
/// the length of `slot` are dropped.
fn put_digits(slot: &mut [u8], mut value: u32) {
    for byte in slot.iter_mut().rev() {
        *byte = b'0' + u8::try_from(value % 10).expect("a digit");
        value /= 10;
    }
}

/// Escapes what is written through it as the inside of a JSON string.
struct Escaping<'a, W>(&'a mut W);

impl<W: Write> Write for Escaping<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        write_escaped(self.0, text)
    }
}

/// The bytes [`write_escaped`] escapes: quotes, backslashes, the control characters and DEL.
/// One lookup per byte costs about half what a `match` on the ranges did.
const ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table[0x7f] = true;
    table
};

/// Writes `text` as the inside of a JSON string: quotes, backslashes and control characters
/// escaped, so a value can neither end its string nor start a new line.
fn write_escaped(out: &mut impl Write, text: &str) -> fmt::Result {
    let mut start = 0;
    for (index, &byte) in text.as_bytes().iter().enumerate() {
        if !ESCAPED[usize::from(byte)] {
            continue;
        }
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            _ => "",
        };
        // Every escaped byte is ASCII, so `index` is on a character boundary.
        out.write_str(&text[start..index])?;
        if escape.is_empty() {
            write!(out, "\\u{byte:04x}")?;
        } else {
            out.write_str(escape)?;
        }
        start = index + 1;
    }
    out.write_str(&text[start..])
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, Method};
    use serde_json::Value;
    use time::macros::datetime;

    use super::*;
    use crate::middleware::request_id;
    use crate::telemetry::capture::{self, Captured};
    use crate::telemetry::request::RequestContext;

    /// Runs `log` under a subscriber with these formatters and returns the lines, parsed.
    fn lines(log: impl FnOnce()) -> Vec<Value> {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(JsonFields)
            .event_format(JsonLines)
            .with_writer(captured.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        captured
            .text()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
            .collect()
    }

    #[test]
    fn event_fields_and_span_fields() {
        let logged = lines(|| {
            let span = tracing::info_span!("request", method = %"GET", route = "/users/{id}");
            let _entered = span.enter();
            tracing::info!(
                status = 200u16,
                latency_us = 12u64,
                ok = true,
                "request completed"
            );
        });

        assert_eq!(logged.len(), 1);
        let line = &logged[0];
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "request completed");
        assert_eq!(line["status"], 200);
        assert_eq!(line["latency_us"], 12);
        assert_eq!(line["ok"], true);
        assert_eq!(line["span"]["name"], "request");
        assert_eq!(line["span"]["method"], "GET");
        assert_eq!(line["span"]["route"], "/users/{id}");
        let timestamp = line["timestamp"].as_str().unwrap();
        assert_eq!(
            timestamp.len(),
            "2026-01-02T03:04:05.123456Z".len(),
            "{timestamp}"
        );
        assert!(timestamp.ends_with('Z'), "{timestamp}");
    }

    #[test]
    fn values_cannot_break_the_line() {
        let hostile = "a\"b\\c\nd\re\tf\u{1b}[31mg\u{7f}h\u{0}é";
        let logged = lines(|| {
            let span = tracing::info_span!("request", peer = hostile);
            let _entered = span.enter();
            tracing::warn!(
                error = hostile,
                debug = ?hostile,
                ratio = f64::NAN,
                delta = -3i64,
                "{hostile}"
            );
        });

        assert_eq!(logged.len(), 1, "one line");
        let line = &logged[0];
        assert_eq!(line["error"], hostile);
        assert_eq!(line["message"], hostile);
        assert_eq!(line["debug"], format!("{hostile:?}"));
        assert_eq!(line["span"]["peer"], hostile);
        assert_eq!(line["ratio"], "NaN");
        assert_eq!(line["delta"], -3);
    }

    #[test]
    fn every_ascii_character_round_trips() {
        let ascii: String = (0u8..128).map(char::from).collect();
        let mut escaped = String::new();
        write_escaped(&mut escaped, &ascii).unwrap();

        let raw_control = escaped.bytes().find(|&byte| byte < 0x20 || byte == 0x7f);
        assert_eq!(raw_control, None, "{escaped}");
        let parsed: String = serde_json::from_str(&format!("\"{escaped}\"")).unwrap();
        assert_eq!(parsed, ascii);
    }

    #[test]
    fn request_event_carries_request_fields() {
        let request_id = request_id::assign(&HeaderMap::new());
        let context = RequestContext {
            method: Method::PATCH,
            route: "/api/v1/users/{id}",
            request_id: request_id.clone(),
            peer: Some("127.0.0.1:40000".parse().unwrap()),
            client: Some("203.0.113.9".parse().unwrap()),
        };
        let logged = lines(|| {
            capture::in_request(context, || tracing::warn!(attempt = 2u64, "inside"));
            tracing::info!("outside");
        });

        assert_eq!(logged.len(), 2);
        let inside = &logged[0];
        assert_eq!(inside["message"], "inside");
        assert_eq!(inside["attempt"], 2);
        assert_eq!(inside["request"]["method"], "PATCH");
        assert_eq!(inside["request"]["route"], "/api/v1/users/{id}");
        assert_eq!(inside["request"]["request_id"], request_id.as_str());
        assert_eq!(inside["request"]["peer"], "127.0.0.1:40000");
        assert_eq!(inside["request"]["client"], "203.0.113.9");
        assert_eq!(logged[1].get("request"), None);
    }

    #[test]
    fn timestamp_pads_each_part() {
        let mut text = String::new();
        write_timestamp(&mut text, datetime!(2026-01-02 03:04:05.000042 UTC)).unwrap();
        assert_eq!(text, "2026-01-02T03:04:05.000042Z");

        text.clear();
        write_timestamp(&mut text, datetime!(0009-12-31 23:59:59.999999 UTC)).unwrap();
        assert_eq!(text, "0009-12-31T23:59:59.999999Z");
    }

    #[test]
    fn timestamp_before_year_zero_keeps_its_sign() {
        let mut text = String::new();
        write_timestamp(&mut text, datetime!(-0001-06-15 12:00 UTC)).unwrap();
        assert_eq!(text, "-001-06-15T12:00:00.000000Z");
    }

    #[test]
    fn integer_extremes_are_exact() {
        let logged = lines(|| tracing::info!(largest = u64::MAX, smallest = i64::MIN, "limits"));

        assert_eq!(logged[0]["largest"], u64::MAX);
        assert_eq!(logged[0]["smallest"], i64::MIN);
    }

    #[test]
    fn event_outside_span_omits_span() {
        let logged = lines(|| tracing::error!("no span"));

        assert_eq!(logged[0]["level"], "ERROR");
        assert_eq!(logged[0].get("span"), None);
    }
}
