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

impl Client {
    pub fn new(base: &str) -> anyhow::Result<Client> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("invalid API address '{base}': give a URL such as http://127.0.0.1:7070");
        }
        // Who is asking, for the domain history (until access control authenticates users).
        let mut headers = reqwest::header::HeaderMap::new();
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".to_owned());
        if let Ok(value) = reqwest::header::HeaderValue::from_str(&user) {
            headers.insert("x-turnout-actor", value);
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
