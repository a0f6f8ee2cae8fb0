//! Server-sent events (the WHATWG `text/event-stream` format), parsed incrementally: bytes go in
//! as they arrive, in chunks split anywhere, and whole events come out.
//!
//! Lines end with LF, CRLF or CR; `data:` lines of one event are joined with `\n`; a blank line
//! dispatches the event (an event without data is dropped); lines starting with `:` are
//! comments; one space after the colon is dropped; unknown fields are ignored.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `message` when the event named none.
    pub event: String,
    pub data: String,
    /// The last `id:` seen on the stream (it carries over to later events).
    pub id: Option<String>,
}

#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of a line not yet ended.
    line: Vec<u8>,
    /// The previous chunk ended with CR: an LF starting this one belongs to it.
    after_cr: bool,
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
}

impl SseParser {
    /// Feed the next bytes of the stream; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let mut rest = bytes;
        if self.after_cr {
            self.after_cr = false;
            if let Some(tail) = rest.strip_prefix(b"\n") {
                rest = tail;
            }
        }
        while let Some(end) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
            self.line.extend_from_slice(&rest[..end]);
            let line = std::mem::take(&mut self.line);
            self.line(&String::from_utf8_lossy(&line), &mut out);
            let crlf = rest[end] == b'\r';
            rest = &rest[end + 1..];
            if crlf {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.line.extend_from_slice(rest);
        out
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            let event = self.event.take();
            if let Some(data) = self.data.take() {
                out.push(SseEvent {
                    event: event.unwrap_or_else(|| "message".to_owned()),
                    data,
                    id: self.id.clone(),
                });
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "event" => self.event = Some(value.to_owned()),
            // An id with NUL is ignored, per the standard.
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_chunks(text: &str, size: usize) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        text.as_bytes()
            .chunks(size)
            .flat_map(|c| p.push(c))
            .collect()
    }

    fn ev(event: &str, data: &str, id: Option<&str>) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
            id: id.map(Into::into),
        }
    }

    #[test]
    fn events_come_out_whole_however_the_bytes_are_split() {
        let text = "event: step\nid: 1\ndata: {\"type\":\"step\"}\n\n: keep-alive\n\nevent: end\ndata: {\"a\":1}\n\n";
        let want = vec![
            ev("step", "{\"type\":\"step\"}", Some("1")),
            ev("end", "{\"a\":1}", Some("1")),
        ];
        for size in 1..=text.len() {
            assert_eq!(parse_in_chunks(text, size), want, "chunks of {size}");
        }
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        let got = parse_in_chunks("data: one\ndata:two\ndata\n\n", 3);
        assert_eq!(got, vec![ev("message", "one\ntwo\n", None)]);
    }

    #[test]
    fn crlf_and_cr_end_lines_even_split_between_chunks() {
        let text = "event: a\r\ndata: x\r\n\r\nevent: b\rdata: y\r\r";
        let want = vec![ev("a", "x", None), ev("b", "y", None)];
        for size in 1..=text.len() {
            assert_eq!(parse_in_chunks(text, size), want, "chunks of {size}");
        }
    }

    #[test]
    fn comments_unknown_fields_and_events_without_data_are_dropped() {
        let got = parse_in_chunks(
            ": hello\nretry: 10\nevent: ping\n\nfoo: bar\ndata: z\n\n",
            7,
        );
        assert_eq!(got, vec![ev("message", "z", None)]);
    }

    #[test]
    fn an_unfinished_event_is_held_back() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: half").is_empty());
        assert!(p.push(b"\n").is_empty());
        assert_eq!(p.push(b"\n"), vec![ev("message", "half", None)]);
    }
}
