//! The API's bodies for the mail catcher (`turnout mail …`): what an environment tried to send,
//! and each tier's opt-in to relay some of it to a real mail server.
use serde::{Deserialize, Serialize};

use crate::Tier;

/// The most domains one tier's relay may allow.
pub const MAX_RELAY_DOMAINS: usize = 50;
/// The longest relay URL accepted, in bytes.
pub const MAX_RELAY_URL: usize = 2048;

/// What the relay did with a caught message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum RelayOutcome {
    /// The environment's tier has no relay: the message stays in the catcher.
    Off,
    /// The tier has a relay; the message waits for its turn.
    Pending,
    /// The tier has a relay but no recipient is in its allowed domains.
    Skipped { reason: String },
    /// Passed on to `to` (only the allowed recipients); `reply` is the server's answer.
    Relayed { to: Vec<String>, reply: String },
    /// Passing it on to `to` failed.
    Failed { to: Vec<String>, error: String },
}

impl RelayOutcome {
    /// One line for a table.
    pub fn summary(&self) -> String {
        match self {
            RelayOutcome::Off => "not relayed".to_owned(),
            RelayOutcome::Pending => "relay pending".to_owned(),
            RelayOutcome::Skipped { reason } => format!("not relayed: {reason}"),
            RelayOutcome::Relayed { to, .. } => format!("relayed to {}", to.join(", ")),
            RelayOutcome::Failed { to, error } => {
                format!("relay to {} failed: {error}", to.join(", "))
            }
        }
    }
}

/// One caught message, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MailInfo {
    pub id: i64,
    /// `APP/ENV` that sent it.
    pub env: String,
    /// RFC 3339, UTC.
    pub received_at: String,
    /// The SMTP envelope: MAIL FROM and every RCPT TO.
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    /// Bytes of the message as sent.
    pub size: u64,
    pub relay: RelayOutcome,
}

/// `turnout mail list APP/ENV`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MailList {
    pub env: String,
    pub messages: Vec<MailInfo>,
    /// The catcher keeps at most this many messages and bytes per environment (the oldest go).
    pub keeps_messages: u64,
    pub keeps_bytes: u64,
}

/// One header of a message, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MailHeader {
    pub name: String,
    pub value: String,
}

/// An attachment of a message (its content is in the raw message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MailAttachment {
    pub name: Option<String>,
    pub content_type: String,
    /// Bytes once decoded.
    pub size: u64,
}

/// `turnout mail show ID`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MailDetail {
    #[serde(flatten)]
    pub info: MailInfo,
    pub headers: Vec<MailHeader>,
    /// The first text/plain and text/html bodies.
    pub text: Option<String>,
    pub html: Option<String>,
    pub attachments: Vec<MailAttachment>,
    /// The message as sent (`--raw`), lossily decoded as UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

/// `turnout mail clear APP/ENV`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MailCleared {
    pub env: String,
    pub removed: u64,
}

/// `turnout mail relay APP --tier T (--url … --allow-domain … | --off)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SetMailRelay {
    pub tier: String,
    /// `smtp://` or `smtps://`, with an optional `user:password@` and port.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub allow_domains: Vec<String>,
    /// Remove the tier's relay (nothing is relayed).
    #[serde(default)]
    pub off: bool,
}

/// One tier's relay setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MailRelayInfo {
    pub tier: Tier,
    /// None: nothing of this tier is relayed (the default). Production: the catcher is not
    /// used at all.
    pub relay: Option<MailRelay>,
}

/// A tier's relay: where to, for which recipient domains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MailRelay {
    /// The URL without its password.
    pub url: String,
    pub allow_domains: Vec<String>,
    pub set_by: String,
    /// RFC 3339, UTC.
    pub set_at: String,
}

/// `turnout mail relay APP`: every tier's setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MailRelays {
    pub app: String,
    pub tiers: Vec<MailRelayInfo>,
}
