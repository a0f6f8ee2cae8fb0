//! The supervising process of one instance (`turnout __instance`).
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use super::wire::{Launch, Reply, Request};
use crate::instance::{Instance, InstanceSpec};

/// How long the process stays after its instance ended for good by itself (it crashed before
/// becoming healthy), so that the daemon can still read why.
const LINGER: Duration = Duration::from_secs(60);
/// How often it looks whether the instance ended by itself.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// A request line is small; anything longer is not from the daemon.
const MAX_REQUEST: u64 = 4096;

/// Run one instance until it is stopped. Reads the [`Launch`] as one JSON line on stdin, starts
/// the instance, listens on the launch's socket, then writes `ready` (or `error: …`) as one
/// line on stdout. Returns the process's exit status: 0 after a stop, 1 when the instance could
/// not be started, 2 when the launch could not be read.
pub async fn serve_instance() -> i32 {
    let mut stdout = tokio::io::stdout();
    let launch = match read_launch().await {
        Ok(launch) => launch,
        Err(e) => {
            let _ = stdout.write_all(format!("error: {e}\n").as_bytes()).await;
            return 2;
        }
    };
    let socket = launch.socket.clone();
    let started = async {
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket)
            .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
        let instance = Instance::start(launch.spec.clone())
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((listener, instance))
    };
    let (listener, instance) = match started.await {
        Ok(pair) => pair,
        Err(e) => {
            let _ = std::fs::remove_file(&socket);
            let _ = stdout.write_all(format!("error: {e}\n").as_bytes()).await;
            return 1;
        }
    };
    let _ = stdout.write_all(b"ready\n").await;
    let _ = stdout.flush().await;
    drop(stdout);

    let spec = Arc::new(launch.spec);
    let (stopped_tx, mut stopped) = watch::channel(false);
    let stopped_tx = Arc::new(stopped_tx);
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut ended_at: Option<tokio::time::Instant> = None;
    let mut check = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((conn, _)) = accepted {
                    tokio::spawn(answer(conn, instance.clone(), spec.clone(), stopped_tx.clone()));
                }
            }
            _ = stopped.changed() => break,
            _ = async { terminate.as_mut()?.recv().await }, if terminate.is_some() => {
                instance.stop().await;
                break;
            }
            _ = check.tick() => {
                if instance.status().state.is_final() {
                    let since = *ended_at.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= LINGER {
                        break;
                    }
                }
            }
        }
    }
    let _ = std::fs::remove_file(&socket);
    0
}

async fn read_launch() -> Result<Launch, String> {
    let mut line = String::new();
    BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await
        .map_err(|e| format!("cannot read the launch: {e}"))?;
    serde_json::from_str(&line).map_err(|e| format!("cannot read the launch: {e}"))
}

/// Answer one request on `conn`.
async fn answer(
    conn: UnixStream,
    instance: Arc<Instance>,
    spec: Arc<InstanceSpec>,
    stopped: Arc<watch::Sender<bool>>,
) {
    let (read, mut write) = conn.into_split();
    let mut line = String::new();
    if tokio::io::AsyncReadExt::take(BufReader::new(read), MAX_REQUEST)
        .read_line(&mut line)
        .await
        .is_err()
    {
        return;
    }
    let mut stop = false;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Watch) => {
            let mut changes = instance.status_changes();
            loop {
                let status = changes.borrow_and_update().clone();
                if write_reply(&mut write, &Reply::Status(status))
                    .await
                    .is_err()
                {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        }
        Err(e) => Reply::Refused(format!("unreadable request: {e}")),
        Ok(Request::Describe) => Reply::Described(Box::new(InstanceSpec::clone(&spec))),
        Ok(Request::Usage) => Reply::Usage(instance.usage()),
        Ok(Request::WaitHealthy) => {
            Reply::Done(instance.wait_healthy().await.map_err(|e| e.to_string()))
        }
        Ok(Request::CheckHealth) => {
            Reply::Done(instance.check_health().await.map_err(|e| e.to_string()))
        }
        Ok(Request::Stop) => {
            instance.stop().await;
            stop = true;
            Reply::Done(Ok(()))
        }
    };
    let _ = write_reply(&mut write, &reply).await;
    let _ = write.shutdown().await;
    if stop {
        let _ = stopped.send(true);
    }
}

async fn write_reply(write: &mut OwnedWriteHalf, reply: &Reply) -> std::io::Result<()> {
    let mut out = serde_json::to_vec(reply)?;
    out.push(b'\n');
    write.write_all(&out).await
}
