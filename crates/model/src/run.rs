//! `turnout run APP/ENV -- CMD [ARGS…]`: what the request carries, its bounds, and the framed
//! protocol both ends speak over the upgraded API connection.
//!
//! A frame is a one-byte tag, the payload's length (4 bytes, big-endian) and the payload, at
//! most [`MAX_FRAME`] bytes. The client sends standard input, its end, window sizes and
//! signals; the daemon sends standard output and standard error (apart, byte for byte), then
//! one last frame: the exit status, or why the command could not start.
use serde::{Deserialize, Serialize};

/// The protocol name in the `Upgrade` header of the request and of the daemon's 101 answer.
pub const RUN_PROTOCOL: &str = "turnout-run/1";

/// At most this many arguments (the command included).
pub const MAX_RUN_ARGS: usize = 4096;

/// At most this many bytes in all the arguments together.
pub const MAX_RUN_ARGV_BYTES: usize = 128 * 1024;

/// The largest terminal side, in columns or rows.
pub const MAX_TERM_SIDE: u16 = 1000;

/// The largest payload of one frame.
pub const MAX_FRAME: usize = 64 * 1024;

/// `POST …/envs/{env}/run`: the command, as an argument vector (never given to a shell).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    pub argv: Vec<String>,
    /// On a pseudo-terminal of this size; None: standard input, output and error are pipes.
    #[serde(default)]
    pub tty: Option<TermSize>,
    /// Give the command `PORT`, a port free in the environment's network.
    #[serde(default)]
    pub port: bool,
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TermSize {
    pub cols: u16,
    pub rows: u16,
}

impl TermSize {
    /// Refused: a side of 0 or over [`MAX_TERM_SIDE`].
    pub fn check(self) -> Result<TermSize, String> {
        let ok = |n: u16| (1..=MAX_TERM_SIDE).contains(&n);
        if ok(self.cols) && ok(self.rows) {
            Ok(self)
        } else {
            Err(format!(
                "terminal size {}x{} is out of range: columns and rows must be 1 to {MAX_TERM_SIDE}",
                self.cols, self.rows
            ))
        }
    }
}

impl RunRequest {
    /// The rules both ends hold a request to: a command, bounded in count and size, no NUL
    /// byte (an argument cannot carry one to the program), a terminal size in range.
    pub fn check(&self) -> Result<(), String> {
        if self.argv.first().is_none_or(String::is_empty) {
            return Err(
                "no command to run: give it after `--`, e.g. `turnout run shop/staging -- ls -l`"
                    .into(),
            );
        }
        if self.argv.len() > MAX_RUN_ARGS {
            return Err(format!(
                "{} arguments is too many: at most {MAX_RUN_ARGS}; pass long lists through a file or standard input",
                self.argv.len()
            ));
        }
        let bytes: usize = self.argv.iter().map(|a| a.len() + 1).sum();
        if bytes > MAX_RUN_ARGV_BYTES {
            return Err(format!(
                "the command line is {bytes} bytes: at most {MAX_RUN_ARGV_BYTES}; pass long input through a file or standard input"
            ));
        }
        if let Some(i) = self.argv.iter().position(|a| a.contains('\0')) {
            return Err(format!(
                "argument {} contains a NUL byte, which no program can receive; remove it",
                i + 1
            ));
        }
        if let Some(size) = self.tty {
            size.check()?;
        }
        Ok(())
    }

    /// The command line as a POSIX shell would read it back (for the audit log and messages;
    /// it is never run through a shell).
    pub fn command_line(&self) -> String {
        self.argv
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// One argument quoted for a POSIX shell: as is when it is made only of safe characters, else
/// in single quotes (a quote inside as `'\''`).
pub fn shell_quote(arg: &str) -> String {
    let safe = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if safe {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// A signal the client may send to the command's process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunSignal {
    Hup,
    Int,
    Quit,
    Kill,
    Usr1,
    Usr2,
    Term,
}

impl RunSignal {
    pub const ALL: [RunSignal; 7] = [
        RunSignal::Hup,
        RunSignal::Int,
        RunSignal::Quit,
        RunSignal::Kill,
        RunSignal::Usr1,
        RunSignal::Usr2,
        RunSignal::Term,
    ];

    /// Its number on Linux.
    pub fn number(self) -> u8 {
        match self {
            RunSignal::Hup => 1,
            RunSignal::Int => 2,
            RunSignal::Quit => 3,
            RunSignal::Kill => 9,
            RunSignal::Usr1 => 10,
            RunSignal::Usr2 => 12,
            RunSignal::Term => 15,
        }
    }

    pub fn from_number(n: u8) -> Option<RunSignal> {
        RunSignal::ALL.into_iter().find(|s| s.number() == n)
    }
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunExit {
    Code(u8),
    Signal(u8),
}

impl RunExit {
    /// The status a shell would report: the code, or 128 + the signal.
    pub fn status(self) -> i32 {
        match self {
            RunExit::Code(c) => i32::from(c),
            RunExit::Signal(s) => 128 + i32::from(s),
        }
    }
}

impl std::fmt::Display for RunExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunExit::Code(c) => write!(f, "exit status {c}"),
            RunExit::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// From the client to the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    Stdin(Vec<u8>),
    /// No more input: the command's standard input is closed (on a terminal: end-of-file,
    /// Ctrl-D, is typed).
    StdinEof,
    Resize(TermSize),
    Signal(RunSignal),
}

/// From the daemon to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The last frame of a command that ran.
    Exit(RunExit),
    /// The last frame of a command that could not start (a missing program): why.
    Error(String),
}

/// A frame that breaks the protocol: the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad run frame: {0}")]
pub struct FrameError(String);

/// The header's length.
pub const FRAME_HEADER: usize = 5;

/// Tag and payload length from a header; refused over [`MAX_FRAME`].
pub fn frame_header(header: [u8; FRAME_HEADER]) -> Result<(u8, usize), FrameError> {
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError(format!(
            "a payload of {len} bytes (at most {MAX_FRAME})"
        )));
    }
    Ok((header[0], len))
}

fn frame(tag: u8, payload: &[u8]) -> Vec<u8> {
    debug_assert!(payload.len() <= MAX_FRAME);
    let mut out = Vec::with_capacity(FRAME_HEADER + payload.len());
    out.push(tag);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn exact<const N: usize>(what: &str, payload: &[u8]) -> Result<[u8; N], FrameError> {
    payload
        .try_into()
        .map_err(|_| FrameError(format!("{what} with {} bytes, not {N}", payload.len())))
}

impl ClientFrame {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ClientFrame::Stdin(data) => frame(1, data),
            ClientFrame::StdinEof => frame(2, &[]),
            ClientFrame::Resize(s) => {
                let [c1, c2] = s.cols.to_be_bytes();
                let [r1, r2] = s.rows.to_be_bytes();
                frame(3, &[c1, c2, r1, r2])
            }
            ClientFrame::Signal(s) => frame(4, &[s.number()]),
        }
    }

    pub fn decode(tag: u8, payload: Vec<u8>) -> Result<ClientFrame, FrameError> {
        Ok(match tag {
            1 => ClientFrame::Stdin(payload),
            2 => {
                exact::<0>("end of input", &payload)?;
                ClientFrame::StdinEof
            }
            3 => {
                let [c1, c2, r1, r2] = exact::<4>("a resize", &payload)?;
                let size = TermSize {
                    cols: u16::from_be_bytes([c1, c2]),
                    rows: u16::from_be_bytes([r1, r2]),
                };
                ClientFrame::Resize(size.check().map_err(FrameError)?)
            }
            4 => {
                let [n] = exact::<1>("a signal", &payload)?;
                ClientFrame::Signal(
                    RunSignal::from_number(n).ok_or_else(|| {
                        FrameError(format!("signal {n} may not be sent to a run"))
                    })?,
                )
            }
            t => return Err(FrameError(format!("unknown client frame tag {t}"))),
        })
    }
}

impl ServerFrame {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ServerFrame::Stdout(data) => frame(0x11, data),
            ServerFrame::Stderr(data) => frame(0x12, data),
            ServerFrame::Exit(RunExit::Code(c)) => frame(0x13, &[0, *c]),
            ServerFrame::Exit(RunExit::Signal(s)) => frame(0x13, &[1, *s]),
            ServerFrame::Error(message) => {
                let bytes = message.as_bytes();
                frame(0x14, &bytes[..bytes.len().min(MAX_FRAME)])
            }
        }
    }

    pub fn decode(tag: u8, payload: Vec<u8>) -> Result<ServerFrame, FrameError> {
        Ok(match tag {
            0x11 => ServerFrame::Stdout(payload),
            0x12 => ServerFrame::Stderr(payload),
            0x13 => match exact::<2>("an exit status", &payload)? {
                [0, c] => ServerFrame::Exit(RunExit::Code(c)),
                [1, s] => ServerFrame::Exit(RunExit::Signal(s)),
                [k, _] => return Err(FrameError(format!("unknown exit kind {k}"))),
            },
            0x14 => ServerFrame::Error(String::from_utf8_lossy(&payload).into_owned()),
            t => return Err(FrameError(format!("unknown server frame tag {t}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(argv: &[&str]) -> RunRequest {
        RunRequest {
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            tty: None,
            port: false,
        }
    }

    fn round_trip_client(f: ClientFrame) {
        let bytes = f.encode();
        let (tag, len) = frame_header(bytes[..FRAME_HEADER].try_into().unwrap()).unwrap();
        assert_eq!(len, bytes.len() - FRAME_HEADER);
        assert_eq!(
            ClientFrame::decode(tag, bytes[FRAME_HEADER..].to_vec()).unwrap(),
            f
        );
    }

    #[test]
    fn frames_round_trip_and_bad_ones_are_refused() {
        round_trip_client(ClientFrame::Stdin((0..=255).collect()));
        round_trip_client(ClientFrame::StdinEof);
        round_trip_client(ClientFrame::Resize(TermSize { cols: 80, rows: 24 }));
        for s in RunSignal::ALL {
            round_trip_client(ClientFrame::Signal(s));
        }
        for f in [
            ServerFrame::Stdout(vec![0, 255, 10]),
            ServerFrame::Stderr(vec![]),
            ServerFrame::Exit(RunExit::Code(3)),
            ServerFrame::Exit(RunExit::Signal(9)),
            ServerFrame::Error("no such program".into()),
        ] {
            let bytes = f.encode();
            let (tag, _) = frame_header(bytes[..FRAME_HEADER].try_into().unwrap()).unwrap();
            assert_eq!(
                ServerFrame::decode(tag, bytes[FRAME_HEADER..].to_vec()).unwrap(),
                f
            );
        }
        assert!(frame_header([1, 0, 1, 0, 1]).is_err());
        assert!(ClientFrame::decode(3, vec![0, 0, 0, 24]).is_err());
        assert!(ClientFrame::decode(4, vec![19]).is_err());
        assert!(ClientFrame::decode(9, vec![]).is_err());
        assert_eq!(RunExit::Signal(2).status(), 130);
    }

    #[test]
    fn requests_are_bounded() {
        assert!(req(&["ls", "-l"]).check().is_ok());
        assert!(req(&[]).check().unwrap_err().contains("no command"));
        assert!(req(&[""]).check().is_err());
        assert!(req(&["echo", "a\0b"]).check().unwrap_err().contains("NUL"));
        let many = vec!["x"; MAX_RUN_ARGS + 1];
        assert!(req(&many).check().unwrap_err().contains("too many"));
        let long = "y".repeat(MAX_RUN_ARGV_BYTES);
        assert!(req(&["echo", &long]).check().unwrap_err().contains("bytes"));
        let mut tty = req(&["bash"]);
        tty.tty = Some(TermSize { cols: 0, rows: 24 });
        assert!(tty.check().unwrap_err().contains("out of range"));
    }

    #[test]
    fn command_lines_read_back_as_the_argv() {
        assert_eq!(
            req(&["sh", "-c", "echo 'hi'; ls", "a b", ""]).command_line(),
            r#"sh -c 'echo '\''hi'\''; ls' 'a b' ''"#
        );
        assert_eq!(req(&["ls", "-l", "/tmp"]).command_line(), "ls -l /tmp");
    }
}
