//! An incremental Server-Sent Events decoder, as both provider APIs stream their answers in
//! that format.
//!
//! The network hands us bytes cut at arbitrary places: inside a line, between a `\r` and its
//! `\n`, or in the middle of a multi-byte UTF-8 character. The decoder therefore buffers bytes,
//! never strings, and only decodes a line once its terminator has arrived. It follows the
//! WHATWG rules: lines end in `\n`, `\r\n` or `\r`; a blank line dispatches the event; lines
//! starting with `:` are comments; `data:` lines accumulate, joined by `\n`; `event:` names the
//! event; other fields are ignored.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Event {
    /// The `event:` field; `message` when the server sent none.
    pub event: String,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

/// Decoder state carried between chunks.
#[derive(Debug, Default)]
pub(super) struct Decoder {
    /// The bytes of the current, unterminated line.
    line: Vec<u8>,
    /// The previous chunk ended in `\r`, so a `\n` that starts this one belongs to it.
    skip_lf: bool,
    /// Whether the stream's first bytes were inspected for a byte order mark.
    started: bool,
    event: String,
    data: String,
    has_data: bool,
}

impl Decoder {
    /// Consumes `bytes` and returns every event they complete, in order.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        if !self.started {
            // A byte order mark may itself arrive split, so wait until three bytes are known.
            self.line.extend_from_slice(bytes);
            if self.line.len() < 3 && b"\xEF\xBB\xBF".starts_with(&self.line) {
                return events;
            }
            self.started = true;
            let pending = std::mem::take(&mut self.line);
            let pending = pending.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&pending);
            self.feed_lines(pending, &mut events);
            return events;
        }
        if self.skip_lf {
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
            if !bytes.is_empty() {
                self.skip_lf = false;
            }
        }
        self.feed_lines(bytes, &mut events);
        events
    }

    /// Ends the stream. Servers sometimes omit the final blank line (or even the final line
    /// break), so whatever is pending is dispatched rather than dropped.
    pub fn finish(&mut self) -> Option<Event> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line);
        }
        self.dispatch()
    }

    fn feed_lines(&mut self, mut bytes: &[u8], events: &mut Vec<Event>) {
        while let Some(end) = bytes.iter().position(|b| matches!(b, b'\n' | b'\r')) {
            self.line.extend_from_slice(&bytes[..end]);
            let line = std::mem::take(&mut self.line);
            if line.is_empty() {
                events.extend(self.dispatch());
            } else {
                self.process_line(&line);
            }
            let after = &bytes[end + 1..];
            bytes = if bytes[end] == b'\r' {
                match after.first() {
                    Some(b'\n') => &after[1..],
                    Some(_) => after,
                    None => {
                        self.skip_lf = true;
                        after
                    }
                }
            } else {
                after
            };
        }
        self.line.extend_from_slice(bytes);
    }

    fn process_line(&mut self, line: &[u8]) {
        if line.first() == Some(&b':') {
            return;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
    }

    fn dispatch(&mut self) -> Option<Event> {
        let event = std::mem::take(&mut self.event);
        if !std::mem::take(&mut self.has_data) {
            return None;
        }
        Some(Event {
            event: if event.is_empty() {
                "message".to_string()
            } else {
                event
            },
            data: std::mem::take(&mut self.data),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event: &str, data: &str) -> Event {
        Event {
            event: event.to_string(),
            data: data.to_string(),
        }
    }

    fn decode_in(chunks: &[&[u8]]) -> Vec<Event> {
        let mut decoder = Decoder::default();
        let mut events: Vec<Event> = chunks.iter().flat_map(|c| decoder.feed(c)).collect();
        events.extend(decoder.finish());
        events
    }

    /// Decodes `input` whole, then split at every single point, then split at every pair of
    /// points, and checks each gives `expected`.
    fn check(input: &[u8], expected: &[Event]) {
        assert_eq!(decode_in(&[input]), expected, "whole input");
        for i in 0..=input.len() {
            let (a, b) = input.split_at(i);
            assert_eq!(decode_in(&[a, b]), expected, "split at {i}");
            for j in i..=input.len() {
                let (b, c) = input[i..].split_at(j - i);
                assert_eq!(decode_in(&[a, b, c]), expected, "split at {i} and {j}");
            }
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(decode_in(&bytes), expected, "one byte at a time");
    }

    #[test]
    fn decodes_events_split_anywhere() {
        let input = "event: message_start\ndata: {\"a\":1}\n\n: keep-alive comment\r\n\r\ndata: h\u{e9}llo \u{1f980}\r\ndata:second line\r\rdata: [DONE]\n\n";
        check(
            input.as_bytes(),
            &[
                event("message_start", "{\"a\":1}"),
                event("message", "h\u{e9}llo \u{1f980}\nsecond line"),
                event("message", "[DONE]"),
            ],
        );
    }

    #[test]
    fn handles_each_line_ending() {
        for ending in ["\n", "\r\n", "\r"] {
            let input = format!("event: x{ending}data: 1{ending}{ending}data: 2{ending}{ending}");
            check(input.as_bytes(), &[event("x", "1"), event("message", "2")]);
        }
    }

    #[test]
    fn ignores_comments_unknown_fields_and_events_without_data() {
        check(
            b": hello\nid: 7\nretry: 100\nevent: ping\n\nevent: real\ndata\n\n",
            &[event("real", "")],
        );
    }

    #[test]
    fn strips_only_one_space_and_a_byte_order_mark() {
        check(
            b"\xEF\xBB\xBFdata:  two spaces\n\ndata:none\n\n",
            &[event("message", " two spaces"), event("message", "none")],
        );
    }

    #[test]
    fn dispatches_a_last_event_without_its_blank_line() {
        check(b"data: [DONE]", &[event("message", "[DONE]")]);
        check(b"data: a\ndata: b\n", &[event("message", "a\nb")]);
    }

    #[test]
    fn replaces_invalid_utf8_instead_of_failing() {
        check(b"data: \xFFok\n\n", &[event("message", "\u{fffd}ok")]);
    }
}
