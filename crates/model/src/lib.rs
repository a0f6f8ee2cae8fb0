//! Types shared by the control plane and its clients: validated names, tiers and the JSON shapes
//! of the HTTP API (`/api/v1`). Nothing here does I/O.
#![forbid(unsafe_code)]

mod access;
mod api;
mod audit;
mod backup;
mod config;
mod data;
mod diff;
mod domain;
pub mod duration;
pub mod egress;
pub mod endpoint;
mod hook;
mod job;
pub mod link;
mod mail;
mod names;
pub mod openapi;
mod pipeline;
pub mod plan;
mod restore;
pub mod run;
pub mod sleep;
mod tier;
mod tls;
mod trigger;

pub use access::{Action, Role};
pub use api::*;
pub use audit::AuditAction;
pub use backup::{BackupInfo, BackupList, CreateBackup, DrillInfo, SetBackupPolicy};
pub use config::{
    ConfigChanged, ConfigEntry, ConfigLevel, ConfigListing, ConfigState, KeyRotated,
    MAX_CONFIG_KEYS, MAX_CONFIG_VALUE, SetConfig, UnsetConfig,
};
pub use data::{
    AttachData, DataAccess, DataAttachment, DataConnection, DataInfo, DataOrigin, DataSource,
    ReseedInfo, SeedData,
};
pub use diff::{
    CommitInfo, ConfigDifference, ConfigKind, DIFF_COMMITS, EnvDiff, PROMOTIONS_SHOWN,
    PipelineStage, PipelineView, PromotionView, SECRET_SHOWN_AS,
};
pub use domain::{DomainError, DomainName};
pub use egress::{
    EgressDecision, EgressLog, EgressLogEntry, EgressMode, EgressPolicies, EgressPolicy,
    EgressPolicyInfo, HostPattern, SetEgressPolicy,
};
pub use hook::{HookInfo, HookOutcome, HookProvider, SetHook};
pub use job::*;
pub use link::{CreateLink, EnvLink, LinkInfo, LinkRule, LinkTarget};
pub use mail::{
    MAX_RELAY_DOMAINS, MAX_RELAY_URL, MailAttachment, MailCleared, MailDetail, MailHeader,
    MailInfo, MailList, MailRelay, MailRelayInfo, MailRelays, RelayOutcome, SetMailRelay,
};
pub use names::{AppName, EnvName, EnvRef, MAX_NAME_LEN, NameError};
pub use pipeline::{
    CreateSchedule, MAX_CRON_LEN, MAX_PROMOTIONS, MAX_SCHEDULES, MAX_STAGE_MEMBERS, MAX_STAGES,
    MAX_TZ_LEN, PipelineSpec, Promotion, ScheduleInfo, StageMember, check_direction,
};
pub use plan::{ResourcePlan, ResourceUsage, UpdatePlan};
pub use restore::{DrillRequest, ResetRequest, RestoreRequest};
pub use run::{RunRequest, TermSize};
pub use sleep::{SetSleep, SleepAfter};
pub use tier::{Tier, UnknownTier};
pub use tls::{
    AddCert, CertInfo, CertSource, ChallengeKind, MAX_HSTS_MAX_AGE, MAX_PEM_BYTES, SetTls, TlsMode,
    TlsSettings,
};
pub use trigger::{
    CiOutcome, CiReport, CiStatus, DeployOn, SetTrigger, SkippedEnv, TriggeredDeploy,
};
