//! The web dashboard, served under `/ui/` on the API's listener: pages rendered here from
//! askama templates (checked at compile time, every value escaped), plain links and forms,
//! htmx (embedded, `assets/`) for in-place edits and refreshes, and one small script of our
//! own for live job progress over the job event stream. No build step.
//!
//! Invariants (see docs/ARCHITECTURE.md):
//! - Every action a form posts calls the same `ControlPlane` method as its API endpoint, with
//!   the session's `Principal`: no action exists only here, and authorization is the plane's.
//! - Every POST but sign-in needs the session's CSRF token (`guard`, before any handler), and
//!   a POST from another site is refused outright.
//! - Which controls a page shows is asked of the same policy the plane enforces
//!   (`ControlPlane::permitted`); hiding is a courtesy, the plane refuses anyway.
use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::access::Principal;
use crate::error::{ControlError, Escaped};
use crate::plane::ControlPlane;

mod apps;
mod audit;
mod domains;
mod envs;
mod jobs;
mod session;
mod view;

use session::Sessions;

/// What every handler shares: the plane and the open sessions.
pub struct Ui {
    plane: Arc<ControlPlane>,
    sessions: Sessions,
}

type St = State<Arc<Ui>>;

/// The dashboard's routes (and `/` redirecting to it), to be merged into the API's router.
pub fn router(plane: Arc<ControlPlane>) -> Router {
    let ui = Arc::new(Ui {
        plane,
        sessions: Sessions::default(),
    });
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/apps") }))
        .route("/ui/login", get(sign_in_page).post(sign_in))
        .route("/ui/logout", post(sign_out))
        .route("/ui/assets/{name}", get(asset))
        .route("/ui/apps", get(apps::list))
        .route("/ui/apps/{app}", get(apps::show))
        .route("/ui/apps/{app}/envs/{env}", get(envs::show))
        .route("/ui/apps/{app}/envs/{env}/deploy", post(apps::deploy))
        .route("/ui/apps/{app}/envs/{env}/promote", post(apps::promote))
        .route("/ui/apps/{app}/envs/{env}/rollback", post(envs::rollback))
        .route("/ui/apps/{app}/envs/{env}/restart", post(envs::restart))
        .route("/ui/apps/{app}/envs/{env}/stop", post(envs::stop))
        .route("/ui/apps/{app}/envs/{env}/start", post(envs::start))
        .route("/ui/apps/{app}/envs/{env}/seed", post(envs::seed))
        .route("/ui/apps/{app}/envs/{env}/clone", post(envs::clone))
        .route("/ui/apps/{app}/envs/{env}/sync", post(envs::sync))
        .route("/ui/apps/{app}/envs/{env}/backups", post(envs::back_up))
        .route("/ui/apps/{app}/envs/{env}/restore", post(envs::restore))
        .route("/ui/apps/{app}/envs/{env}/logs", get(envs::log_stream))
        .route("/ui/domains", get(domains::list))
        .route("/ui/domains/{domain}", get(domains::show))
        .route("/ui/domains/{domain}/edit", get(domains::edit))
        .route("/ui/domains/{domain}/switch", post(domains::switch))
        .route("/ui/domains/{domain}/rollback", post(domains::rollback))
        .route(
            "/ui/domains/{domain}/maintenance",
            post(domains::maintenance),
        )
        .route("/ui/certificates", get(domains::certificates))
        .route("/ui/jobs", get(jobs::list).post(jobs::start))
        .route("/ui/jobs/{id}", get(jobs::show))
        .route("/ui/jobs/{id}/events", get(jobs::events))
        .route("/ui/jobs/{id}/cancel", post(jobs::cancel))
        .route("/ui/audit", get(audit::list))
        .route("/ui/{*rest}", get(no_page))
        .layer(axum::middleware::from_fn_with_state(ui.clone(), guard))
        .with_state(ui)
}

/// Before any handler: a POST (any method but GET and HEAD) from another site is refused, and
/// every one but sign-in must carry the CSRF token of the session its cookie names (`_csrf`, a
/// form field), or it is refused with 403 and changes nothing. Every answer gets the headers
/// that keep the pages from being framed, sniffed, cached or given scripts from anywhere else.
async fn guard(State(ui): St, req: Request, next: Next) -> Response {
    let mut res = if req.method() != Method::GET && req.method() != Method::HEAD {
        match check_post(&ui, req).await {
            Ok(req) => next.run(req).await,
            Err(e) => e.into_response(),
        }
    } else {
        next.run(req).await
    };
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// The largest form the dashboard takes.
const MAX_FORM: usize = 64 * 1024;

#[derive(Deserialize)]
struct CsrfField {
    #[serde(rename = "_csrf", default)]
    csrf: String,
}

async fn check_post(ui: &Ui, req: Request) -> Result<Request, UiError> {
    if session::cross_site(req.headers()) {
        return Err(UiError::Refused(
            StatusCode::FORBIDDEN,
            "refused: this form was posted from another site".into(),
        ));
    }
    if req.uri().path() == "/ui/login" {
        return Ok(req);
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM).await.map_err(|_| {
        UiError::Refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "refused: a dashboard form is at most {} KiB",
                MAX_FORM / 1024
            ),
        )
    })?;
    // An unreadable form has no token: refused below like a missing one.
    let csrf = serde_urlencoded::from_bytes::<CsrfField>(&bytes).map_or(String::new(), |f| f.csrf);
    if !ui.sessions.check_csrf(&parts.headers, &csrf) {
        return Err(UiError::Refused(
            StatusCode::FORBIDDEN,
            "refused: the form's CSRF token is missing or not this session's; reload the page \
             (or sign in again) and send the form from it"
                .into(),
        ));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// A signed-in request: who (authenticated afresh from the session's token hash) and what
/// every page's frame needs (their name, the session's CSRF token, a notice).
pub struct Signed {
    who: Principal,
    chrome: view::Chrome,
    headers: HeaderMap,
}

impl FromRequestParts<Arc<Ui>> for Signed {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, ui: &Arc<Ui>) -> Result<Self, UiError> {
        let opened = ui.sessions.get(&parts.headers).ok_or(UiError::SignIn)?;
        let who = ui
            .plane
            .authenticate_hash(opened.token_hash)
            .await
            .map_err(|_| UiError::SignIn)?;
        Ok(Signed {
            chrome: view::Chrome {
                user: who.name.clone(),
                csrf: opened.csrf,
                notice: opened.notice,
                section: "",
            },
            who,
            headers: parts.headers.clone(),
        })
    }
}

impl Signed {
    /// Leave `notice` for the next page and go there (after an action: post, redirect, get).
    fn done(&self, ui: &Ui, notice: String, to: &str) -> Response {
        ui.sessions.notify(&self.headers, notice);
        Redirect::to(to).into_response()
    }
}

/// Why a page or action did not happen.
pub enum UiError {
    /// No session (or its token no longer works): to the sign-in page.
    SignIn,
    /// The plane refused or failed: its message, with its status.
    Control(ControlError),
    /// The dashboard itself refused (CSRF, another site, a form too large).
    Refused(StatusCode, String),
}

impl From<ControlError> for UiError {
    fn from(e: ControlError) -> Self {
        UiError::Control(e)
    }
}

impl From<askama::Error> for UiError {
    fn from(e: askama::Error) -> Self {
        UiError::Control(ControlError::internal(format!("render a page: {e}")))
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    reason: &'static str,
    message: String,
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            UiError::SignIn => return Redirect::to("/ui/login").into_response(),
            UiError::Control(e) => {
                let status = StatusCode::from_u16(e.code().http_status())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                (status, e.to_string())
            }
            UiError::Refused(status, message) => (status, message),
        };
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %Escaped(&message), "dashboard request failed");
        } else {
            tracing::info!(status = status.as_u16(), error = %Escaped(&message), "dashboard request refused");
        }
        let page = ErrorPage {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("Error"),
            message,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => (status, format!("{status}: {e}")).into_response(),
        }
    }
}

type Page = Result<Response, UiError>;

/// Render a page template.
fn page(t: &impl Template) -> Page {
    Ok(Html(t.render()?).into_response())
}

/// Any other path under `/ui/`: a page that says so (the API's fallback answers JSON).
async fn no_page(uri: axum::http::Uri) -> UiError {
    UiError::Refused(
        StatusCode::NOT_FOUND,
        format!(
            "no dashboard page at {}; start from the apps page",
            uri.path()
        ),
    )
}

#[derive(Template)]
#[template(path = "login.html")]
struct SignInPage {
    error: Option<String>,
}

async fn sign_in_page() -> Page {
    page(&SignInPage { error: None })
}

#[derive(Deserialize)]
struct SignInForm {
    token: String,
}

/// Check the token as the API checks a bearer token, then open a session for it.
async fn sign_in(State(ui): St, headers: HeaderMap, axum::Form(f): axum::Form<SignInForm>) -> Page {
    let token = f.token.trim();
    if let Err(e) = ui.plane.authenticate(Some(token)).await {
        let page = SignInPage {
            error: Some(e.to_string()),
        };
        return Ok((StatusCode::UNAUTHORIZED, Html(page.render()?)).into_response());
    }
    let id = ui.sessions.open(token)?;
    let cookie = session::set_cookie(&id, session::over_https(&headers));
    let mut res = Redirect::to("/ui/apps").into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ControlError::internal(e.to_string()))?,
    );
    Ok(res)
}

async fn sign_out(State(ui): St, headers: HeaderMap) -> Response {
    ui.sessions.close(&headers);
    let mut res = Redirect::to("/ui/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie(session::over_https(&headers))) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// The embedded static files: htmx (2.0.11 from the npm registry, 0BSD), our script and style.
async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    let (body, kind): (&'static [u8], &str) = match name.as_str() {
        "htmx.min.js" => (include_bytes!("assets/htmx.min.js"), "text/javascript"),
        "dashboard.js" => (include_bytes!("assets/dashboard.js"), "text/javascript"),
        "dashboard.css" => (include_bytes!("assets/dashboard.css"), "text/css"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}
