//! The typed client of the Turnout API: one call per [`Endpoint`], answers decoded into the
//! endpoint's `Answer` type, errors as [`Error`] carrying the API's [`ErrorCode`]. The CLI, the
//! integration tests and anything else that talks to a daemon use this, so no caller assembles
//! a URL.
#![forbid(unsafe_code)]

mod run;
mod sse;

use futures_util::StreamExt;
use reqwest::StatusCode;
use turnout_model::endpoint::{Endpoint, EventStream, Method, RunStream, TextStream};
use turnout_model::run::RUN_PROTOCOL;
use turnout_model::{ApprovalPending, ErrorBody, ErrorCode, JobEvent};

pub use run::{RunInput, RunOutput};
pub use sse::{SseEvent, SseParser};

/// What can go wrong talking to the API, and on which side.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid API address '{0}': give a URL such as http://127.0.0.1:7070")]
    BadAddress(String),
    #[error("the API token has characters an HTTP header cannot carry")]
    BadToken,
    #[error("cannot reach the Turnout API at {base}: is `turnout serve` running there? ({source})")]
    Unreachable {
        base: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("request to {url} failed: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The API refused or failed the request: `code` is stable, `message` is for people.
    #[error("{message}")]
    Api {
        status: u16,
        code: ErrorCode,
        message: String,
    },
    /// Accepted, but waiting for a second owner's approval (HTTP 202).
    #[error("{}", .0.message)]
    PendingApproval(ApprovalPending),
    /// An answer that is not this client's contract (an older or newer daemon, or not Turnout).
    #[error("the API at {url} answered {status}, which this client cannot read: {detail}")]
    Unexpected {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("the run's connection to {url} broke off: {detail}")]
    RunBroken { url: String, detail: String },
    #[error("the answer from {url} broke off: {source}")]
    Stream {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

impl Error {
    /// The API's error code, when the API answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// `base`: `http://HOST:PORT` of a daemon's API. `token`: the bearer token to send to it,
    /// and only to it.
    pub fn new(base: &str, token: Option<&str>) -> Result<Client, Error> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::BadAddress(base));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                    .map_err(|_| Error::BadToken)?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .default_headers(headers)
            .build()
            .map_err(|source| Error::Transport {
                url: base.clone(),
                source,
            })?;
        Ok(Client { base, http })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Send the request and check the status; the body is still unread.
    async fn send<E: Endpoint>(&self, endpoint: &E) -> Result<(String, reqwest::Response), Error> {
        let url = format!("{}{}", self.base, endpoint.path());
        let method = match E::METHOD {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Delete => reqwest::Method::DELETE,
        };
        let mut req = self.http.request(method, &url);
        if let Some(body) = endpoint.body() {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| self.transport(&url, e))?;
        let status = resp.status();
        if status == StatusCode::ACCEPTED {
            let pending = read_json(&url, resp).await?;
            return Err(Error::PendingApproval(pending));
        }
        if status.is_success() {
            return Ok((url, resp));
        }
        Err(refusal(url, resp).await)
    }

    fn transport(&self, url: &str, source: reqwest::Error) -> Error {
        if source.is_connect() {
            Error::Unreachable {
                base: self.base.clone(),
                source,
            }
        } else {
            Error::Transport {
                url: url.to_owned(),
                source,
            }
        }
    }

    /// Start a command with `turnout run`'s endpoint: the connection is upgraded to its frames
    /// (`turnout_model::run`). Send input with [`RunInput::send`], read its output and its end
    /// with [`RunOutput::next`].
    pub async fn run<E: Endpoint<Answer = RunStream>>(
        &self,
        endpoint: &E,
    ) -> Result<(RunInput, RunOutput), Error> {
        let url = format!("{}{}", self.base, endpoint.path());
        let mut req = self
            .http
            .post(&url)
            .header(reqwest::header::CONNECTION, "upgrade")
            .header(reqwest::header::UPGRADE, RUN_PROTOCOL);
        if let Some(body) = endpoint.body() {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| self.transport(&url, e))?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(refusal(url, resp).await);
        }
        let upgraded = resp.upgrade().await.map_err(|source| Error::Stream {
            url: url.clone(),
            source,
        })?;
        let (from, to) = tokio::io::split(upgraded);
        Ok((RunInput { to }, RunOutput { url, from }))
    }

    /// Call an endpoint that answers JSON (or nothing, for `Answer = ()`).
    pub async fn call<E: Endpoint>(&self, endpoint: &E) -> Result<E::Answer, Error> {
        let (url, resp) = self.send(endpoint).await?;
        read_json(&url, resp).await
    }

    /// Call an endpoint that streams text and hand each chunk to `out` as it arrives.
    pub async fn text<E: Endpoint<Answer = TextStream>>(
        &self,
        endpoint: &E,
        mut out: impl FnMut(&[u8]),
    ) -> Result<(), Error> {
        let (url, resp) = self.send(endpoint).await?;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| Error::Stream {
                url: url.clone(),
                source,
            })?;
            out(&chunk);
        }
        Ok(())
    }

    /// Open a job's event stream; read it with [`JobEvents::next`].
    pub async fn events<E: Endpoint<Answer = EventStream>>(
        &self,
        endpoint: &E,
    ) -> Result<JobEvents, Error> {
        let (url, resp) = self.send(endpoint).await?;
        Ok(JobEvents {
            url,
            stream: Box::pin(resp.bytes_stream()),
            parser: SseParser::default(),
            ready: std::collections::VecDeque::new(),
        })
    }
}

/// The API's refusal of a request, as an [`Error`].
async fn refusal(url: String, resp: reqwest::Response) -> Error {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(e) => Error::Api {
            status: status.as_u16(),
            code: e.code,
            message: e.error,
        },
        Err(_) => Error::Unexpected {
            url,
            status: status.as_u16(),
            detail: text.trim().chars().take(300).collect(),
        },
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(
    url: &str,
    resp: reqwest::Response,
) -> Result<T, Error> {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.map_err(|source| Error::Stream {
        url: url.to_owned(),
        source,
    })?;
    // An empty answer (204) is JSON `null`, which is what `()` reads.
    let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
    serde_json::from_slice(bytes).map_err(|e| Error::Unexpected {
        url: url.to_owned(),
        status,
        detail: e.to_string(),
    })
}

type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// A job's events as they arrive. A late watcher first gets every earlier event.
pub struct JobEvents {
    url: String,
    stream: ByteStream,
    parser: SseParser,
    ready: std::collections::VecDeque<SseEvent>,
}

impl JobEvents {
    /// The next event; None once the stream has ended (after `end`, or if it broke off cleanly
    /// before it: the caller decides what a missing `end` means).
    pub async fn next(&mut self) -> Option<Result<JobEvent, Error>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(
                    serde_json::from_str(&event.data).map_err(|e| Error::Unexpected {
                        url: self.url.clone(),
                        status: 200,
                        detail: format!("a job event that is not JSON of a JobEvent: {e}"),
                    }),
                );
            }
            match self.stream.next().await? {
                Ok(chunk) => self.ready.extend(self.parser.push(&chunk)),
                Err(source) => {
                    return Some(Err(Error::Stream {
                        url: self.url.clone(),
                        source,
                    }));
                }
            }
        }
    }
}
