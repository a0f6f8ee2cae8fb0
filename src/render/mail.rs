//! Caught mail as the terminal shows it: `turnout mail list|show|clear|relay`.
use super::*;
use turnout_model::{MailCleared, MailDetail, MailList, MailRelays, RelayOutcome};

/// At most this many characters of a cell in `mail list`.
const CELL: usize = 60;

fn cut(s: &str) -> String {
    let mut out: String = s.chars().take(CELL).collect();
    if s.chars().count() > CELL {
        out.push('…');
    }
    out
}

pub fn list(l: &MailList, json: bool) {
    if json {
        return print_json(l);
    }
    if l.messages.is_empty() {
        outln!("{}: no mail caught", l.env);
        return;
    }
    let mut t = table(&["ID", "RECEIVED", "FROM", "TO", "SUBJECT", "SIZE", "RELAY"]);
    for m in &l.messages {
        t.add_row(vec![
            m.id.to_string(),
            m.received_at.clone(),
            cut(envelope_sender(&m.from)),
            cut(&m.to.join(", ")),
            cut(&m.subject),
            format_bytes(m.size),
            cut(&m.relay.summary()),
        ]);
    }
    outln!("{t}");
    outln!(
        "(the catcher keeps the newest {} messages, at most {})",
        l.keeps_messages,
        format_bytes(l.keeps_bytes)
    );
}

pub fn show(m: &MailDetail, raw: bool, json: bool) {
    if json {
        return print_json(m);
    }
    if raw {
        return crate::output::bytes(m.raw.as_deref().unwrap_or("").as_bytes());
    }
    let i = &m.info;
    outln!("message {} of {}, received {}", i.id, i.env, i.received_at);
    outln!(
        "envelope: from {} to {}",
        envelope_sender(&i.from),
        i.to.join(", ")
    );
    outln!("size:     {}", format_bytes(i.size));
    match &i.relay {
        RelayOutcome::Relayed { to, reply } => {
            outln!("relay:    relayed to {} ({reply})", to.join(", "))
        }
        other => outln!("relay:    {}", other.summary()),
    }
    outln!();
    for h in &m.headers {
        outln!("{}: {}", h.name, h.value);
    }
    if let Some(text) = &m.text {
        outln!();
        outln!("--- text ---");
        outln!("{}", text.trim_end());
    }
    if let Some(html) = &m.html {
        outln!();
        outln!("--- html ---");
        outln!("{}", html.trim_end());
    }
    if !m.attachments.is_empty() {
        outln!();
        outln!("--- attachments ---");
        let mut t = table(&["NAME", "TYPE", "SIZE"]);
        for a in &m.attachments {
            t.add_row(vec![
                a.name.clone().unwrap_or_else(|| "(unnamed)".to_owned()),
                a.content_type.clone(),
                format_bytes(a.size),
            ]);
        }
        outln!("{t}");
    }
}

pub fn cleared(c: &MailCleared, json: bool) {
    if json {
        return print_json(c);
    }
    outln!("{}: {} messages removed", c.env, c.removed);
}

pub fn relays(r: &MailRelays, json: bool) {
    if json {
        return print_json(r);
    }
    let mut t = table(&["TIER", "RELAY", "ALLOWED DOMAINS", "SET BY"]);
    for tier in &r.tiers {
        match &tier.relay {
            Some(relay) => t.add_row(vec![
                tier.tier.to_string(),
                relay.url.clone(),
                relay.allow_domains.join(", "),
                format!("{} at {}", relay.set_by, relay.set_at),
            ]),
            None => t.add_row(vec![
                tier.tier.to_string(),
                "off (nothing relayed)".to_owned(),
                String::new(),
                String::new(),
            ]),
        };
    }
    outln!(
        "{}: mail relays (production does not use the catcher)",
        r.app
    );
    outln!("{t}");
}

/// The envelope sender as SMTP writes it when it is null (a bounce or a notification).
fn envelope_sender(from: &str) -> &str {
    if from.is_empty() { "<>" } else { from }
}
