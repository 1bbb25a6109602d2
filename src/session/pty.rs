//! The PTY and child process of one session, bridged to tokio.
//!
//! The *reader* is one small thread that reads the master continuously
//! (whether or not anyone is attached) into a bounded queue: on its own
//! thread it drains the PTY the moment output arrives even while the
//! runtime's workers are busy encrypting, which measured 75 MB/s of bulk
//! output against 48 MB/s for a reader task. The *writer* is a task on the
//! master, registered with tokio by pty-process (input on its own path:
//! some programs deadlock when written to while their output is not read;
//! and no thread wake-up on a keystroke's way in), and the *waiter* is a
//! task that reaps the child and reports its exit status.
//!
//! Traps handled here (see shared/notes/tech-brief.md §2): the parent's copy
//! of the slave is closed right after spawning, or EOF never arrives;
//! signals go to process groups, not the child pid; the child starts from a
//! cleared environment.

use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;

use bytes::Bytes;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::protocol::host::{SpawnError, SpawnSpec};
use crate::protocol::{ExitStatus, PtySize};

/// Bytes read from the PTY per read call. Also the largest output chunk.
const READ_CHUNK: usize = 32 * 1024;
/// Output chunks queued between the reader thread and the session task.
const OUTPUT_QUEUE: usize = 16;
/// Input chunks queued for the writer task.
pub const INPUT_QUEUE: usize = 64;

/// The endpoints of a running PTY, owned by the session task.
pub struct Pty {
    /// A duplicate of the master, for the window size and the foreground
    /// process group; reads and writes go through the tasks' halves.
    control: OwnedFd,
    /// The child's pid, which is also its process group and session id
    /// (pty-process calls setsid(2) before exec).
    pid: Option<Pid>,
    /// Feeds the writer task.
    pub input: mpsc::Sender<Bytes>,
}

/// The streams a [`Pty`] produces.
pub struct PtyStreams {
    /// Output chunks in order; closes at EOF (all slave fds closed).
    pub output: mpsc::Receiver<Bytes>,
    /// The child's exit status, once reaped.
    pub exit: oneshot::Receiver<ExitStatus>,
}

/// Opens a PTY of `spec.size`, starts the program on it, the reader thread
/// and the writer and waiter tasks (on the current tokio runtime, in the
/// current span).
///
/// # Errors
/// [`SpawnError`] when no PTY can be opened or the program cannot be executed.
pub fn spawn(spec: &SpawnSpec) -> Result<(Pty, PtyStreams), SpawnError> {
    let (program, args) = program(spec)?;
    let open_error = |e: pty_process::Error| SpawnError::OpenPty(e.to_string());
    let (pty, pts) = pty_process::open().map_err(open_error)?;
    pty.resize(winsize(spec.size)).map_err(open_error)?;
    // Close-on-exec, like the master itself: a plain dup(2) would leak this
    // session's master into every later session's program, which then keeps
    // the PTY (and its shell) alive after the session ends.
    let dup =
        || rustix::io::fcntl_dupfd_cloexec(&pty, 0).map_err(|e| SpawnError::OpenPty(e.to_string()));
    let (control, reader) = (dup()?, dup()?);
    // Consuming `pts` closes the parent's copy of the slave once spawned.
    let child = command(spec, &program, args)
        .spawn(pts)
        .map_err(|e| SpawnError::Exec {
            program,
            reason: e.to_string(),
        })?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .map(Pid::from_raw);

    let (output_tx, output) = mpsc::channel(OUTPUT_QUEUE);
    let (input, input_rx) = mpsc::channel(INPUT_QUEUE);
    let (exit_tx, exit) = oneshot::channel();
    let reading = std::thread::Builder::new()
        .name("keepsh-pty-read".to_owned())
        .stack_size(64 * 1024)
        .spawn(move || read_loop(&reader, &output_tx));
    if let Err(error) = reading {
        // The session then ends as if the PTY had closed.
        tracing::error!(%error, "cannot start the PTY reader thread");
    }
    tokio::spawn(write_loop(pty, input_rx).in_current_span());
    tokio::spawn(wait(child, exit_tx).in_current_span());
    Ok((
        Pty {
            control,
            pid,
            input,
        },
        PtyStreams { output, exit },
    ))
}

/// The program and its arguments: the command, found in the session's
/// `PATH`, or the login shell.
fn program(spec: &SpawnSpec) -> Result<(String, &[String]), SpawnError> {
    match spec.command.split_first() {
        Some((program, args)) => {
            let path = spec
                .env
                .iter()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| v.as_str());
            if which::which_in(program, path, &spec.cwd).is_err() {
                return Err(SpawnError::NotFound(program.clone()));
            }
            Ok((program.clone(), args))
        }
        None => Ok((spec.shell.display().to_string(), &[][..])),
    }
}

/// The program's command: a cleared environment but `spec.env` and
/// `SHELL`, in `spec.cwd`; a login shell gets argv[0] `-NAME`, as sshd and
/// login(1) start it.
fn command(spec: &SpawnSpec, program: &str, args: &[String]) -> pty_process::Command {
    let cmd = pty_process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env("SHELL", &spec.shell)
        .current_dir(&spec.cwd);
    if !spec.command.is_empty() {
        return cmd;
    }
    let name = spec
        .shell
        .file_name()
        .map_or_else(|| "sh".into(), |n| n.to_string_lossy());
    cmd.arg0(format!("-{name}"))
}

/// Reaps the program; sends its exit status.
async fn wait(mut child: tokio::process::Child, exit: oneshot::Sender<ExitStatus>) {
    let status = match child.wait().await {
        Ok(status) => exit_status(status),
        Err(error) => {
            tracing::warn!(%error, "waiting for the program failed");
            ExitStatus {
                code: 1,
                signal: None,
            }
        }
    };
    let _ = exit.send(status);
}

/// The exit status as RFC 4254 §6.10 needs it: a signal keeps its name
/// for `exit-signal`; the code is 128 + the signal number, as shells report.
fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    if let Some(number) = status.signal() {
        let name = Signal::try_from(number).map_or_else(
            |_| number.to_string(),
            |s| s.as_str().trim_start_matches("SIG").to_owned(),
        );
        return ExitStatus {
            code: 128 + u32::try_from(number).unwrap_or(0),
            signal: Some(name),
        };
    }
    ExitStatus {
        code: status
            .code()
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(1),
        signal: None,
    }
}

fn winsize(size: PtySize) -> pty_process::Size {
    pty_process::Size::new(size.rows(), size.cols())
}

/// Reads `master` (non-blocking, shared with the writer) until EOF, waiting
/// in poll(2) when it is empty.
fn read_loop(master: &OwnedFd, output: &mpsc::Sender<Bytes>) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match rustix::io::read(master, &mut buf[..]) {
            Ok(0) => return,
            Ok(mut n) => {
                // A read returns at most ~4 KiB; take what else is already
                // there, so that bulk output wakes the session task (ring,
                // screen model, fan-out) once per up to 32 KiB. EAGAIN, EOF
                // or an error ends this; the next read sees them again.
                while n < buf.len() {
                    match rustix::io::read(master, &mut buf[n..]) {
                        Ok(m) if m > 0 => n += m,
                        _ => break,
                    }
                }
                if output
                    .blocking_send(Bytes::copy_from_slice(&buf[..n]))
                    .is_err()
                {
                    return;
                }
            }
            Err(Errno::AGAIN) => {
                let mut fds = [PollFd::new(master, PollFlags::IN)];
                match rustix::event::poll(&mut fds, None) {
                    Ok(_) | Err(Errno::INTR) => {}
                    Err(_) => return,
                }
            }
            Err(Errno::INTR) => {}
            // EIO once every slave fd is closed (Linux) is the PTY's EOF.
            Err(_) => return,
        }
    }
}

async fn write_loop(mut writer: pty_process::Pty, mut input: mpsc::Receiver<Bytes>) {
    while let Some(data) = input.recv().await {
        if writer.write_all(&data).await.is_err() {
            break;
        }
    }
    // Drain so senders never wait on a dead PTY.
    while input.recv().await.is_some() {}
}

impl Pty {
    /// Sets the window size (TIOCSWINSZ); the kernel sends SIGWINCH to the
    /// foreground process group.
    pub fn resize(&self, size: PtySize) {
        let winsize = rustix::termios::Winsize {
            ws_row: size.rows(),
            ws_col: size.cols(),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        if let Err(error) = rustix::termios::tcsetwinsize(&self.control, winsize) {
            tracing::warn!(%error, "resizing the PTY failed");
        }
    }

    /// Sends `signal` to the PTY's foreground process group (the job at the
    /// prompt, or the program itself), as the terminal's ^C would;
    /// to the program's group if the PTY has no foreground group.
    pub fn signal_foreground(&self, signal: Signal) {
        let group = rustix::termios::tcgetpgrp(&self.control)
            .ok()
            .map(|pid| Pid::from_raw(pid.as_raw_nonzero().get()))
            .or(self.pid);
        if let Some(group) = group {
            // ESRCH (already gone) is the expected outcome of a race with exit.
            let _ = killpg(group, signal);
        }
    }

    /// The PTY's foreground process group (its leader's pid): the job at
    /// the prompt, or the program itself.
    pub fn foreground(&self) -> Option<u32> {
        let group = rustix::termios::tcgetpgrp(&self.control).ok()?;
        u32::try_from(group.as_raw_nonzero().get()).ok()
    }

    /// Sends `signal` to the program's process group and to the PTY's
    /// foreground process group (a job the shell started), so that `kill`
    /// ends the whole session, not just its first process.
    pub fn signal_groups(&self, signal: Signal) {
        let foreground = rustix::termios::tcgetpgrp(&self.control)
            .ok()
            .map(|pid| Pid::from_raw(pid.as_raw_nonzero().get()));
        for group in [self.pid, foreground].into_iter().flatten() {
            // ESRCH (already gone) is the expected outcome of a race with exit.
            let _ = killpg(group, signal);
        }
    }
}
