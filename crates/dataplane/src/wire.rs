//! The conversation on the data plane's control socket: JSON lines, each request with an id
//! that its answer repeats (answers may come out of order: a drain is answered when it ends).
//! A connection whose first line is `listeners` gets the listening sockets instead (HTTP, then
//! HTTPS when it has one), passed with SCM_RIGHTS, and is closed.
use std::collections::BTreeMap;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};
use serde::{Deserialize, Serialize};

use crate::spec::{
    ChallengeSpec, DrainReport, EnvResponses, LinkKey, LinkSpec, RouteSpec, StatsRow, TlsSpec,
};

/// The first line of a connection that asks for the listening sockets; the answer with the
/// HTTP socket alone.
pub(crate) const LISTENERS: &[u8] = b"listeners\n";
/// The answer with the HTTP socket and the HTTPS one, in that order.
pub(crate) const LISTENERS_TLS: &[u8] = b"listeners https\n";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Call {
    pub id: u64,
    pub request: Request,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(crate) enum Request {
    /// Who are you, and what do you serve?
    Hello,
    /// Change these hosts' routes (an absent host in `set` is added) and remove those.
    Routes {
        set: Vec<(String, RouteSpec)>,
        remove: Vec<String>,
    },
    /// Change these hosts' HTTPS (certificate, redirect, HSTS) and remove those.
    Tls {
        set: Vec<(String, TlsSpec)>,
        remove: Vec<String>,
    },
    /// Answer (`on`) or stop answering an ACME challenge.
    Challenge {
        spec: ChallengeSpec,
        on: bool,
    },
    /// The instance is (not) being restarted after a crash: 503 instead of 502 meanwhile.
    Restarting {
        upstream: String,
        on: bool,
    },
    /// Answer once the instance's drain (it left the table) has ended.
    Drained {
        upstream: String,
    },
    Stats,
    /// Each environment's responses, all its hosts together (`EnvResponses`).
    Responses,
    /// Answer once the sleeping environments some request asked to wake changed since
    /// generation `seen` (at once if they did already): the generation now and every
    /// environment asked for whose route still sleeps.
    Wakes {
        seen: u64,
    },
    /// Serve internal URLs inside this network namespace too.
    Listen {
        namespace: String,
    },
    Unlisten {
        namespace: String,
    },
    /// Listen for these links (a key already listened for with another host is moved to the
    /// new one) and stop listening for those.
    Links {
        set: Vec<LinkSpec>,
        remove: Vec<LinkKey>,
    },
    /// Start accepting (after taking over from the predecessor, if any).
    Serve,
    /// A successor accepts now: stop accepting, finish what is in flight, exit.
    Retire,
    /// Full stop: stop accepting, finish what is in flight (up to the grace), exit.
    Stop,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Reply {
    pub id: u64,
    pub answer: Result<Answer, String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(crate) enum Answer {
    Hello(Hello),
    Done,
    Drained(DrainReport),
    Stats(Vec<StatsRow>),
    Responses(Vec<EnvResponses>),
    Wakes {
        generation: u64,
        envs: Vec<(String, String)>,
    },
}

/// What a data plane says about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    pub pid: u32,
    /// Which binary it runs (see [`identity`](crate::identity)).
    pub identity: String,
    /// Where its listening sockets are bound.
    pub http: SocketAddr,
    #[serde(default)]
    pub https: Option<SocketAddr>,
    pub serving: bool,
    pub routes: BTreeMap<String, RouteSpec>,
    /// The hosts it has a certificate for.
    #[serde(default)]
    pub tls: Vec<String>,
    pub restarting: Vec<String>,
    pub namespaces: Vec<String>,
    /// The links it listens for.
    #[serde(default)]
    pub links: Vec<LinkSpec>,
}

/// One line of JSON.
pub(crate) fn line(value: &impl Serialize) -> Vec<u8> {
    let mut out = serde_json::to_vec(value).expect("plain data serializes");
    out.push(b'\n');
    out
}

/// Send `fds` with `header` over a blocking unix stream.
pub fn send_fds(conn: &impl AsFd, header: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(fds));
    sendmsg(
        conn,
        &[IoSlice::new(header)],
        &mut control,
        SendFlags::empty(),
    )?;
    Ok(())
}

/// Receive up to `max_fds` descriptors and the header (at most `max_header` bytes) they came
/// with (blocking), for a caller that accepts more than one header.
pub fn recv_fds_any(
    conn: &impl AsFd,
    max_header: usize,
    max_fds: usize,
    what: &str,
) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut got = vec![0u8; max_header];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(max_fds))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = recvmsg(
        conn,
        &mut [IoSliceMut::new(&mut got)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| std::io::Error::other(format!("{what}: {e}")))?;
    let fds: Vec<OwnedFd> = control
        .drain()
        .filter_map(|message| match message {
            RecvAncillaryMessage::ScmRights(fds) => Some(fds),
            _ => None,
        })
        .flatten()
        .collect();
    got.truncate(received.bytes);
    Ok((got, fds))
}
