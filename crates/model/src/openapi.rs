//! The API's OpenAPI 3.1 document, built from the endpoint declarations (`endpoint.rs`) and the
//! model's types (`utoipa::ToSchema`): the server routes with the same declarations, so an
//! endpoint cannot be served without being described. Also the schemas of the types that
//! serialise themselves as strings.
use std::borrow::Cow;

use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, Content, InfoBuilder, OpenApi, OpenApiBuilder, PathItem, PathsBuilder, Ref,
    RefOr, Required, ResponseBuilder, ResponsesBuilder, Schema,
};
use utoipa::{PartialSchema, ToSchema};

use crate::endpoint::{
    self as ep, Endpoint, EventStream, Method, RunStream, TextStream, WebhookEvent,
};
use crate::{
    AppName, ApprovalPending, AuditAction, DomainName, EnvName, ErrorBody, ErrorCode, SleepAfter,
    StageMember,
};

/// The named schemas a document collects, by name.
pub type Schemas = Vec<(String, RefOr<Schema>)>;

/// What a request or answer body is on the wire: its media type and schema, collecting the
/// named schemas it refers to. Implemented for every body and answer type of an endpoint.
pub trait Payload {
    /// `None` for no body at all (`()`: the answer is 204 No Content).
    fn describe(schemas: &mut Schemas) -> Option<(&'static str, RefOr<Schema>)>;
}

impl Payload for () {
    fn describe(_: &mut Schemas) -> Option<(&'static str, RefOr<Schema>)> {
        None
    }
}

impl Payload for TextStream {
    fn describe(_: &mut Schemas) -> Option<(&'static str, RefOr<Schema>)> {
        Some(("text/plain", String::schema()))
    }
}

impl Payload for EventStream {
    fn describe(_: &mut Schemas) -> Option<(&'static str, RefOr<Schema>)> {
        let doc = "Server-sent events, each `data:` a JobEvent, until the event `end`.";
        Some((
            "text/event-stream",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(doc))
                .into(),
        ))
    }
}

impl Payload for RunStream {
    fn describe(_: &mut Schemas) -> Option<(&'static str, RefOr<Schema>)> {
        let doc = "101 Switching Protocols (the request carries `Connection: Upgrade` and \
                   `Upgrade: turnout-run/1`), then frames both ways until the exit status: a \
                   tag byte, a 4-byte big-endian length and at most 64 KiB of payload \
                   (turnout_model::run).";
        Some((
            "application/octet-stream",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(doc))
                .into(),
        ))
    }
}

impl Payload for WebhookEvent {
    fn describe(_: &mut Schemas) -> Option<(&'static str, RefOr<Schema>)> {
        let doc = "The provider's event as it sends it (`X-GitHub-Event` or `X-Gitlab-Event`), \
                   signed in `X-Hub-Signature-256` (GitHub) or carrying `X-Gitlab-Token`.";
        Some((
            JSON,
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .description(Some(doc))
                .into(),
        ))
    }
}

impl Payload for OpenApi {
    fn describe(_: &mut Schemas) -> Option<(&'static str, RefOr<Schema>)> {
        let doc = "An OpenAPI 3.1 document: this one.";
        Some((JSON, ObjectBuilder::new().description(Some(doc)).into()))
    }
}

impl<T: ToSchema> Payload for Vec<T> {
    fn describe(schemas: &mut Schemas) -> Option<(&'static str, RefOr<Schema>)> {
        let item = named::<T>(schemas);
        Some((JSON, ArrayBuilder::new().items(item).into()))
    }
}

const JSON: &str = "application/json";

/// A `$ref` to `T`'s schema, which (with what it refers to) joins `schemas`.
fn named<T: ToSchema>(schemas: &mut Schemas) -> RefOr<Schema> {
    let name = T::name().into_owned();
    if !schemas.iter().any(|(n, _)| *n == name) {
        schemas.push((name.clone(), T::schema()));
        T::schemas(schemas);
    }
    Ref::from_schema_name(name).into()
}

/// `Payload` for JSON types with a schema of their own.
macro_rules! json_payload {
    ($($ty:ty),* $(,)?) => {
        $(
            impl Payload for $ty {
                fn describe(schemas: &mut Schemas) -> Option<(&'static str, RefOr<Schema>)> {
                    Some((JSON, named::<$ty>(schemas)))
                }
            }
        )*
    };
}

json_payload!(
    ep::HealthInfo,
    crate::CreateLink,
    crate::LinkInfo,
    crate::RunRequest,
    crate::AddCert,
    crate::AddDomain,
    crate::AppInfo,
    crate::ApprovalInfo,
    crate::AttachData,
    crate::AuditInfo,
    crate::AuditVerification,
    crate::BackupInfo,
    crate::BackupList,
    crate::CertInfo,
    crate::CiOutcome,
    crate::CiReport,
    crate::ConfigChanged,
    crate::ConfigListing,
    crate::CreateApp,
    crate::CreateBackup,
    crate::CreateEnv,
    crate::CreateSchedule,
    crate::CreateToken,
    crate::CreateUser,
    crate::DataConnection,
    crate::DataInfo,
    crate::DataSource,
    crate::DeployRequest,
    crate::DomainInfo,
    crate::DrillRequest,
    crate::EgressLog,
    crate::EgressPolicies,
    crate::EnvDiff,
    crate::EnvInfo,
    crate::HookInfo,
    crate::HookOutcome,
    crate::JobInfo,
    crate::KeyRotated,
    crate::MailCleared,
    crate::MailDetail,
    crate::MailList,
    crate::MailRelays,
    crate::PipelineSpec,
    crate::PipelineView,
    crate::PromoteRequest,
    crate::ResetRequest,
    crate::RestoreRequest,
    crate::RollbackRequest,
    crate::ScheduleInfo,
    crate::SeedData,
    crate::SetApprovalRule,
    crate::SetBackupPolicy,
    crate::SetConfig,
    crate::SetEgressPolicy,
    crate::SetGrant,
    crate::SetHook,
    crate::SetMaintenance,
    crate::SetMailRelay,
    crate::SetPolicy,
    crate::SetProtection,
    crate::SetSleep,
    crate::SetTls,
    crate::SetTrigger,
    crate::SwitchDomain,
    crate::SwitchInfo,
    crate::TokenCreated,
    crate::UnsetConfig,
    crate::UpdateApp,
    crate::UpdatePlan,
    crate::UserInfo,
);

/// The type of a query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    Bool,
    Integer,
    Text,
    Tier,
}

impl ParamKind {
    fn schema(self) -> RefOr<Schema> {
        match self {
            Self::Bool => bool::schema(),
            Self::Integer => i64::schema(),
            Self::Text => String::schema(),
            Self::Tier => crate::Tier::schema(),
        }
    }
}

/// Statuses any endpoint may answer with the error body: `ErrorCode`'s, but 405 (each
/// described method is served).
const ERROR_CODES: [ErrorCode; 8] = [
    ErrorCode::Invalid,
    ErrorCode::Unauthorized,
    ErrorCode::Forbidden,
    ErrorCode::NotFound,
    ErrorCode::Conflict,
    ErrorCode::TooLarge,
    ErrorCode::StepFailed,
    ErrorCode::Internal,
];

/// How an endpoint is authenticated, which decides its `security` and its 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Bearer,
    /// A webhook delivery, checked by its provider's signature or token.
    Signed,
    None,
}

/// The document, with one operation per endpoint of `endpoint::for_each_endpoint!`.
pub fn document() -> OpenApi {
    let mut doc = Doc::default();
    macro_rules! describe_all {
        ($($e:ident),* $(,)?) => {
            $(doc.add::<ep::$e>(stringify!($e));)*
        };
    }
    crate::for_each_endpoint!(describe_all);
    doc.finish()
}

#[derive(Default)]
struct Doc {
    paths: PathsBuilder,
    schemas: Schemas,
}

impl Doc {
    fn add<E: Endpoint>(&mut self, id: &str) {
        let mut op = OperationBuilder::new()
            .operation_id(Some(id))
            .summary(Some(format!("{} {}", E::METHOD.as_str(), E::PATH)));
        for name in path_params(E::PATH) {
            let schema = match name {
                "id" => i64::schema(),
                "app" => AppName::schema(),
                "env" | "other" => EnvName::schema(),
                "domain" => DomainName::schema(),
                _ => String::schema(),
            };
            op = op.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(schema)),
            );
        }
        for (name, kind) in E::QUERY {
            op = op.parameter(
                ParameterBuilder::new()
                    .name(*name)
                    .parameter_in(ParameterIn::Query)
                    .required(Required::False)
                    .schema(Some(kind.schema())),
            );
        }
        if let Some((media, schema)) = E::Body::describe(&mut self.schemas) {
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .content(media, Content::new(Some(schema)))
                    .required(Some(Required::True))
                    .build(),
            ));
        }
        let mut responses = ResponsesBuilder::new();
        responses = match E::Answer::describe(&mut self.schemas) {
            Some((media, schema)) => responses.response(
                E::STATUS.to_string(),
                ResponseBuilder::new()
                    .description("done")
                    .content(media, Content::new(Some(schema))),
            ),
            None => responses.response("204", ResponseBuilder::new().description("done")),
        };
        if E::APPROVAL {
            let pending = named::<ApprovalPending>(&mut self.schemas);
            responses = responses.response(
                "202",
                ResponseBuilder::new()
                    .description("waits for approval; nothing was done yet")
                    .content(JSON, Content::new(Some(pending))),
            );
        }
        // A webhook delivery answers 401 too: a bad signature, or an app that takes none.
        if E::AUTH != Auth::None {
            let error = named::<ErrorBody>(&mut self.schemas);
            for code in ERROR_CODES {
                responses = responses.response(
                    code.http_status().to_string(),
                    ResponseBuilder::new()
                        .description(code.as_str())
                        .content(JSON, Content::new(Some(error.clone()))),
                );
            }
        }
        op = op.responses(responses);
        if E::AUTH == Auth::Bearer {
            op = op.security(SecurityRequirement::new(BEARER, Vec::<String>::new()));
        } else {
            // An empty requirement: this operation needs no bearer token.
            op = op.securities(Some([SecurityRequirement::default()]));
        }
        let method = match E::METHOD {
            Method::Get => HttpMethod::Get,
            Method::Post => HttpMethod::Post,
            Method::Delete => HttpMethod::Delete,
        };
        let paths = std::mem::take(&mut self.paths);
        self.paths = paths.path(E::PATH, PathItem::new(method, op));
    }

    fn finish(mut self) -> OpenApi {
        self.schemas.sort_by(|a, b| a.0.cmp(&b.0));
        let components = ComponentsBuilder::new()
            .schemas_from_iter(self.schemas)
            .security_scheme(
                BEARER,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(
                            "An API token (`turnout token create`), as `Authorization: Bearer …`",
                        ))
                        .build(),
                ),
            )
            .build();
        OpenApiBuilder::new()
            .info(
                InfoBuilder::new()
                    .title("Turnout API")
                    .version("1")
                    .description(Some(
                        "The control plane's HTTP API. Errors answer `{\"error\", \"code\"}`.",
                    ))
                    .build(),
            )
            .paths(self.paths)
            .components(Some(components))
            .security(Some([SecurityRequirement::new(
                BEARER,
                Vec::<String>::new(),
            )]))
            .build()
    }
}

const BEARER: &str = "bearerAuth";

/// The `{name}` segments of a path pattern, in order.
pub fn path_params(pattern: &str) -> impl Iterator<Item = &str> {
    pattern
        .split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
}

/// A string schema with a description and examples.
fn text(description: &str, examples: &[&str]) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .examples(examples.iter().copied())
        .into()
}

/// A string matching `pattern`: what the type's own validation accepts (in its usual spelling),
/// so generated requests can name real things.
fn text_matching(description: &str, pattern: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(Some(pattern))
        .into()
}

/// `names.rs`'s rule: 1-40 lowercase letters, digits and hyphens, no hyphen at either end.
const NAME_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$";

impl PartialSchema for AppName {
    fn schema() -> RefOr<Schema> {
        text_matching("An app's name (a DNS label).", NAME_PATTERN)
    }
}

impl ToSchema for AppName {}

impl PartialSchema for EnvName {
    fn schema() -> RefOr<Schema> {
        text_matching("An environment's name (a DNS label).", NAME_PATTERN)
    }
}

impl ToSchema for EnvName {}

impl PartialSchema for DomainName {
    fn schema() -> RefOr<Schema> {
        text_matching(
            "A host name, or `*.` and one: dot-separated labels of 1-63 letters, digits and \
             hyphens; not an IP address.",
            r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z]([a-z0-9-]{0,61}[a-z0-9])?$",
        )
    }
}

impl ToSchema for DomainName {}

impl PartialSchema for SleepAfter {
    fn schema() -> RefOr<Schema> {
        text(
            "After how long without a request the environment sleeps (1s to 168h), or never.",
            &["15m", "never"],
        )
    }
}

impl ToSchema for SleepAfter {}

impl PartialSchema for StageMember {
    fn schema() -> RefOr<Schema> {
        text(
            "An environment of the app, or `tier:TIER` for every environment of a tier.",
            &["staging", "tier:test"],
        )
    }
}

impl ToSchema for StageMember {}

impl PartialSchema for AuditAction {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(AuditAction::ALL.iter().map(|a| a.as_str())))
            .into()
    }
}

impl ToSchema for AuditAction {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("AuditAction")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schemas' patterns accept what the types accept, and refuse what they refuse.
    #[test]
    fn name_patterns_agree_with_the_types() {
        fn pattern<T: PartialSchema>() -> String {
            let json = serde_json::to_value(T::schema()).unwrap();
            json["pattern"].as_str().unwrap().to_owned()
        }
        assert_eq!(pattern::<AppName>(), NAME_PATTERN);
        assert_eq!(pattern::<EnvName>(), NAME_PATTERN);
        assert!(AppName::new(&"a".repeat(40)).is_ok());
        assert!(AppName::new(&"a".repeat(41)).is_err());
        assert!(pattern::<DomainName>().starts_with(r"^(\*\.)?"));
    }

    #[test]
    fn path_params_are_the_braced_segments() {
        assert_eq!(
            path_params("/api/v1/apps/{app}/envs/{env}/diff/{other}").collect::<Vec<_>>(),
            ["app", "env", "other"]
        );
    }

    #[test]
    fn every_declared_endpoint_is_in_the_document_once() {
        let doc = document();
        let mut described = Vec::new();
        for (path, item) in &doc.paths.paths {
            for (method, op) in [
                ("GET", &item.get),
                ("POST", &item.post),
                ("DELETE", &item.delete),
            ] {
                if op.is_some() {
                    described.push((method, path.as_str()));
                }
            }
        }
        described.sort_unstable();
        let mut declared = crate::endpoint::all_paths();
        declared.sort_unstable();
        assert_eq!(described, declared);
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let json = serde_json_text(&doc);
        let schemas = &doc.components.as_ref().unwrap().schemas;
        for part in json.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(
                schemas.contains_key(name),
                "{name} is referred to, not defined"
            );
        }
    }

    /// schemathesis: a GitHub or GitLab delivery without a valid signature answered 401, which
    /// the document did not list for the signed endpoints.
    #[test]
    fn webhook_deliveries_document_their_401() {
        let doc = document();
        for path in ["/api/v1/hooks/github/{app}", "/api/v1/hooks/gitlab/{app}"] {
            let op = doc.paths.paths[path].post.as_ref().unwrap();
            assert!(op.responses.responses.contains_key("401"), "{path}");
            assert!(
                op.security == Some(vec![SecurityRequirement::default()]),
                "{path}: no bearer token"
            );
        }
    }

    fn serde_json_text(doc: &OpenApi) -> String {
        doc.to_json().unwrap()
    }
}
