//! The PTY and child process of one session, bridged to tokio.
//!
//! The output ([`PtyOutput`]) is read by the session task itself while it
//! comes in drips (a prompt, an echo: one wake-up of the process, no
//! thread, no buffer held), and by a thread of its own during a flood: a
//! read that fills [`READ_CHUNK`] starts a reader thread, which drains
//! the PTY into a bounded queue while the session task parses what came
//! before (the program runs on meanwhile: twice the bulk output of the
//! task alone, 50 against 25 MB/s, BENCHMARKS.md "Memory"), and ends
//! after [`READER_IDLE`] without output, handing the reading back. The
//! *writer* is a task on a duplicate of the master, registered with tokio
//! (input on its own path: some programs deadlock when written to while
//! their output is not read), and the *waiter* is a task that reaps the
//! child through its pidfd ([`crate::child`]) and reports its exit status.
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
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::child::Child;
use crate::protocol::host::{SpawnError, SpawnSpec};
use crate::protocol::{ExitStatus, PtySize};
use crate::reactor::register;

/// The largest output chunk, in bytes: what is taken from the PTY at most
/// before it is handed on. A read by the session task that fills it starts
/// the reader thread.
const READ_CHUNK: usize = 32 * 1024;
/// Output chunks queued between the reader thread and the session task.
const OUTPUT_QUEUE: usize = 16;
/// How long the reader thread waits for more output before it ends and
/// the session task reads again.
const READER_IDLE: Duration = Duration::from_secs(2);
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

/// The output's end of the master, read in order by whoever reads now.
pub struct PtyOutput {
    reading: Reading,
    /// A reader thread could not be started once: the task reads alone.
    no_thread: bool,
}

enum Reading {
    /// The session task reads: the master registered with its runtime.
    Task(AsyncFd<OwnedFd>),
    /// A thread reads (a duplicate) and queues; the master waits here,
    /// unregistered, until the thread ends and the queue is empty.
    Thread(mpsc::Receiver<Bytes>, OwnedFd),
    /// EOF or a read error, seen.
    Ended,
}

/// The streams a [`Pty`] produces.
pub struct PtyStreams {
    /// Output chunks in order, until EOF (all slave fds closed).
    pub output: PtyOutput,
    /// The child's exit status, once reaped.
    pub exit: oneshot::Receiver<ExitStatus>,
}

/// Opens a PTY of `spec.size`, starts the program on it and the writer and
/// waiter tasks (on the current tokio runtime, in the current span), and
/// registers the output's end with that runtime.
///
/// # Errors
/// [`SpawnError`] when no PTY can be opened or the program cannot be executed.
pub fn spawn(spec: &SpawnSpec) -> Result<(Pty, PtyStreams), SpawnError> {
    let (program, args) = program(spec)?;
    let open_error = |e: pty_process::Error| SpawnError::OpenPty(e.to_string());
    let (pty, pts) = pty_process::blocking::open().map_err(open_error)?;
    pty.resize(winsize(spec.size)).map_err(open_error)?;
    let io_error = |e: std::io::Error| SpawnError::OpenPty(e.to_string());
    // Close-on-exec, like the master itself: a plain dup(2) would leak this
    // session's master into every later session's program, which then keeps
    // the PTY (and its shell) alive after the session ends.
    let dup = || rustix::io::fcntl_dupfd_cloexec(&pty, 0).map_err(|e| io_error(e.into()));
    let (control, reader, writer) = (dup()?, dup()?, dup()?);
    // One open file description for all: the task and the reader thread
    // wait in epoll or poll(2), never in a read or write.
    let flags = rustix::fs::fcntl_getfl(&pty).map_err(|e| io_error(e.into()))?;
    rustix::fs::fcntl_setfl(&pty, flags | rustix::fs::OFlags::NONBLOCK)
        .map_err(|e| io_error(e.into()))?;
    // Consuming `pts` closes the parent's copy of the slave once spawned.
    let exec_error = |reason: String| SpawnError::Exec {
        program: program.clone(),
        reason,
    };
    let started = command(spec, &program, args).spawn(pts);
    let child = started.map_err(|e| exec_error(e.to_string()))?;
    let pid = i32::try_from(child.id()).ok().map(Pid::from_raw);
    let child = Child::from_std(child).map_err(|e| exec_error(e.to_string()))?;
    let output = PtyOutput {
        reading: Reading::Task(register(reader, Interest::READABLE).map_err(io_error)?),
        no_thread: false,
    };
    let writer = register(writer, Interest::WRITABLE).map_err(io_error)?;
    drop(pty);
    let (input, input_rx) = mpsc::channel(INPUT_QUEUE);
    let (exit_tx, exit) = oneshot::channel();
    tokio::spawn(write_loop(writer, input_rx).in_current_span());
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
fn command(spec: &SpawnSpec, program: &str, args: &[String]) -> pty_process::blocking::Command {
    let cmd = pty_process::blocking::Command::new(program)
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
async fn wait(mut child: Child, exit: oneshot::Sender<ExitStatus>) {
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

impl PtyOutput {
    /// The next chunk of output, at most [`READ_CHUNK`] bytes; `None` at
    /// EOF (EIO once every slave fd is closed, on Linux) or after a read
    /// error. Cancel-safe: the reads happen within one poll and a queued
    /// chunk stays queued, so a `select!` that drops this future loses no
    /// byte.
    pub async fn next(&mut self) -> Option<Bytes> {
        loop {
            match &mut self.reading {
                Reading::Ended => return None,
                Reading::Thread(chunks, _) => match chunks.recv().await {
                    Some(chunk) => return Some(chunk),
                    // The thread ended (idle, EOF or an error) and all it
                    // read is taken: the task reads again, and finds the
                    // EOF or error itself.
                    None => self.read_in_task(),
                },
                Reading::Task(master) => {
                    let Ok(mut ready) = master.readable().await else {
                        self.reading = Reading::Ended;
                        return None;
                    };
                    match read_available(ready.get_inner()) {
                        (Some(chunk), true) => {
                            ready.clear_ready();
                            return Some(chunk);
                        }
                        (Some(chunk), false) => {
                            if chunk.len() == READ_CHUNK && !self.no_thread {
                                self.read_in_thread();
                            }
                            return Some(chunk);
                        }
                        (None, true) => ready.clear_ready(),
                        (None, false) => self.reading = Reading::Ended,
                    }
                }
            }
        }
    }

    /// Whether a reader thread reads now.
    #[cfg(test)]
    fn in_thread(&self) -> bool {
        matches!(self.reading, Reading::Thread(..))
    }

    /// A flood: hands the reading to a thread (the task's registration
    /// ends, so the runtime is not woken for output it does not read).
    fn read_in_thread(&mut self) {
        let Reading::Task(master) = std::mem::replace(&mut self.reading, Reading::Ended) else {
            return;
        };
        let master = master.into_inner();
        let (tx, chunks) = mpsc::channel(OUTPUT_QUEUE);
        let spawned = rustix::io::fcntl_dupfd_cloexec(&master, 0)
            .map_err(std::io::Error::from)
            .and_then(|reader| {
                std::thread::Builder::new()
                    .name("keepsh-pty-read".to_owned())
                    .stack_size(64 * 1024)
                    .spawn(move || read_loop(&reader, &tx))
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start a PTY reader thread; the session task reads alone");
            self.no_thread = true;
        }
        // Without a thread, the queue's sender is gone already: the next
        // call registers the master again.
        self.reading = Reading::Thread(chunks, master);
    }

    /// The reader thread has ended and its queue is empty: the session task
    /// reads again.
    fn read_in_task(&mut self) {
        let Reading::Thread(_, master) = std::mem::replace(&mut self.reading, Reading::Ended)
        else {
            return;
        };
        match register(master, Interest::READABLE) {
            Ok(master) => self.reading = Reading::Task(master),
            Err(error) => tracing::error!(%error, "cannot register the PTY; its output ends"),
        }
    }
}

/// The reader thread: reads `master` (non-blocking, a duplicate of the
/// session's) until EOF, an error, or [`READER_IDLE`] without output,
/// waiting in poll(2) when it is empty.
fn read_loop(master: &OwnedFd, output: &mpsc::Sender<Bytes>) {
    let idle = rustix::event::Timespec::try_from(READER_IDLE).unwrap_or_default();
    loop {
        match read_available(master) {
            (Some(chunk), _) => {
                if output.blocking_send(chunk).is_err() {
                    return;
                }
            }
            (None, true) => {
                let mut fds = [PollFd::new(master, PollFlags::IN)];
                match rustix::event::poll(&mut fds, Some(&idle)) {
                    Ok(0) => return,
                    Ok(_) | Err(Errno::INTR) => {}
                    Err(_) => return,
                }
            }
            (None, false) => return,
        }
    }
}

/// Reads what `master` holds, up to [`READ_CHUNK`] bytes: a read returns
/// at most ~4 KiB, and taking the rest at once makes bulk output wake the
/// session task (ring, screen model, fan-out) once per 32 KiB. The buffer
/// is allocated for the read (only the pages written are touched) and
/// shrunk to the bytes read: the chunk is handed on without a copy, and
/// an idle reader holds no buffer. Returns the bytes (`None`: none) and
/// whether the PTY was left empty (EAGAIN); no bytes and not empty is EOF
/// or an error.
fn read_available(master: &OwnedFd) -> (Option<Bytes>, bool) {
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let mut would_block = false;
    while buf.len() < READ_CHUNK {
        match rustix::io::read(master, rustix::buffer::spare_capacity(&mut buf)) {
            Ok(n) if n > 0 => {}
            Ok(_) => break,
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => {
                would_block = true;
                break;
            }
            // EOF (EIO once every slave fd is closed) or an error: what was
            // read before it goes on; the next call meets it again.
            Err(_) => break,
        }
    }
    if buf.is_empty() {
        return (None, would_block);
    }
    buf.shrink_to_fit();
    (Some(Bytes::from(buf)), would_block)
}

/// Writes the input to the master (non-blocking, registered for writing),
/// waiting for room when the PTY's input buffer is full.
async fn write_loop(writer: AsyncFd<OwnedFd>, mut input: mpsc::Receiver<Bytes>) {
    while let Some(data) = input.recv().await {
        if write_all(&writer, &data).await.is_err() {
            break;
        }
    }
    // Drain so senders never wait on a dead PTY.
    while input.recv().await.is_some() {}
}

async fn write_all(writer: &AsyncFd<OwnedFd>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let mut ready = writer.writable().await?;
        match ready.try_io(|fd| Ok(rustix::io::write(fd, data)?)) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(Err(error)) => return Err(error),
            Err(_would_block) => {}
        }
    }
    Ok(())
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

#[cfg(test)]
pub(super) mod tests {
    //! The reader across its hand-overs: real `/bin/sh`, real PTY.

    use std::path::PathBuf;

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(20);

    /// `/bin/sh -c script` in `/`, 80×24, with a `PATH` and nothing else.
    pub(in crate::session) fn sh(script: &str) -> SpawnSpec {
        SpawnSpec {
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            shell: PathBuf::from("/bin/sh"),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: PathBuf::from("/"),
            size: PtySize::DEFAULT,
            preface: String::new(),
        }
    }

    #[tokio::test]
    async fn a_flood_is_read_by_a_thread_then_the_task_reads_again_losing_nothing() {
        let script = "head -c 1048576 /dev/zero | tr '\\0' x; echo; read line; echo \"got $line\"";
        let (pty, mut streams) = spawn(&sh(script)).expect("spawn /bin/sh");
        let (mut xs, mut threaded) = (0, false);
        while xs < 1024 * 1024 {
            let chunk = tokio::time::timeout(DEADLINE, streams.output.next()).await;
            let chunk = chunk.expect("the flood in time").expect("no EOF yet");
            assert!(chunk.len() <= READ_CHUNK);
            xs += chunk.iter().filter(|&&b| b == b'x').count();
            threaded |= streams.output.in_thread();
        }
        assert_eq!(xs, 1024 * 1024, "every byte of the flood, none twice");
        assert!(threaded, "a reader thread took the flood");
        // The program now waits for a line: the thread ends after
        // READER_IDLE without output, and the task reads again.
        let back = async {
            while streams.output.in_thread() {
                let _ = tokio::time::timeout(READER_IDLE, streams.output.next()).await;
            }
        };
        tokio::time::timeout(DEADLINE, back)
            .await
            .expect("the task reads again");
        pty.input
            .send(Bytes::from_static(b"hello\n"))
            .await
            .expect("writer");
        let mut text = Vec::new();
        while !String::from_utf8_lossy(&text).contains("got hello") {
            let chunk = tokio::time::timeout(DEADLINE, streams.output.next()).await;
            text.extend_from_slice(&chunk.expect("the echo in time").expect("no EOF yet"));
        }
        assert!(
            !streams.output.in_thread(),
            "a few bytes are read by the task"
        );
    }
}
