//! `sqlite_copy SRC DST [auto|files|backup]`: copies the SQLite database SRC to DST (which must
//! not exist) with Turnout's online copy, as an environment clone does, and prints the seconds
//! it took and the bytes copied. The benchmark (bench/run.sh, BENCH_ONLY=data-sqlite) runs it
//! while another process writes to SRC.

use std::path::PathBuf;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use turnout_data::Quiet;
use turnout_data::sqlite::{CopyMethod, SqliteDb};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let method = match args.get(2).map(String::as_str) {
        None | Some("auto") => CopyMethod::Auto,
        Some("files") => CopyMethod::Files,
        Some("backup") => CopyMethod::Backup,
        Some(other) => usage(&format!("unknown method {other:?}")),
    };
    let (Some(src), Some(dst), true) = (args.first(), args.get(1), args.len() <= 3) else {
        usage("give SRC and DST");
    };
    let absolute = |p: &String| {
        std::path::absolute(PathBuf::from(p)).unwrap_or_else(|e| usage(&e.to_string()))
    };
    let (src, dst) = (SqliteDb::at(absolute(src)), SqliteDb::at(absolute(dst)));
    let started = Instant::now();
    match src
        .copy_to_using(method, &dst, &Quiet, &CancellationToken::new())
        .await
    {
        Ok(bytes) => println!("{:.3} {bytes}", started.elapsed().as_secs_f64()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

fn usage(why: &str) -> ! {
    eprintln!("error: {why}\nusage: sqlite_copy SRC DST [auto|files|backup]");
    std::process::exit(2)
}
