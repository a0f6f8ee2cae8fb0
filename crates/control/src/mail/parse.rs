//! What `turnout mail show` shows of a caught message, read with mail-parser: its headers
//! (decoded where they are text, else as written, unfolded), its first text and HTML parts and
//! its attachments (name, content type, decoded size; their content stays in the raw message).
use mail_parser::{HeaderValue, MessageParser, MimeHeaders};
use turnout_model::{MailAttachment, MailHeader};

/// The longest subject kept in a message's row (the full one is in the message).
const MAX_SUBJECT: usize = 998;

/// The decoded Subject header ('' when none).
pub fn subject(raw: &[u8]) -> String {
    MessageParser::default()
        .parse_headers(raw)
        .and_then(|m| m.subject().map(|s| s.chars().take(MAX_SUBJECT).collect()))
        .unwrap_or_default()
}

/// A message, taken apart.
pub struct Parts {
    pub headers: Vec<MailHeader>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub attachments: Vec<MailAttachment>,
}

pub fn parts(raw: &[u8]) -> Parts {
    let Some(message) = MessageParser::default().parse(raw) else {
        return Parts {
            headers: Vec::new(),
            text: None,
            html: None,
            attachments: Vec::new(),
        };
    };
    let headers = message
        .headers()
        .iter()
        .map(|h| {
            let value = match h.value() {
                HeaderValue::Text(t) => t.to_string(),
                _ => {
                    let start = (h.offset_start() as usize).min(raw.len());
                    let end = (h.offset_end() as usize).clamp(start, raw.len());
                    unfold(&String::from_utf8_lossy(&raw[start..end]))
                }
            };
            MailHeader {
                name: h.name().to_owned(),
                value,
            }
        })
        .collect();
    let text = message
        .text_part(0)
        .filter(|p| !p.is_text_html())
        .and_then(|p| p.text_contents())
        .map(str::to_owned);
    let html = message
        .html_part(0)
        .filter(|p| p.is_text_html())
        .and_then(|p| p.text_contents())
        .map(str::to_owned);
    let attachments = message
        .attachments()
        .map(|p| MailAttachment {
            name: p.attachment_name().map(str::to_owned),
            content_type: p
                .content_type()
                .map(|t| match t.subtype() {
                    Some(sub) => format!("{}/{sub}", t.ctype()),
                    None => t.ctype().to_owned(),
                })
                .unwrap_or_else(|| "application/octet-stream".to_owned()),
            size: p.contents().len() as u64,
        })
        .collect();
    Parts {
        headers,
        text,
        html,
        attachments,
    }
}

/// A header value as written, its folding (CRLF and the whitespace after) made one space.
fn unfold(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &str = "From: Shop <shop@example.test>\r\n\
To: a@example.test,\r\n b@example.test\r\n\
Subject: =?utf-8?q?Your_order_=E2=9C=93?=\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"outer\"\r\n\
\r\n\
--outer\r\n\
Content-Type: multipart/alternative; boundary=\"inner\"\r\n\
\r\n\
--inner\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Thanks for your order.\r\n\
--inner\r\n\
Content-Type: text/html; charset=utf-8\r\n\
\r\n\
<p>Thanks for your <b>order</b>.</p>\r\n\
--inner--\r\n\
--outer\r\n\
Content-Type: application/pdf\r\n\
Content-Disposition: attachment; filename=\"invoice.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
JVBERi0xLjQK\r\n\
--outer--\r\n";

    #[test]
    fn a_multipart_message_is_taken_apart() {
        assert_eq!(subject(MESSAGE.as_bytes()), "Your order ✓");
        let p = parts(MESSAGE.as_bytes());
        assert_eq!(
            p.text.as_deref().map(str::trim),
            Some("Thanks for your order.")
        );
        assert!(p.html.unwrap().contains("<b>order</b>"));
        assert_eq!(
            p.attachments,
            vec![MailAttachment {
                name: Some("invoice.pdf".into()),
                content_type: "application/pdf".into(),
                size: 9,
            }]
        );
        let to = p.headers.iter().find(|h| h.name == "To").unwrap();
        assert_eq!(to.value, "a@example.test, b@example.test");
        let subject = p.headers.iter().find(|h| h.name == "Subject").unwrap();
        assert_eq!(subject.value, "Your order ✓");
    }

    #[test]
    fn anything_is_shown_without_a_panic() {
        assert_eq!(subject(b"\xff\xfe"), "");
        let p = parts(b"no headers at all");
        assert!(p.attachments.is_empty());
    }
}
