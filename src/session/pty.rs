//! The PTY and child process of one session, bridged to tokio.
//!
//! Three small threads per session, each owning one blocking endpoint:
//! the *reader* reads the PTY master continuously (whether or not anyone is
//! attached) into a bounded queue, the *writer* writes input to the master on
//! its own path (some programs deadlock when written to while their output is
//! not read), and the *waiter* reaps the child and reports its exit status.
//!
//! portable-pty traps handled here (see shared/notes/tech-brief.md §2):
//! the slave is dropped right after spawning, or EOF never arrives; the writer
//! is kept for the session's whole life, because dropping it types a newline
//! and Ctrl-D into the PTY; signals go to process groups, not the child pid;
//! the child starts from a cleared environment.

use std::io::{Read, Write};
use std::path::PathBuf;

use bytes::Bytes;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use portable_pty::{CommandBuilder, MasterPty, native_pty_system};
use tokio::sync::{mpsc, oneshot};

use crate::protocol::{ExitStatus, PtySize};

/// Bytes read from the PTY per read call. Also the largest output chunk.
const READ_CHUNK: usize = 32 * 1024;
/// Output chunks queued between the reader thread and the session task.
const OUTPUT_QUEUE: usize = 16;
/// Input chunks queued for the writer thread.
pub const INPUT_QUEUE: usize = 64;

/// What to run in a new PTY.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    /// `argv`; empty means the login shell `shell` (started with argv[0]
    /// `-NAME`, as sshd and login(1) do).
    pub command: Vec<String>,
    /// The user's shell, for a shell request and as `$SHELL`.
    pub shell: PathBuf,
    /// The child's complete environment (nothing is inherited).
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Initial window.
    pub size: PtySize,
}

/// Why a PTY or its program could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// openpty(3) failed (e.g. out of PTYs).
    #[error("cannot open a PTY: {0}")]
    OpenPty(String),
    /// The program is not an executable file, or not found in the PATH.
    #[error("command not found: '{0}'")]
    NotFound(String),
    /// The program could not be executed.
    #[error("cannot start '{program}': {reason}")]
    Exec {
        /// argv[0].
        program: String,
        /// The OS's reason.
        reason: String,
    },
}

/// The endpoints of a running PTY, owned by the session task.
pub struct Pty {
    master: Box<dyn MasterPty + Send>,
    /// The child's pid, which is also its process group and session id
    /// (portable-pty calls setsid(2) before exec).
    pid: Option<Pid>,
    /// Feeds the writer thread.
    pub input: mpsc::Sender<Bytes>,
}

/// The streams a [`Pty`] produces.
pub struct PtyStreams {
    /// Output chunks in order; closes at EOF (all slave fds closed).
    pub output: mpsc::Receiver<Bytes>,
    /// The child's exit status, once reaped.
    pub exit: oneshot::Receiver<ExitStatus>,
}

/// Opens a PTY of `spec.size`, starts the program on it and the three
/// bridging threads.
///
/// # Errors
/// [`SpawnError`] when no PTY can be opened or the program cannot be executed.
pub fn spawn(spec: &SpawnSpec) -> Result<(Pty, PtyStreams), SpawnError> {
    if let Some(program) = spec.command.first() {
        let path = spec
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str());
        if which::which_in(program, path, &spec.cwd).is_err() {
            return Err(SpawnError::NotFound(program.clone()));
        }
    }

    let pair = native_pty_system()
        .openpty(portable_pty::PtySize {
            rows: spec.size.rows(),
            cols: spec.size.cols(),
            pixel_width: 0,
            pixel_height: 0,
        })
        .map_err(|e| SpawnError::OpenPty(e.to_string()))?;

    let mut cmd = if spec.command.is_empty() {
        // A login shell: portable-pty runs $SHELL with argv[0] "-NAME".
        CommandBuilder::new_default_prog()
    } else {
        CommandBuilder::from_argv(spec.command.iter().map(Into::into).collect())
    };
    cmd.env_clear();
    for (key, value) in &spec.env {
        cmd.env(key, value);
    }
    cmd.env("SHELL", &spec.shell);
    cmd.cwd(&spec.cwd);

    let program = spec
        .command
        .first()
        .cloned()
        .unwrap_or_else(|| spec.shell.display().to_string());
    let mut child = pair
        .slave
        .spawn_command(cmd)
        .map_err(|e| SpawnError::Exec {
            program,
            // portable-pty's messages may span lines; errors here are one line.
            reason: e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        })?;
    // The slave must be closed here or the reader never sees EOF.
    drop(pair.slave);

    let pid = child
        .process_id()
        .and_then(|p| i32::try_from(p).ok())
        .map(Pid::from_raw);
    let reader = pair
        .master
        .try_clone_reader()
        .map_err(|e| SpawnError::OpenPty(e.to_string()))?;
    let writer = pair
        .master
        .take_writer()
        .map_err(|e| SpawnError::OpenPty(e.to_string()))?;

    let (output_tx, output) = mpsc::channel(OUTPUT_QUEUE);
    let (input, input_rx) = mpsc::channel(INPUT_QUEUE);
    let (exit_tx, exit) = oneshot::channel();

    spawn_thread("keepsh-pty-read", move || read_loop(reader, output_tx));
    spawn_thread("keepsh-pty-write", move || write_loop(writer, input_rx));
    spawn_thread("keepsh-pty-wait", move || {
        let status = match pid {
            Some(pid) => wait_for_exit(pid),
            // No pid (not expected on Unix): fall back to portable-pty's wait.
            None => ExitStatus {
                code: child.wait().map_or(1, |s| s.exit_code()),
                signal: None,
            },
        };
        let _ = exit_tx.send(status);
        drop(child);
    });

    Ok((
        Pty {
            master: pair.master,
            pid,
            input,
        },
        PtyStreams { output, exit },
    ))
}

/// Reaps `pid` with waitpid(2). Used instead of portable-pty's `wait`, which
/// keeps only a signal's description, so that a signal's number and name
/// survive for `exit-signal` (RFC 4254 §6.10).
fn wait_for_exit(pid: Pid) -> ExitStatus {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => {
                return ExitStatus {
                    code: u32::try_from(code).unwrap_or(1),
                    signal: None,
                };
            }
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                return ExitStatus {
                    // As shells report it: 128 + the signal number.
                    code: 128 + signal as u32,
                    signal: Some(signal.as_str().trim_start_matches("SIG").to_owned()),
                };
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => {
                return ExitStatus {
                    code: 1,
                    signal: None,
                };
            }
        }
    }
}

fn spawn_thread(name: &str, body: impl FnOnce() + Send + 'static) {
    // A thread that cannot be created leaves the session without that
    // endpoint; the session then ends as if the PTY had closed.
    if let Err(error) = std::thread::Builder::new()
        .name(name.to_owned())
        .stack_size(64 * 1024)
        .spawn(body)
    {
        tracing::error!(%error, thread = name, "cannot start PTY thread");
    }
}

fn read_loop(mut reader: Box<dyn Read + Send>, output: mpsc::Sender<Bytes>) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match reader.read(&mut buf) {
            // portable-pty maps EIO (all slave fds closed) to Ok(0).
            Ok(0) => return,
            Ok(n) => {
                if output
                    .blocking_send(Bytes::copy_from_slice(&buf[..n]))
                    .is_err()
                {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}

fn write_loop(mut writer: Box<dyn Write + Send>, mut input: mpsc::Receiver<Bytes>) {
    while let Some(data) = input.blocking_recv() {
        if writer
            .write_all(&data)
            .and_then(|()| writer.flush())
            .is_err()
        {
            break;
        }
    }
    // Drain so senders never block on a dead PTY; the writer (and with it the
    // PTY's "newline + EOF" on drop) goes only when the session ends.
    while input.blocking_recv().is_some() {}
}

impl Pty {
    /// Sets the window size (TIOCSWINSZ); the kernel sends SIGWINCH to the
    /// foreground process group.
    pub fn resize(&self, size: PtySize) {
        let result = self.master.resize(portable_pty::PtySize {
            rows: size.rows(),
            cols: size.cols(),
            pixel_width: 0,
            pixel_height: 0,
        });
        if let Err(error) = result {
            tracing::warn!(%error, "resizing the PTY failed");
        }
    }

    /// Sends `signal` to the program's process group and to the PTY's
    /// foreground process group (a job the shell started), so that `kill`
    /// ends the whole session, not just its first process.
    pub fn signal_groups(&self, signal: Signal) {
        let foreground = self.master.process_group_leader().map(Pid::from_raw);
        for group in [self.pid, foreground].into_iter().flatten() {
            // ESRCH (already gone) is the expected outcome of a race with exit.
            let _ = killpg(group, signal);
        }
    }
}
