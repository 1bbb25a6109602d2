//! A `subsystem sftp` channel (RFC 4254 §6.5): OpenSSH's `sftp-server`
//! with the channel as its stdin and stdout, as sshd's `Subsystem sftp`
//! runs it. Not a session: the program ends with its channel (EOF on its
//! stdin), and the channel ends with the program (`exit-status`, EOF,
//! close). `scp` of OpenSSH 9.0 and later uses it too.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;

use russh::ChannelWriteHalf;
use russh::server::Msg;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use super::channel::ToChannel;
use crate::child::Child;

/// SSH_EXTENDED_DATA_STDERR (RFC 4254 §5.2).
const STDERR: u32 = 1;

/// What a subsystem channel's task needs.
pub struct Subsystem {
    /// The program (`[server] sftp_server`).
    pub program: PathBuf,
    /// Its working directory (the OS user's home, as sessions').
    pub home: PathBuf,
    /// Its whole environment (`HOME`, `USER`, `LOGNAME`, `PATH`, `LANG`).
    pub env: Vec<(String, String)>,
    /// The channel's writing side (window-aware).
    pub out: ChannelWriteHalf<Msg>,
    /// The client's data, and its EOF.
    pub inbox: mpsc::Receiver<ToChannel>,
}

/// Runs the program until it exits, then ends the channel.
pub async fn run(mut subsystem: Subsystem) {
    let out = &subsystem.out;
    let mut child = match spawn(&subsystem) {
        Ok(child) => child,
        Err(error) => {
            tracing::warn!(program = %subsystem.program.display(), %error, "starting the sftp server failed");
            let line = format!(
                "keepsh: cannot start {}: {error} (install openssh-sftp-server or set [server] sftp_server)\n",
                subsystem.program.display()
            );
            let _ = out.extended_data_bytes(STDERR, line.into_bytes()).await;
            let _ = out.exit_status(1).await;
            let _ = out.eof().await;
            let _ = out.close().await;
            return;
        }
    };
    tracing::info!(program = %subsystem.program.display(), "sftp subsystem started");
    let Ok((Some(stdin), Some(stdout), Some(stderr))) = pipes(&mut child) else {
        return; // all three were asked for as pipes
    };
    let output = async {
        let (data, errors) = tokio::join!(out.data(stdout), out.extended_data(STDERR, stderr));
        data.is_ok() && errors.is_ok()
    };
    // `feed` never finishes: the program's end (its output's end) does.
    let delivered = tokio::select! {
        delivered = output => delivered,
        () = feed(&mut subsystem.inbox, stdin) => false,
    };
    let status = match child.wait().await {
        // 128 + the signal's number for a signal, as shells report it.
        Ok(status) => status
            .code()
            .or_else(|| status.signal().map(|signal| 128 + signal))
            .map_or(1, |code| code as u32),
        Err(_) => 1,
    };
    tracing::info!(status, "sftp subsystem ended");
    if delivered {
        let _ = out.exit_status(status).await;
        let _ = out.eof().await;
    }
    let _ = out.close().await;
}

/// Starts the program in the home directory with the sessions' base
/// environment, stdio piped; killed if the channel's task is dropped.
fn spawn(subsystem: &Subsystem) -> std::io::Result<Child> {
    let mut command = std::process::Command::new(&subsystem.program);
    command
        .current_dir(&subsystem.home)
        .env_clear()
        .envs(subsystem.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Ok(Child::spawn(&mut command)?.kill_on_drop())
}

/// The program's stdin, stdout and stderr.
type Pipes = (
    Option<pipe::Sender>,
    Option<pipe::Receiver>,
    Option<pipe::Receiver>,
);

fn pipes(child: &mut Child) -> std::io::Result<Pipes> {
    Ok((child.stdin()?, child.stdout()?, child.stderr()?))
}

/// Writes the client's data to the program's stdin until the client's EOF
/// (or the program's end), then closes it; never returns.
async fn feed(inbox: &mut mpsc::Receiver<ToChannel>, mut stdin: pipe::Sender) {
    while let Some(message) = inbox.recv().await {
        match message {
            ToChannel::Input(data) => {
                if stdin.write_all(&data).await.is_err() {
                    break; // the program is gone
                }
            }
            ToChannel::Eof => break,
            ToChannel::Resize(_) | ToChannel::Signal(_) => {}
        }
    }
    // EOF on its stdin: sftp-server finishes what it was asked and exits.
    drop(stdin);
    std::future::pending::<()>().await;
}
