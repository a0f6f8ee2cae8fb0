//! Everything the CLI prints to stdout goes through `outln!` (and `bytes` for log text). When
//! the reader is gone (`turnout release list | head`) a write fails with EPIPE (Rust ignores
//! SIGPIPE, and `println!` would panic with a backtrace): that is the end of the output, not an
//! error, so the CLI exits 0 quietly, as ripgrep does.
use std::fmt;
use std::io::{self, Write};

pub fn text(args: fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    checked(out.write_fmt(args));
}

pub fn bytes(data: &[u8]) {
    let mut out = io::stdout().lock();
    checked(out.write_all(data).and_then(|()| out.flush()));
}

fn checked(result: io::Result<()>) {
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: cannot write to standard output: {e}");
            std::process::exit(1);
        }
    }
}
