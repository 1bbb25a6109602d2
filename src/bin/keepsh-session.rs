//! `keepsh-session`: the session process alone, which the server starts
//! for each session (`keepsh-session session-host --state-dir D --session
//! ID`, its spec on stdin: `session::host`). It links no SSH and no crypto,
//! and build.rs links it without PIE, so that each of a thousand idle
//! sessions costs little memory (BENCHMARKS.md, "Memory"). `keepsh` runs
//! sessions with its own hidden `session-host` when this file is missing or
//! of another build.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "keepsh-session",
    version,
    about = "One keepsh session's process (started by the keepsh server)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one session's process. Reads its spec on stdin.
    SessionHost {
        /// The server's state directory (its `sessions/` holds the socket).
        #[arg(long)]
        state_dir: PathBuf,
        /// The session's id, so that `ps` shows which session this is.
        #[arg(long)]
        session: String,
    },
    /// Print the session protocol version this build speaks (the server
    /// checks it before starting sessions with this executable).
    WireVersion,
}

fn main() -> std::process::ExitCode {
    match parse().command {
        Cmd::WireVersion => {
            println!("{}", keepsh::protocol::wire::VERSION);
            std::process::ExitCode::SUCCESS
        }
        Cmd::SessionHost { state_dir, session } => {
            keepsh::logging::to_session_file(&state_dir, &session);
            match keepsh::session::host::run(&state_dir, &session) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("keepsh-session: {error}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

/// The command line, parsed in a frame of its own (not inlined into
/// `main`, whose frame stays under the session for its whole life).
#[inline(never)]
fn parse() -> Cli {
    Cli::parse()
}
