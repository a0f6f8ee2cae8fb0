//! The API client every command but `serve` uses.
use anyhow::{Context, anyhow, bail};
use futures_util::StreamExt;
use reqwest::{Method, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use turnout_model::{DeployEvent, ErrorBody};

pub struct Client {
    base: String,
    http: reqwest::Client,
}

/// The request was accepted but waits for a second owner's approval (HTTP 202).
#[derive(Debug)]
pub struct PendingApproval(pub turnout_model::ApprovalPending);

impl std::fmt::Display for PendingApproval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for PendingApproval {}

impl Client {
    /// `token`: `TURNOUT_TOKEN`, else the owner token in the daemon's home (same machine).
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Client> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("invalid API address '{base}': give a URL such as http://127.0.0.1:7070");
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                    .context("the API token has characters a header cannot carry")?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        Ok(Client {
            base,
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(5))
                .default_headers(headers)
                .build()?,
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<Response> {
        let url = format!("{}/api/v1{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() {
                anyhow!(
                    "cannot reach the Turnout API at {}: is `turnout serve` running? (set --api or TURNOUT_API to reach another daemon)",
                    self.base
                )
            } else {
                anyhow!("request to {url} failed: {e}")
            }
        })?;
        if resp.status() == reqwest::StatusCode::ACCEPTED {
            let pending: turnout_model::ApprovalPending = resp
                .json()
                .await
                .context("the API sent a response this client cannot read")?;
            return Err(PendingApproval(pending).into());
        }
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(e) => Err(anyhow!(e.error)),
            Err(_) => Err(anyhow!("the API answered {status}: {}", text.trim())),
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.send(Method::GET, path, None::<&()>).await?;
        resp.json()
            .await
            .context("the API sent a response this client cannot read")
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let resp = self.send(Method::POST, path, Some(body)).await?;
        resp.json()
            .await
            .context("the API sent a response this client cannot read")
    }

    /// POST where the answer has no body (204).
    pub async fn post_empty<B: Serialize>(&self, path: &str, body: &B) -> anyhow::Result<()> {
        self.send(Method::POST, path, Some(body)).await.map(drop)
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.send(Method::DELETE, path, None::<&()>).await.map(drop)
    }

    /// POST a deploy and hand each streamed event to `on_event` as it arrives.
    pub async fn deploy<B: Serialize>(
        &self,
        path: &str,
        body: &B,
        mut on_event: impl FnMut(DeployEvent),
    ) -> anyhow::Result<()> {
        let resp = self.send(Method::POST, path, Some(body)).await?;
        let mut stream = resp.bytes_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(&chunk.context("the deploy stream broke off")?);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let event: DeployEvent = serde_json::from_slice(&line)
                    .context("the API sent a deploy event this client cannot read")?;
                on_event(event);
            }
        }
        Ok(())
    }

    /// GET a text stream and hand each chunk to `out` as it arrives.
    pub async fn stream_text(&self, path: &str, mut out: impl FnMut(&[u8])) -> anyhow::Result<()> {
        let resp = self.send(Method::GET, path, None::<&()>).await?;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            out(&chunk.context("the log stream broke off")?);
        }
        Ok(())
    }
}
