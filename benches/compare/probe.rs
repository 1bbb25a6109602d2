//! Measuring instruments: a client process whose output is watched for a
//! sentinel with timestamps, process memory (PSS), and summary statistics.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// A running client (usually `ssh`) whose stdout is read on a thread and
/// handed over in chunks, so a wait can note the instant a byte arrived.
pub struct Stream {
    child: Child,
    stdin: Option<ChildStdin>,
    chunks: Receiver<Vec<u8>>,
    /// The last bytes seen, kept so a sentinel split across chunks is found.
    tail: Vec<u8>,
    /// Bytes received so far.
    pub received: u64,
}

impl Stream {
    /// Starts `cmd` with stdin and stdout piped and stderr discarded.
    pub fn spawn(mut cmd: Command) -> Stream {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let mut stdout = child.stdout.take().expect("stdout");
        let (tx, chunks) = channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Stream {
            stdin: child.stdin.take(),
            child,
            chunks,
            tail: Vec::new(),
            received: 0,
        }
    }

    /// The client's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes `bytes` to the client's stdin.
    pub fn write(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).expect("write to the client");
        stdin.flush().expect("flush");
    }

    /// Reads until `needle` has arrived; returns the instant the chunk that
    /// completed it was received. Errors on end of output or `timeout`.
    pub fn wait_for(&mut self, needle: &[u8], timeout: Duration) -> Result<Instant, String> {
        self.wait_for_each(needle, 1, timeout).map(|at| at[0])
    }

    /// Reads until `needle` has arrived `count` times; the instants the
    /// chunks that completed each were received.
    pub fn wait_for_each(
        &mut self,
        needle: &[u8],
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<Instant>, String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while seen.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = match self.chunks.recv_timeout(left) {
                Ok(chunk) => chunk,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "{} of {count} {:?} within {timeout:?}",
                        seen.len(),
                        String::from_utf8_lossy(needle)
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!(
                        "output ended after {} bytes with {} of {count} {:?}",
                        self.received,
                        seen.len(),
                        String::from_utf8_lossy(needle)
                    ));
                }
            };
            let at = Instant::now();
            self.received += chunk.len() as u64;
            self.tail.extend_from_slice(&chunk);
            // What is kept is shorter than the needle: no match is counted twice.
            let found = self
                .tail
                .windows(needle.len())
                .filter(|w| w == &needle)
                .count();
            seen.extend(std::iter::repeat_n(at, found));
            let keep = needle.len().saturating_sub(1).min(self.tail.len());
            self.tail.drain(..self.tail.len() - keep);
        }
        seen.truncate(count);
        Ok(seen)
    }

    /// Reads until the client closes its output; returns that instant.
    pub fn wait_end(&mut self, timeout: Duration) -> Result<Instant, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.received += chunk.len() as u64,
                Err(RecvTimeoutError::Disconnected) => return Ok(Instant::now()),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("client still running after {timeout:?}"));
                }
            }
        }
    }

    /// Waits for the client to exit (after [`Stream::wait_end`]); its status.
    pub fn exit_code(&mut self) -> Option<i32> {
        self.stdin.take();
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Proportional set size of process `pid` in KiB (`Pss:` of
/// `/proc/PID/smaps_rollup`), or 0 when it is gone.
pub fn pss_kib(pid: u32) -> u64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
        return 0;
    };
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Where the proportional set size of process `pid` lies: KiB of PSS per
/// kind of mapping (`/proc/PID/smaps`): a file's name with `r-x` (code),
/// `r--` (read-only data and relocated read-only data) or `rw-`, `[heap]`,
/// `[stack]`, or `anon` for other anonymous mappings (thread stacks, the
/// allocator's mmaps); largest first, those under 1 KiB left out.
pub fn pss_by_mapping(pid: u32) -> Vec<(String, u64)> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return Vec::new();
    };
    let mut kinds: std::collections::BTreeMap<String, u64> = Default::default();
    let mut current = String::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields
            .first()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            let perms = fields.get(1).map_or("", |p| &p[..3]);
            let name = match fields.get(5) {
                Some(path) if path.starts_with('[') => (*path).to_owned(),
                Some(path) => format!(
                    "{} {perms}",
                    Path::new(path)
                        .file_name()
                        .map_or(*path, |n| n.to_str().unwrap_or(path))
                ),
                None => "anon".to_owned(),
            };
            current = name;
        } else if let Some(kib) = line.strip_prefix("Pss:") {
            let kib: u64 = kib
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or(0);
            *kinds.entry(current.clone()).or_default() += kib;
        }
    }
    let mut kinds: Vec<_> = kinds.into_iter().filter(|(_, kib)| *kib > 0).collect();
    kinds.sort_by_key(|kind| std::cmp::Reverse(kind.1));
    kinds
}

/// Pids of the processes running one of `exes` whose command line
/// mentions `marker`.
pub fn pids_of(exes: &[&Path], marker: &Path) -> Vec<u32> {
    let marker = marker.to_string_lossy();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| exes.contains(&&*p))
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&*marker))
        })
        .collect()
}

/// Median, minimum and maximum of some samples, and how many there were.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    /// Median (upper median for an even count).
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Number of samples.
    pub n: usize,
}

impl Stats {
    /// Summarises `samples`; panics when there are none.
    pub fn of(mut samples: Vec<f64>) -> Stats {
        assert!(!samples.is_empty(), "no samples");
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let rank = ((n as f64 * 0.99).ceil() as usize).clamp(1, n) - 1;
        Stats {
            median: samples[n / 2],
            min: samples[0],
            max: samples[n - 1],
            p99: samples[rank],
            n,
        }
    }

    /// Durations in milliseconds.
    pub fn of_ms(samples: &[Duration]) -> Stats {
        Stats::of(samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect())
    }
}

/// Runs `job` over `items` on `workers` threads; results in item order.
pub fn parallel<T: Sync, R: Send>(
    workers: usize,
    items: &[T],
    job: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<R>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(i) else { return };
                    let result = job(item);
                    *results[i].lock().expect("result slot") = Some(result);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|r| {
            r.into_inner()
                .expect("result slot")
                .expect("every item ran")
        })
        .collect()
}

/// Types `keys` lowercase letters one at a time into each client started
/// by `cmds` (after two keys that show it is ready: for tmux, the screen
/// is drawn), one key to each client in turn, so that every peer meets the
/// machine in the same state (on a VM a wake-up of an idle vCPU costs tens
/// of µs, and whether one is idle drifts over a minute); each key's round
/// trip until its echo, each within `timeout`, per client.
pub fn type_keys(cmds: Vec<Command>, keys: usize, timeout: Duration) -> Vec<Vec<Duration>> {
    let mut clients: Vec<Stream> = cmds.into_iter().map(Stream::spawn).collect();
    for client in &mut clients {
        for key in [b"X", b"Y"] {
            client.write(key);
            client.wait_for(key, timeout).expect("echo of a first key");
        }
    }
    let mut times = vec![Vec::with_capacity(keys); clients.len()];
    for i in 0..keys {
        let key = [b'a' + (i % 26) as u8];
        for (client, times) in clients.iter_mut().zip(&mut times) {
            let start = Instant::now();
            client.write(&key);
            let at = client.wait_for(&key, timeout).expect("echo");
            times.push(at - start);
        }
    }
    times
}
