//! Differential fuzzing of the redraw, judged by tmux: a seeded generator
//! writes terminal output (text, wide and combining characters, SGR of
//! every kind, cursor motion, erase, insert and delete, scroll regions,
//! origin mode, the alternate screen, modes, charsets, tab stops, saved
//! cursors, titles, hyperlinks, stray controls and cut-off sequences) into
//! a session; two clients attach at random offsets — inside an escape
//! sequence or a UTF-8 character as likely as not — and once all of it is
//! out, each must show exactly what the client attached from the start
//! shows.
//!
//! `.ci/run` runs [`SEEDS`] seeds. `KEEPSH_FUZZ_SEEDS=N` runs N from
//! `KEEPSH_FUZZ_FROM` (default 1), `KEEPSH_FUZZ_SEED=S` one seed, e.g.
//! `scripts/fuzz-screen 500`. A failure names its seed and prints the
//! smallest input found (by removing items while it still fails, for at
//! most a minute).
//!
//! Excluded, where tmux 3.3 and xterm (and keepsh's model, which follows
//! xterm) disagree, so that a difference would judge the emulators and not
//! the redraw:
//! - text printed with a background colour: a line that autowrap scrolls
//!   in gets the current background in xterm, the default one in tmux
//!   (text items reset the background first; erase items use colours);
//!   so does the alternate screen when 1049 switches to it;
//! - insert mode where it pushes a wide character off the row or text
//!   wraps, and a combining mark on the last column with autowrap off:
//!   insert-mode and no-autowrap items write a few words away from the
//!   right edge;
//! - relative moves and backspace while a wrap is pending (xterm moves
//!   from the last column, tmux from one past it): they follow a CHA;
//!   so do DECSC (a wrap pending when it saved is pending again after
//!   DECRC in xterm and the model, not in tmux) and ICH, DCH and ECH
//!   (applied at the last column in xterm, not at all in tmux);
//! - DECSTBM in origin mode (xterm homes to the region, tmux to the
//!   screen): it is sent with origin mode off;
//! - a 1049 reset on the primary screen, and charsets designated on the
//!   alternate screen (which leaving it restores in xterm, not in tmux);
//! - ICH, DCH, ECH, EL 1, ED 1 and insert mode on half of a wide
//!   character: seeds with wide characters (odd ones) send none; and the
//!   attributes of the half left when text is printed over the other half
//!   (a default blank in tmux, its own attributes in the model, the
//!   current ones in xterm.js): text in those seeds has none;
//! - DECRC on the alternate screen or after a 1049 switch (tmux keeps one
//!   saved cursor apart from 1049's, xterm one per screen that 1049 sets);
//! - IL and DL outside the scroll region (nothing in xterm, the whole
//!   screen in tmux): they are sent with the cursor inside it;
//! - leaving the alternate screen by another mode than the one that
//!   entered it (47 and 1049: xterm restores a cursor, tmux does not), and
//!   what 47 shows on the way in (the alternate screen as it was left in
//!   xterm, a blank one in tmux and the model);
//! - LNM (mode 20), DECCOLM (mode 3), 1048 and left and right margins
//!   (DECLRMM, DECSLRM), which tmux does not implement;
//! - emoji and other characters whose width the two Unicode tables give
//!   differently, and invalid UTF-8 (tmux prints `_`, the model U+FFFD);
//! - C1 controls as single bytes (0x80–0x9f), which are UTF-8 to both.

use std::io::Write;
use std::time::{Duration, Instant};

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use crate::harness::{DEADLINE, Server, poll, wait_until};
use crate::tmux::Tmux;

/// Seeds run by the test suite (each takes about a second).
const SEEDS: u64 = 40;
/// Items of output per seed.
const ITEMS: usize = 300;
/// How long a failure is minimised for.
const MINIMISE_FOR: Duration = Duration::from_secs(60);

/// One generated piece of output.
type Item = Vec<u8>;

fn pick<'a, T>(rng: &mut Xoshiro256PlusPlus, from: &'a [T]) -> &'a T {
    &from[rng.random_range(0..from.len())]
}

/// An SGR colour in one of its forms, for `base` 30 (fg), 40 (bg) or 50
/// (underline, extended forms only).
fn colour(rng: &mut Xoshiro256PlusPlus, base: u8) -> String {
    let extended = base + 8;
    match rng.random_range(0..5) {
        0 if base < 50 => format!("{}", base + rng.random_range(0..8)),
        1 if base < 50 => format!("{}", base + 60 + rng.random_range(0..8)),
        2 => format!("{extended};5;{}", rng.random_range(0..256)),
        3 => format!(
            "{extended};2;{};{};{}",
            rng.random_range(0..256),
            rng.random_range(0..256),
            rng.random_range(0..256)
        ),
        _ => format!(
            "{extended}:2::{}:{}:{}",
            rng.random_range(0..256),
            rng.random_range(0..256),
            rng.random_range(0..256)
        ),
    }
}

fn sgr(rng: &mut Xoshiro256PlusPlus) -> Item {
    const CODES: &[&str] = &[
        "0", "1", "2", "3", "4", "4:0", "4:1", "4:2", "4:3", "4:4", "4:5", "5", "7", "8", "9",
        "21", "22", "23", "24", "25", "27", "28", "29", "53", "55", "39", "49", "59", "",
    ];
    let params: Vec<String> = (0..rng.random_range(1..4))
        .map(|_| match rng.random_range(0..4) {
            0 => colour(rng, 30),
            1 => colour(rng, 40),
            2 => colour(rng, 50),
            _ => pick(rng, CODES).to_string(),
        })
        .collect();
    format!("\x1b[{}m", params.join(";")).into_bytes()
}

/// What the generator keeps of the output it wrote, to stay clear of the
/// cases where tmux and xterm disagree (see the module's list).
struct Gen {
    rng: Xoshiro256PlusPlus,
    /// The scroll region set, as 1-based rows, top < bottom.
    region: Option<(u16, u16)>,
    /// Whether the alternate screen is on.
    alternate: bool,
    /// The mode that switched to it (1049, 1047 or 47), which switches
    /// back (leaving 47 with 1049 restores a cursor in xterm, not in tmux).
    switched_by: u16,
    /// A DECSC since the last switch of screens.
    saved: bool,
    /// Wide characters in this seed's text, or ICH, DCH and ECH (which
    /// tmux and the model apply differently to half a wide character).
    wide: bool,
}

impl Gen {
    fn text(&mut self) -> Item {
        const NARROW: &[&str] = &[
            "the",
            "quick",
            "fox",
            "ls",
            "-la",
            "$",
            "~/src",
            "ok",
            "FAIL",
            "#",
            "::",
            "a",
            "longer_identifier_name",
            "0123456789",
            "e\u{301}",
            "n\u{303}o",
            "ü",
            "─┼─",
            "│",
            "★",
            "°C",
        ];
        const WIDE: &[&str] = &["中文", "字", "表示"];
        // In seeds with wide characters, with no attribute at all: the
        // half of a wide character that printing over the other half
        // leaves is a default blank in tmux, keeps its attributes in the
        // model and takes the current ones in xterm.js.
        let mut text = String::from(if self.wide { "\x1b[m" } else { "\x1b[49m" });
        for _ in 0..self.rng.random_range(1..6) {
            let word: &&str = if self.wide && self.rng.random_bool(0.25) {
                pick(&mut self.rng, WIDE)
            } else {
                pick(&mut self.rng, NARROW)
            };
            text.push_str(word);
            text.push(' ');
        }
        text.into_bytes()
    }

    fn motion(&mut self) -> Item {
        let rng = &mut self.rng;
        let n = rng.random_range(0..30);
        // Relative moves and backspace start from a known column: from a
        // pending wrap after the last column, xterm moves from that column
        // and tmux from one past it.
        let column = rng.random_range(1..81);
        match rng.random_range(0..10) {
            0 => format!(
                "\x1b[{};{}H",
                rng.random_range(0..27),
                rng.random_range(0..84)
            ),
            1 => format!("\x1b[{n}A"),
            2 => format!("\x1b[{n}B"),
            3 => format!("\x1b[{column}G\x1b[{n}C"),
            4 => format!("\x1b[{column}G\x1b[{n}D"),
            5 => format!("\x1b[{}G", rng.random_range(0..84)),
            6 => format!("\x1b[{}d", rng.random_range(0..27)),
            7 => format!("\x1b[{column}G\x08"),
            8 => "\t".into(),
            _ => format!("\x1b[{}Z", rng.random_range(0..3)),
        }
        .into_bytes()
    }

    fn edit(&mut self) -> Item {
        let region = self.region;
        let wide = self.wide;
        let rng = &mut self.rng;
        let n = rng.random_range(0..6);
        let bg = if rng.random_bool(0.3) {
            format!("\x1b[{}m", colour(rng, 40))
        } else {
            String::new()
        };
        let op = match rng.random_range(0..11) {
            // Erasing to the left ends on half a wide character as often as
            // not: only in seeds without them.
            0..=4 if wide => {
                format!("\x1b[{}", pick(rng, &["J", "2J", "K", "2K"]))
            }
            0 => format!("\x1b[{}J", rng.random_range(0..3)),
            1 => format!("\x1b[{}K", rng.random_range(0..3)),
            // After a CHA: with a wrap pending, xterm applies these at the
            // last column, tmux not at all.
            2..=4 => format!(
                "\x1b[{}G\x1b[{n}{}",
                rng.random_range(1..=80),
                pick(rng, &["X", "@", "P"])
            ),
            // Inside the scroll region: outside it, IL and DL do nothing in
            // xterm but move the whole screen in tmux.
            5 | 6 => {
                let (top, bottom) = region.unwrap_or((1, 24));
                format!(
                    "\x1b[?6l\x1b[{};{}H\x1b[{n}{}",
                    rng.random_range(top..=bottom),
                    rng.random_range(1..81),
                    if rng.random_bool(0.5) { 'L' } else { 'M' }
                )
            }
            7 => format!("\x1b[{n}S"),
            8 => format!("\x1b[{n}T"),
            9 => pick(rng, &["\x1bD", "\x1bM", "\x1bE"]).to_string(),
            _ => pick(rng, &["\r\n", "\n", "\r"]).to_string(),
        };
        format!("{bg}{op}").into_bytes()
    }

    fn mode(&mut self) -> Item {
        const PRIVATE: &[u16] = &[1, 6, 25, 1000, 1002, 1003, 1004, 1006, 2004, 1049];
        let on = if self.rng.random_bool(0.5) { 'h' } else { 'l' };
        match self.rng.random_range(0..9) {
            // Insert mode, and autowrap off, for a few words away from the
            // right edge: where inserting pushes a wide character off the
            // row, text wraps while inserting, or a combining mark lands on
            // the last column without autowrap, tmux and xterm differ.
            0 | 8 => {
                // Insert mode only in seeds without wide characters.
                let on = if self.wide { 'l' } else { on };
                let at = (self.rng.random_range(1..25), self.rng.random_range(1..40));
                let text = self.text();
                format!(
                    "\x1b[{};{}H\x1b[{}{}\x1b[{}",
                    at.0,
                    at.1,
                    if on == 'h' { "4h" } else { "?7l" },
                    String::from_utf8_lossy(&text),
                    if on == 'h' { "4l" } else { "?7h" },
                )
            }
            1 => pick(&mut self.rng, &["\x1b=", "\x1b>"]).to_string(),
            // With origin mode off: DECSTBM homes the cursor to the region's
            // top in origin mode in xterm, to the screen's in tmux.
            2 => {
                let top = self.rng.random_range(1..24);
                let bottom = self.rng.random_range(top + 1..=24);
                self.region = Some((top, bottom));
                format!("\x1b[?6l\x1b[{top};{bottom}r")
            }
            3 => {
                self.region = None;
                "\x1b[r".into()
            }
            _ => match *pick(&mut self.rng, PRIVATE) {
                // Only switches (tmux restores the cursor on a 1049 reset
                // on the primary screen, xterm only when leaving the
                // alternate one), with the default background (the
                // alternate screen is cleared with the current one in
                // xterm, the default one in tmux).
                1049 => {
                    self.alternate = !self.alternate;
                    if self.alternate {
                        self.switched_by = *pick(&mut self.rng, &[1049, 1049, 1047, 47]);
                    }
                    // 1049 saves the cursor over DECSC's in xterm.
                    self.saved &= self.switched_by != 1049;
                    let on = if self.alternate { 'h' } else { 'l' };
                    format!("\x1b[49m\x1b[?{}{on}", self.switched_by)
                }
                code => format!("\x1b[?{code}{on}"),
            },
        }
        .into_bytes()
    }

    fn state(&mut self) -> Item {
        let alternate = self.alternate;
        let rng = &mut self.rng;
        match rng.random_range(0..12) {
            // On the primary screen: leaving the alternate one restores the
            // charsets saved on the way in, in xterm, not in tmux.
            0 if !alternate => pick(rng, &["\x1b(0", "\x1b(B", "\x1b)0", "\x1b)B"]).to_string(),
            0 | 1 => pick(rng, &["\x0e", "\x0f"]).to_string(),
            2 => "\x1bH".into(),
            3 => pick(rng, &["\x1b[g", "\x1b[3g"]).to_string(),
            // On the primary screen, DECRC after a DECSC there: tmux keeps
            // one saved cursor for both screens and apart from 1049's,
            // xterm one per screen, which 1049 also sets.
            // DECSC after a CHA: with a wrap pending, DECRC restores it in
            // xterm, not in tmux.
            4 | 5 if !alternate => {
                let save = !self.saved || rng.random_bool(0.5);
                self.saved = true;
                if save {
                    format!("\x1b[{}G\x1b7", rng.random_range(1..=80))
                } else {
                    "\x1b8".to_string()
                }
            }
            4 | 5 => "\x1bH".into(),
            6 => format!("\x1b]2;title {}\x07", rng.random_range(0..100)),
            7 => format!(
                "\x1b]8;;https://example.com/{}\x1b\\link\x1b]8;;\x1b\\",
                rng.random_range(0..100)
            ),
            8 => format!("\x1b[{} q", rng.random_range(0..7)),
            9 => pick(
                rng,
                &[
                    "\x07",
                    "\x00",
                    "\x7f",
                    "\x1b[",
                    "\x1b[1;",
                    "\x1b]2;cut",
                    "\x1b",
                ],
            )
            .to_string(),
            10 => "\x1b[22;0t".into(),
            _ => "\x1b[23;0t".into(),
        }
        .into_bytes()
    }
}

/// The items of seed `seed`.
fn generate(seed: u64) -> Vec<Item> {
    let mut g = Gen {
        rng: Xoshiro256PlusPlus::seed_from_u64(seed),
        region: None,
        alternate: false,
        switched_by: 1049,
        saved: false,
        wide: seed % 2 == 1,
    };
    (0..ITEMS)
        .map(|_| match g.rng.random_range(0..100) {
            0..30 => g.text(),
            30..45 => sgr(&mut g.rng),
            45..60 => g.motion(),
            60..78 => g.edit(),
            78..88 => g.mode(),
            _ => g.state(),
        })
        .collect()
}

/// Where the two late clients attach, in bytes of `output`.
fn cuts(seed: u64, output: &[u8]) -> (usize, usize) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5eed);
    let a = rng.random_range(0..=output.len());
    let b = rng.random_range(0..=output.len());
    (a.min(b), a.max(b))
}

/// Trials so far, for unique session names.
static TRIALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One run: a session fed `items`, clients attaching at `cuts`; the
/// first difference found, if any. The session is killed afterwards.
fn trial(server: &Server, tmux: &Tmux, items: &[Item], cuts: (usize, usize)) -> Result<(), String> {
    let name = &format!(
        "trial{}",
        TRIALS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let output: Vec<u8> = items.concat();
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("output");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    // Raw output (no ONLCR), no echo: the PTY carries exactly the bytes.
    let program = format!(
        "stty -opost -echo; exec cat {}",
        shell_words::quote(&fifo.to_string_lossy())
    );
    let ssh = |args: &[&str]| {
        let mut cmd = server.ssh_as("alice", "alice");
        cmd.arg("-tt").args(args);
        cmd
    };
    let stayed = tmux.pane(
        &ssh(&[
            "new",
            name,
            "--",
            "bash",
            "-c",
            &shell_words::quote(&program),
        ]),
        80,
        24,
    );
    let mut writer = open_writer(&fifo);
    let written = |bytes: usize| {
        wait_until("the output to be read", DEADLINE, || {
            server
                .session("alice", name)
                .is_some_and(|s| s["output_offset"].as_u64() >= Some(bytes as u64))
        });
    };
    let mut late = Vec::new();
    let mut sent = 0;
    for (clients, cut) in [(2, cuts.0), (3, cuts.1)] {
        writer.write_all(&output[sent..cut]).expect("write output");
        sent = cut;
        written(sent);
        late.push(tmux.pane(&ssh(&["attach", name]), 80, 24));
        wait_until("the client to attach", DEADLINE, || {
            server
                .session("alice", name)
                .is_some_and(|s| s["clients"] == clients)
        });
    }
    // CAN ends whatever sequence the output stopped in; the title says
    // when a pane has read everything.
    let done = format!("done {name}");
    writer.write_all(&output[sent..]).expect("write output");
    writer
        .write_all(format!("\x18\x1b]2;{done}\x07").as_bytes())
        .expect("write the end");
    for pane in std::iter::once(&stayed).chain(&late) {
        let titled = poll(DEADLINE, || (tmux.title(pane) == done).then_some(()));
        if titled.is_none() {
            return Err(format!("a pane never read the end: {:?}", tmux.title(pane)));
        }
    }
    let result = late
        .iter()
        .zip([cuts.0, cuts.1])
        .try_for_each(|(pane, cut)| {
            // A short wait lets the last bytes land.
            tmux.agree(&stayed, pane, Duration::from_secs(2))
                .map_err(|diff| format!("client attached after byte {cut}:\n{diff}"))
        });
    for pane in std::iter::once(&stayed).chain(&late) {
        tmux.close(pane);
    }
    server.run("alice", &["kill", name]);
    result
}

/// Opens the FIFO the session's program reads, once it reads it (a FIFO
/// opened for writing without a reader fails with ENXIO when non-blocking),
/// then makes it blocking again.
fn open_writer(fifo: &std::path::Path) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = poll(DEADLINE, || {
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc_nonblock())
            .open(fifo)
            .ok()
    });
    let file = opened.expect("the session's program to open its input");
    let flags = rustix::fs::fcntl_getfl(&file).expect("F_GETFL");
    rustix::fs::fcntl_setfl(&file, flags - rustix::fs::OFlags::NONBLOCK).expect("F_SETFL");
    file
}

fn libc_nonblock() -> i32 {
    rustix::fs::OFlags::NONBLOCK.bits() as i32
}

/// Removes items from a failing input while it still fails, for at most
/// [`MINIMISE_FOR`]; returns the smallest failing input found.
fn minimise(
    server: &Server,
    tmux: &Tmux,
    mut items: Vec<Item>,
    mut cuts: (usize, usize),
) -> (Vec<Item>, (usize, usize)) {
    let start = Instant::now();
    let mut chunk = items.len() / 2;
    while chunk > 0 && start.elapsed() < MINIMISE_FOR {
        let mut at = 0;
        while at < items.len() && start.elapsed() < MINIMISE_FOR {
            let end = (at + chunk).min(items.len());
            let removed: usize = items[at..end].iter().map(Vec::len).sum();
            let before: usize = items[..at].iter().map(Vec::len).sum();
            let shift = |cut: usize| {
                if cut >= before + removed {
                    cut - removed
                } else {
                    cut.min(before)
                }
            };
            let mut candidate = items.clone();
            candidate.drain(at..end);
            let candidate_cuts = (shift(cuts.0), shift(cuts.1));
            if trial(server, tmux, &candidate, candidate_cuts).is_err() {
                items = candidate;
                cuts = candidate_cuts;
            } else {
                at = end;
            }
        }
        chunk /= 2;
    }
    (items, cuts)
}

fn seeds() -> Vec<u64> {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    if let Some(seed) = var("KEEPSH_FUZZ_SEED") {
        return vec![seed];
    }
    let from = var("KEEPSH_FUZZ_FROM").unwrap_or(1);
    (from..from + var("KEEPSH_FUZZ_SEEDS").unwrap_or(SEEDS)).collect()
}

#[test]
fn clients_that_attach_at_any_byte_end_up_with_the_screen_of_one_attached_all_along() {
    let server = Server::start().without_time_limit();
    let tmux = Tmux::start();
    // KEEPSH_FUZZ_ALL=1: report every failing seed, not only the first.
    let all = std::env::var_os("KEEPSH_FUZZ_ALL").is_some();
    let mut failures = Vec::new();
    // KEEPSH_FUZZ_CASE=FILE: one case, the file's bytes as one item, the
    // clients attaching at KEEPSH_FUZZ_CUTS="A,B".
    if let Some(case) = std::env::var_os("KEEPSH_FUZZ_CASE") {
        let bytes = std::fs::read(case).expect("read the case");
        let cuts = std::env::var("KEEPSH_FUZZ_CUTS").unwrap_or_default();
        let cuts: Vec<usize> = cuts.split(',').filter_map(|c| c.parse().ok()).collect();
        let cuts = (
            cuts.first().copied().unwrap_or(0),
            cuts.last().copied().unwrap_or(bytes.len()),
        );
        if let Err(error) = trial(&server, &tmux, &[bytes], cuts) {
            panic!("the case fails:\n{error}");
        }
        return;
    }
    for seed in seeds() {
        let items = generate(seed);
        let cuts = cuts(seed, &items.concat());
        if let Err(first) = trial(&server, &tmux, &items, cuts) {
            let (items, cuts) = minimise(&server, &tmux, items, cuts);
            let again = trial(&server, &tmux, &items, cuts)
                .err()
                .unwrap_or_default();
            failures.push(format!(
                "seed {seed} fails:\n{first}\nsmallest input found ({} items), clients attach \
                 after bytes {} and {}:\n{:?}\n{again}",
                items.len(),
                cuts.0,
                cuts.1,
                String::from_utf8_lossy(&items.concat())
            ));
            eprintln!("{}", failures.last().expect("just pushed"));
            if !all {
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
