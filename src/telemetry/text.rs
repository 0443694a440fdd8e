//! Text log lines for people: tracing-subscriber's own format, followed inside a request by
//! the request's fields as ` name=value` pairs.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::request;

/// Formats an event as tracing-subscriber's full format does, adding the request's fields.
pub struct TextLines {
    inner: Format<Full>,
}

impl TextLines {
    /// Creates the format, with ANSI colors when `ansi` is true.
    pub fn new(ansi: bool) -> Self {
        TextLines {
            inner: Format::default().with_target(false).with_ansi(ansi),
        }
    }
}

impl<S, N> FormatEvent<S, N> for TextLines
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
    N: for<'writer> FormatFields<'writer> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // The inner format ends its line, so it writes to a buffer and the request's fields
        // go in before the line's end.
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        writer.write_str(line.strip_suffix('\n').unwrap_or(&line))?;
        request::write_text(&mut writer)?;
        writer.write_char('\n')
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, Method};

    use super::*;
    use crate::middleware::request_id;
    use crate::telemetry::capture::{self, Captured};
    use crate::telemetry::request::RequestContext;

    #[test]
    fn request_fields_end_the_line() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .event_format(TextLines::new(false))
            .with_writer(captured.clone())
            .finish();
        let request_id = request_id::assign(&HeaderMap::new());
        let context = RequestContext {
            method: Method::GET,
            route: "/api/v1/orders/{id}",
            request_id: request_id.clone(),
            peer: Some("[::1]:40000".parse().unwrap()),
            client: None,
        };
        tracing::subscriber::with_default(subscriber, || {
            capture::in_request(context, || {
                tracing::info!(status = 200u64, "request completed")
            });
            tracing::info!("outside");
        });

        let text = captured.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let expected = format!(
            "request completed status=200 method=GET route=/api/v1/orders/{{id}} request_id={} \
             peer=[::1]:40000",
            request_id.as_str()
        );
        assert!(lines[0].ends_with(&expected), "{text}");
        assert!(lines[0].contains(" INFO "), "{text}");
        assert!(lines[1].ends_with("INFO outside"), "{text}");
    }
}
