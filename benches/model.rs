//! The screen model: parse throughput and memory of keepsh's model
//! (`alacritty_terminal`, patched, through `session::screen` as sessions use
//! it) beside the other candidates, `vt100` (keepsh's model until it was
//! found to lose attributes and state) and `avt`, on four kinds of output;
//! and the cost of what an attach does with it (a restore of the screen,
//! history lines rebuilt from the ring buffer). See BENCHMARKS.md.
//!
//! Run: `cargo bench --bench model` (~30 s). `KEEPSH_BENCH_QUICK=1` for
//! smaller inputs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use keepsh::protocol::PtySize;
use keepsh::session::screen::{self, Screen};

/// PTY reads are at most this big; models are fed in such chunks.
const CHUNK: usize = 4096;

/// `(name, bytes)` of each workload, about `size` bytes each.
fn workloads(size: usize) -> Vec<(&'static str, Vec<u8>)> {
    let mut plain = Vec::with_capacity(size + 128);
    let mut i = 0u64;
    while plain.len() < size {
        plain.extend_from_slice(
            format!("2026-11-21T12:00:00Z INFO request {i} served in 3 ms from 10.0.0.1\r\n")
                .as_bytes(),
        );
        i += 1;
    }
    let mut sgr = Vec::with_capacity(size + 128);
    while sgr.len() < size {
        sgr.extend_from_slice(
            format!(
                "\x1b[1;32m{i:>6}\x1b[m \x1b[38;5;{}mword\x1b[m \x1b[38;2;{};80;160mtrue\x1b[0;4m colour\x1b[m\r\n",
                i % 256,
                i % 256
            )
            .as_bytes(),
        );
        i += 1;
    }
    // A full-screen program: every frame repositions and rewrites rows.
    let mut redraw = Vec::with_capacity(size + 4096);
    while redraw.len() < size {
        redraw.extend_from_slice(b"\x1b[H");
        for row in 1..=24 {
            redraw.extend_from_slice(
                format!(
                    "\x1b[{row};1H\x1b[7m{row:>3}\x1b[m cpu {:>3}% mem {:>5} \u{2502} task-{}\x1b[K",
                    (i + row) % 100,
                    i * 7 % 65536,
                    i
                )
                .as_bytes(),
            );
        }
        i += 1;
    }
    let mut mixed = Vec::with_capacity(size + 4096);
    let third = size / 3;
    mixed.extend_from_slice(&plain[..third]);
    mixed.extend_from_slice(&sgr[..third]);
    mixed.extend_from_slice(&redraw[..third]);
    vec![
        ("log lines", plain),
        ("SGR-heavy", sgr),
        ("full-screen redraws", redraw),
        ("mixed", mixed),
    ]
}

/// Best of `runs` timings of `f`.
fn best(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn mb_per_s(bytes: usize, time: Duration) -> f64 {
    bytes as f64 / time.as_secs_f64() / 1e6
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// RSS growth per model, in bytes, for `count` live models of one size.
fn bytes_per_model<T>(count: usize, make: impl Fn() -> T) -> f64 {
    let before = rss_kib();
    let models: Vec<T> = (0..count).map(|_| make()).collect();
    let after = rss_kib();
    black_box(&models);
    (after.saturating_sub(before) * 1024) as f64 / count as f64
}

fn main() {
    let quick = std::env::var_os("KEEPSH_BENCH_QUICK").is_some();
    let size = if quick { 4 << 20 } else { 32 << 20 };
    let runs = if quick { 2 } else { 3 };
    let pty = PtySize::DEFAULT;
    println!(
        "# Screen model: keepsh's (alacritty_terminal) vs vt100 vs avt, 80x24, fed in {CHUNK}-byte chunks\n"
    );
    println!("| workload | keepsh MB/s | vt100 MB/s | avt MB/s |");
    println!("| --- | --- | --- | --- |");
    let nonzero = |n: u16| std::num::NonZeroU16::new(n).expect("size");
    for (name, bytes) in workloads(size) {
        let keepsh = best(runs, || {
            let mut model = Screen::new(pty);
            for chunk in bytes.chunks(CHUNK) {
                model.process(chunk);
            }
            black_box(&model);
        });
        let vt100 = best(runs, || {
            let mut model = vt100::Parser::new(nonzero(24), nonzero(80), 0);
            for chunk in bytes.chunks(CHUNK) {
                model.process(chunk);
            }
            black_box(&model);
        });
        let avt = best(runs, || {
            let mut model = avt::Terminal::new(80, 24).expect("size");
            // avt takes text: the caller decodes UTF-8 (all valid here).
            for chunk in bytes.chunks(CHUNK) {
                model.feed(String::from_utf8_lossy(chunk).as_ref());
            }
            black_box(&model);
        });
        println!(
            "| {name} ({} MiB) | {:.1} | {:.1} | {:.1} |",
            bytes.len() >> 20,
            mb_per_s(bytes.len(), keepsh),
            mb_per_s(bytes.len(), vt100),
            mb_per_s(bytes.len(), avt)
        );
    }

    println!("\n| memory per model (RSS growth over 1,000 models) | keepsh | vt100 | avt |");
    println!("| --- | --- | --- | --- |");
    for (cols, rows) in [(80u16, 24u16), (200, 60)] {
        let size = PtySize::from_request(cols.into(), rows.into(), pty);
        let keepsh = bytes_per_model(1000, || {
            let mut model = Screen::new(size);
            model.process(b"x"); // touch the grids
            model
        });
        let vt100 = bytes_per_model(1000, || {
            let mut model = vt100::Parser::new(nonzero(rows), nonzero(cols), 0);
            model.process(b"x");
            model
        });
        let avt = bytes_per_model(1000, || {
            let mut model = avt::Terminal::new(cols.into(), rows.into()).expect("size");
            model.feed("x");
            model
        });
        println!(
            "| {cols}x{rows} | {:.0} KiB | {:.0} KiB | {:.0} KiB |",
            keepsh / 1024.0,
            vt100 / 1024.0,
            avt / 1024.0
        );
    }

    // What an attach costs beyond moving bytes.
    let (_, log) = workloads(1 << 20).swap_remove(0);
    let mut model = Screen::new(pty);
    model.process(&log);
    let restore = best(20, || {
        black_box(model.restore("").0);
    });
    let restore_bytes = model.restore("").0.len();
    let lines = 2000 + 24;
    let tail_start = log.len()
        - log
            .iter()
            .rev()
            .scan(0, |seen, &b| {
                *seen += usize::from(b == b'\n');
                Some(*seen)
            })
            .take_while(|&seen| seen <= lines)
            .count();
    let tail = &log[tail_start..];
    let history = best(5, || {
        black_box(screen::history(tail, pty));
    });
    let whole = best(3, || {
        black_box(screen::history(&log, pty));
    });
    println!("\n| attach step | time |");
    println!("| --- | --- |");
    println!(
        "| restore the screen and modes (80x24 of log lines, {restore_bytes} bytes) | {:.0} µs |",
        restore.as_secs_f64() * 1e6
    );
    println!(
        "| history: 2,000 lines rebuilt from the ring ({} KiB) | {:.2} ms |",
        tail.len() >> 10,
        history.as_secs_f64() * 1e3
    );
    println!(
        "| history: a whole 1 MiB ring rebuilt ({} lines) | {:.2} ms |",
        log.iter().filter(|&&b| b == b'\n').count(),
        whole.as_secs_f64() * 1e3
    );
}
