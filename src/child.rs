//! Child processes on tokio without its `process` feature: started by
//! std's [`Command`], reaped through a pidfd (pidfd_open(2), Linux ≥ 5.3)
//! registered with the runtime, their pipes as tokio's
//! [`pipe`](tokio::net::unix::pipe) ends.
//!
//! Why not `tokio::process`: its `process` (like its `signal`) feature
//! makes every runtime with I/O build tokio's signal registry, an entry per
//! signal (24 KiB per session process, a thousand of them on a busy host;
//! BENCHMARKS.md "Memory"). A pidfd needs no SIGCHLD handler: it becomes
//! readable when the child exits, and only then is the child reaped
//! (waitpid(2) on its pid, which stays ours until then).

use std::io;
use std::os::fd::OwnedFd;
use std::process::{Command, ExitStatus};

use rustix::process::{Pid, PidfdFlags, pidfd_open};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

/// A running (or exited, not yet reaped) child process.
pub struct Child {
    /// `None` once handed to the reaper (on drop).
    inner: Option<Inner>,
    /// Killed (SIGKILL) if dropped before it was reaped.
    kill_on_drop: bool,
}

struct Inner {
    std: std::process::Child,
    /// Readable once the child has exited.
    exited: AsyncFd<OwnedFd>,
}

impl Child {
    /// Starts `command` and opens its pidfd, registered with the current
    /// runtime (which must have I/O enabled).
    ///
    /// # Errors
    /// What [`Command::spawn`] returns (program not found, no permission,
    /// out of processes); or pidfd_open(2)'s error (a kernel before 5.3),
    /// after which the child is killed and reaped.
    pub fn spawn(command: &mut Command) -> io::Result<Child> {
        Child::from_std(command.spawn()?)
    }

    /// Takes over `child`, started by std (as pty-process does), not yet
    /// reaped.
    ///
    /// # Errors
    /// pidfd_open(2) or the runtime's registration failed; the child is
    /// killed and reaped.
    pub fn from_std(mut child: std::process::Child) -> io::Result<Child> {
        let opened = Pid::from_raw(child.id().cast_signed())
            .ok_or_else(|| io::Error::other("pid 0"))
            .and_then(|pid| Ok(pidfd_open(pid, PidfdFlags::NONBLOCK)?))
            .and_then(|pidfd| crate::reactor::register(pidfd, Interest::READABLE));
        match opened {
            Ok(exited) => Ok(Child {
                inner: Some(Inner { std: child, exited }),
                kill_on_drop: false,
            }),
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(error)
            }
        }
    }

    /// Kills the child (SIGKILL) if it is dropped before it was reaped, as
    /// a channel's program is when its channel goes.
    #[must_use]
    pub fn kill_on_drop(mut self) -> Child {
        self.kill_on_drop = true;
        self
    }

    /// Its stdin, if it was made a pipe ([`std::process::Stdio::piped`]),
    /// for writing; taken once.
    ///
    /// # Errors
    /// The pipe cannot be registered with the runtime.
    pub fn stdin(&mut self) -> io::Result<Option<pipe::Sender>> {
        let stdin = self.std().stdin.take();
        stdin
            .map(|end| pipe::Sender::from_owned_fd(end.into()))
            .transpose()
    }

    /// Its stdout, if piped, for reading; taken once.
    ///
    /// # Errors
    /// The pipe cannot be registered with the runtime.
    pub fn stdout(&mut self) -> io::Result<Option<pipe::Receiver>> {
        let stdout = self.std().stdout.take();
        stdout
            .map(|end| pipe::Receiver::from_owned_fd(end.into()))
            .transpose()
    }

    /// Its stderr, if piped, for reading; taken once.
    ///
    /// # Errors
    /// The pipe cannot be registered with the runtime.
    pub fn stderr(&mut self) -> io::Result<Option<pipe::Receiver>> {
        let stderr = self.std().stderr.take();
        stderr
            .map(|end| pipe::Receiver::from_owned_fd(end.into()))
            .transpose()
    }

    /// Its pid.
    pub fn id(&mut self) -> u32 {
        self.std().id()
    }

    /// Waits for the child to exit and reaps it; again, the same status.
    ///
    /// # Errors
    /// waitpid(2) or the runtime failed (not expected for our own child).
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let Some(inner) = &mut self.inner else {
            return Err(io::Error::other("the child was handed to its reaper"));
        };
        inner.wait().await
    }

    fn std(&mut self) -> &mut std::process::Child {
        // Only `drop` takes `inner`.
        &mut self
            .inner
            .as_mut()
            .expect("a live Child has its process")
            .std
    }
}

impl Inner {
    async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.std.try_wait()? {
                return Ok(status);
            }
            // A pidfd stays readable once the child exited: no clearing.
            let _ = self.exited.readable().await?;
        }
    }
}

impl Drop for Child {
    /// Kills it if asked to ([`Child::kill_on_drop`]); a child still
    /// running is reaped by a task when it exits (none without a runtime:
    /// it then stays a zombie until this process ends).
    fn drop(&mut self) {
        let Some(mut inner) = self.inner.take() else {
            return;
        };
        if matches!(inner.std.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        if self.kill_on_drop {
            let _ = inner.std.kill();
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = inner.wait().await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The pid's state letter in /proc (`Z`: a zombie), `None` once gone.
    fn state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(") ")?.1.chars().next()
    }

    #[tokio::test]
    async fn pipes_carry_the_data_and_wait_gives_the_exit_status() {
        let mut command = Command::new("sh");
        command
            .args(["-c", "read line; echo \"got $line\"; echo oops >&2; exit 3"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = Child::spawn(&mut command).expect("spawn");
        let mut stdin = child.stdin().expect("stdin").expect("piped");
        stdin.write_all(b"hello\n").await.expect("write");
        drop(stdin);
        let (mut out, mut err) = (String::new(), String::new());
        let mut stdout = child.stdout().expect("stdout").expect("piped");
        let mut stderr = child.stderr().expect("stderr").expect("piped");
        stdout.read_to_string(&mut out).await.expect("read");
        stderr.read_to_string(&mut err).await.expect("read");
        let status = child.wait().await.expect("wait");
        assert_eq!((out.as_str(), err.as_str()), ("got hello\n", "oops\n"));
        assert_eq!(status.code(), Some(3));
        assert_eq!(child.wait().await.expect("again").code(), Some(3));
    }

    /// Dropped while running: killed when asked, and reaped either way by
    /// a task once it exits (no zombie left).
    #[tokio::test]
    async fn a_dropped_child_is_killed_if_asked_and_reaped() {
        for kill in [true, false] {
            let script = if kill { "sleep 1000" } else { "sleep 0.2" };
            let mut child = Child::spawn(Command::new("sh").args(["-c", script])).expect("spawn");
            if kill {
                child = child.kill_on_drop();
            }
            let pid = child.id();
            drop(child);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while state(pid).is_some() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(state(pid), None, "pid {pid} (kill {kill}) not reaped");
        }
    }
}
