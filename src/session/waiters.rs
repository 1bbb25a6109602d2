//! `wait --for REGEX`: a session's waiters, matched in one pass over its
//! output text however many there are.
//!
//! While a session has waiters, its output is stripped to text once
//! ([`Text`]: escape sequences dropped, line feeds kept) and stepped
//! through one lazy DFA of every distinct pattern (regex-automata's hybrid
//! DFA, all patterns at once, unanchored, every match reported): one
//! transition per byte of text, so a thousand waiters cost the session
//! nothing per byte beyond the first. Where the DFA says a pattern's match
//! ended, each waiter on that pattern checks with its own [`Regex`] that a
//! match lies wholly in the text produced after it came; the first that
//! does is told ([`Event::Matched`]) and leaves.
//!
//! Matching rules: `^` and `$` match at line starts and ends (multi-line
//! mode), and the end of the output so far counts as an end (a prompt with
//! no newline after it matches). With no waiter the output is not looked
//! at: the first waiter's text starts as a line does (`^`, `\b`). A match must fit in the last [`WINDOW`]
//! bytes of text. A pattern the lazy DFA cannot take (a Unicode word
//! boundary `\b` before non-ASCII text) is instead matched by its regex
//! over the window after each chunk: correct, slower.

use regex::{Regex, RegexBuilder};
use regex_automata::hybrid::LazyStateID;
use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::util::prefilter::Prefilter;
use regex_automata::util::{start, syntax};
use regex_automata::{Anchored, MatchKind, Span};
use tokio::sync::mpsc;

use super::actor::AttachmentId;
use super::text::Text;
use crate::protocol::Event;

/// How much of the latest text, in bytes, a match must fit in.
pub(super) const WINDOW: usize = 64 * 1024;
/// Most memory one pattern may compile to, in bytes (regex's `size_limit`).
const PATTERN_LIMIT: usize = 1 << 20;

/// One waiter: which pattern, from which text offset, and its queue.
struct Waiter {
    id: AttachmentId,
    pattern: usize,
    /// Text offset (bytes of stripped text since the first waiter came)
    /// from which a match counts.
    start: u64,
    events: mpsc::Sender<Event>,
}

/// A distinct pattern, and whether the shared DFA carries it.
struct Pattern {
    source: String,
    regex: Regex,
    in_filter: bool,
}

/// The shared lazy DFA and where it stands in the text.
struct Filter {
    dfa: DFA,
    cache: Cache,
    state: LazyStateID,
    /// Finds where a match of any pattern may start (their prefix
    /// literals, e.g. with memchr or Teddy), to skip the text between while
    /// no match is under way: the common case runs at memchr's speed.
    prefilter: Option<Prefilter>,
    /// The start state does not depend on the byte before it (no `^`,
    /// `\b` at the patterns' starts).
    universal_start: bool,
    /// DFA pattern id → index into `Waiters::patterns`.
    patterns: Vec<usize>,
}

/// The waiters of one session (see the module doc).
#[derive(Default)]
pub(super) struct Waiters {
    text: Text,
    /// The latest text: at most 2 × [`WINDOW`] bytes, at least [`WINDOW`]
    /// once that much came.
    window: String,
    /// Text offset of `window`'s first byte.
    window_start: u64,
    patterns: Vec<Pattern>,
    waiters: Vec<Waiter>,
    filter: Option<Filter>,
}

/// Compiles `source` as `wait --for` matches it (multi-line, at most
/// 1 MiB compiled).
///
/// # Errors
/// The regex crate's error, in one line.
pub fn compile(source: &str) -> Result<Regex, String> {
    RegexBuilder::new(source)
        .multi_line(true)
        .size_limit(PATTERN_LIMIT)
        .build()
        .map_err(|e| {
            e.to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
}

/// One lazy DFA of `sources` (unanchored, every match reported), and a
/// prefilter from their prefix literals when a fast one exists.
fn dfa_of(sources: &[&str]) -> Option<(DFA, Option<Prefilter>)> {
    let syntax = syntax::Config::new().multi_line(true);
    let hirs = syntax::parse_many_with(sources, &syntax).ok()?;
    // Leftmost-first extraction trims the literals (to a common prefix,
    // dropping one that another is a prefix of): every position where a
    // match of any pattern can start is still a candidate, and 100
    // `never-printed-N` become one memmem for "never-printed-".
    let prefilter =
        Prefilter::from_hirs_prefix(MatchKind::LeftmostFirst, &hirs).filter(Prefilter::is_fast);
    let config = DFA::config()
        .match_kind(MatchKind::All)
        .specialize_start_states(prefilter.is_some());
    let dfa = DFA::builder()
        .syntax(syntax)
        .configure(config)
        .thompson(
            regex_automata::nfa::thompson::Config::new()
                .nfa_size_limit(Some(PATTERN_LIMIT * sources.len().max(1))),
        )
        .build_many(sources)
        .ok()?;
    Some((dfa, prefilter))
}

impl Waiters {
    /// How many waiters there are.
    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    /// Adds waiter `id` for `source`: text from now on counts.
    ///
    /// # Errors
    /// The pattern does not compile (see [`compile`]).
    pub fn add(
        &mut self,
        id: AttachmentId,
        source: &str,
        events: mpsc::Sender<Event>,
    ) -> Result<(), String> {
        let start = self.text_end();
        let pattern = match self.patterns.iter().position(|p| p.source == source) {
            Some(index) => index,
            None => {
                let regex = compile(source)?;
                let in_filter = dfa_of(&[source]).is_some();
                self.patterns.push(Pattern {
                    source: source.to_owned(),
                    regex,
                    in_filter,
                });
                self.patterns.len() - 1
            }
        };
        self.waiters.push(Waiter {
            id,
            pattern,
            start,
            events,
        });
        if self
            .filter
            .as_ref()
            .is_none_or(|f| !f.patterns.contains(&pattern))
            && self.patterns[pattern].in_filter
        {
            self.rebuild();
        }
        Ok(())
    }

    /// Removes waiter `id` (its channel closed); true if it was one.
    pub fn remove(&mut self, id: AttachmentId) -> bool {
        let before = self.waiters.len();
        self.waiters.retain(|w| w.id != id);
        if self.waiters.is_empty() {
            *self = Waiters::default();
        }
        self.waiters.len() != before
    }

    /// Every waiter's queue, removing them all (the program exited).
    pub fn take_all(&mut self) -> Vec<mpsc::Sender<Event>> {
        let waiters = std::mem::take(&mut self.waiters);
        *self = Waiters::default();
        waiters.into_iter().map(|w| w.events).collect()
    }

    fn text_end(&self) -> u64 {
        self.window_start + self.window.len() as u64
    }

    /// Takes the next chunk of output; returns the waiters it matched,
    /// removed.
    pub fn feed(&mut self, output: &[u8]) -> Vec<(AttachmentId, mpsc::Sender<Event>)> {
        if self.waiters.is_empty() {
            return Vec::new();
        }
        let text = self.text.feed(output);
        if text.is_empty() {
            return Vec::new();
        }
        let mut hits = vec![false; self.patterns.len()];
        if let Some(filter) = &mut self.filter
            && !filter.step(text.as_bytes(), &mut hits)
        {
            // The lazy DFA gave up on this text: every pattern is a candidate.
            hits.iter_mut().for_each(|h| *h = true);
            self.rebuild();
        }
        for (hit, pattern) in hits.iter_mut().zip(&self.patterns) {
            *hit |= !pattern.in_filter;
        }
        self.push_text(&text);
        self.matched(&hits)
    }

    /// The waiters on a pattern in `hits` that a match after their start
    /// satisfies, removed.
    fn matched(&mut self, hits: &[bool]) -> Vec<(AttachmentId, mpsc::Sender<Event>)> {
        let mut found = Vec::new();
        let mut i = 0;
        while i < self.waiters.len() {
            let waiter = &self.waiters[i];
            if hits[waiter.pattern] && self.matches_after(waiter.pattern, waiter.start) {
                let waiter = self.waiters.swap_remove(i);
                found.push((waiter.id, waiter.events));
            } else {
                i += 1;
            }
        }
        if self.waiters.is_empty() {
            *self = Waiters::default();
        }
        found
    }

    /// Whether pattern `pattern` matches text that starts at or after text
    /// offset `start` within the window (`^` and `\b` see what precedes).
    fn matches_after(&self, pattern: usize, start: u64) -> bool {
        let at = self.index_of(start);
        self.patterns[pattern].regex.is_match_at(&self.window, at)
    }

    /// Where text offset `offset` is in the window: its start if older,
    /// the next character boundary.
    fn index_of(&self, offset: u64) -> usize {
        let mut at = usize::try_from(offset.saturating_sub(self.window_start))
            .unwrap_or(usize::MAX)
            .min(self.window.len());
        while !self.window.is_char_boundary(at) {
            at += 1;
        }
        at
    }

    fn push_text(&mut self, text: &str) {
        self.window.push_str(text);
        if self.window.len() > 2 * WINDOW {
            let mut cut = self.window.len() - WINDOW;
            while !self.window.is_char_boundary(cut) {
                cut += 1;
            }
            self.window.drain(..cut);
            self.window_start += cut as u64;
        }
    }

    /// A DFA of the patterns that have waiters, brought to where the
    /// current one stood by stepping it over the window since the oldest
    /// waiter came (so partial matches are not lost). Patterns nobody
    /// waits on any more are dropped here.
    fn rebuild(&mut self) {
        self.prune();
        let carried: Vec<usize> = (0..self.patterns.len())
            .filter(|&p| self.patterns[p].in_filter)
            .collect();
        let sources: Vec<&str> = carried
            .iter()
            .map(|&p| self.patterns[p].source.as_str())
            .collect();
        self.filter = None;
        let Some((dfa, prefilter)) = dfa_of(&sources) else {
            // Each compiles alone but not together (size limits): match
            // them all by their regexes.
            self.patterns.iter_mut().for_each(|p| p.in_filter = false);
            return;
        };
        let oldest = self.waiters.iter().map(|w| w.start).min();
        let from = oldest.map_or(self.window.len(), |start| self.index_of(start));
        let behind = from.checked_sub(1).map(|i| self.window.as_bytes()[i]);
        let Some(mut filter) = Filter::new(dfa, prefilter, carried, behind) else {
            self.patterns.iter_mut().for_each(|p| p.in_filter = false);
            return;
        };
        let mut ignored = vec![false; self.patterns.len()];
        filter.step(&self.window.as_bytes()[from..], &mut ignored);
        self.filter = Some(filter);
    }

    /// Drops the patterns no waiter uses, renumbering the waiters'.
    fn prune(&mut self) {
        let mut renumber = vec![None; self.patterns.len()];
        let mut kept = Vec::new();
        for (index, pattern) in std::mem::take(&mut self.patterns).into_iter().enumerate() {
            if self.waiters.iter().any(|w| w.pattern == index) {
                renumber[index] = Some(kept.len());
                kept.push(pattern);
            }
        }
        self.patterns = kept;
        for waiter in &mut self.waiters {
            waiter.pattern = renumber[waiter.pattern].expect("a waiter's pattern is kept");
        }
    }
}

/// `dfa`'s unanchored start state after `behind` (the byte before, for `^`
/// and `\b`); None if it gave up.
fn start_state(dfa: &DFA, cache: &mut Cache, behind: Option<u8>) -> Option<LazyStateID> {
    let config = start::Config::new()
        .anchored(Anchored::No)
        .look_behind(behind);
    dfa.start_state(cache, &config).ok()
}

impl Filter {
    /// The DFA at its unanchored start, after `behind` (the text byte
    /// before where it starts, for `^` and `\b`).
    fn new(
        dfa: DFA,
        prefilter: Option<Prefilter>,
        patterns: Vec<usize>,
        behind: Option<u8>,
    ) -> Option<Filter> {
        let mut cache = dfa.create_cache();
        let universal_start = dfa.get_nfa().look_set_prefix_any().is_empty();
        Some(Filter {
            state: start_state(&dfa, &mut cache, behind)?,
            dfa,
            cache,
            prefilter,
            universal_start,
            patterns,
        })
    }

    /// Puts the DFA in its unanchored start state after `behind`.
    fn restart(&mut self, behind: Option<u8>) -> bool {
        match start_state(&self.dfa, &mut self.cache, behind) {
            Some(state) => {
                self.state = state;
                true
            }
            None => false,
        }
    }

    /// Where the next byte to step is, from `at`: further on when the DFA
    /// is in its start state and the prefilter finds no possible match
    /// start before (the DFA restarted there). With no candidate, the last
    /// bytes that could begin a prefix the next chunk completes are still
    /// stepped. None if the DFA gave up.
    fn skip(&mut self, text: &[u8], at: usize) -> Option<usize> {
        let Some(prefilter) = self.prefilter.as_ref().filter(|_| self.state.is_start()) else {
            return Some(at);
        };
        let cut_off = text
            .len()
            .saturating_sub(prefilter.max_needle_len().saturating_sub(1));
        let next = prefilter
            .find(text, Span::from(at..text.len()))
            .map_or(cut_off.max(at), |span| span.start);
        if next > at && !self.universal_start && !self.restart(Some(text[next - 1])) {
            return None;
        }
        Some(next)
    }

    /// Steps over `text`, marking in `hits` (indexed by pattern) each
    /// pattern a match of which ends in it, the end of `text` counting as
    /// an end. False if the lazy DFA gave up.
    fn step(&mut self, text: &[u8], hits: &mut [bool]) -> bool {
        let mut at = 0;
        while at < text.len() {
            match self.skip(text, at) {
                Some(next) if next < text.len() => at = next,
                Some(_) => break,
                None => return false,
            }
            match self.dfa.next_state(&mut self.cache, self.state, text[at]) {
                Ok(next) => self.state = next,
                Err(_) => return false,
            }
            at += 1;
            if self.state.is_tagged() {
                if self.state.is_quit() {
                    return false;
                }
                self.mark(self.state, hits);
            }
        }
        match self.dfa.next_eoi_state(&mut self.cache, self.state) {
            Ok(end) if end.is_match() => self.mark(end, hits),
            Ok(end) => return !end.is_quit(),
            Err(_) => return false,
        }
        true
    }

    fn mark(&self, state: LazyStateID, hits: &mut [bool]) {
        if !state.is_match() {
            return;
        }
        for i in 0..self.dfa.match_len(&self.cache, state) {
            let id = self.dfa.match_pattern(&self.cache, state, i);
            if let Some(&pattern) = self.patterns.get(id.as_usize()) {
                hits[pattern] = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(waiters: &mut Waiters, id: AttachmentId, pattern: &str) {
        let (tx, _rx) = mpsc::channel(1);
        waiters.add(id, pattern, tx).expect("compiles");
    }

    fn ids(found: Vec<(AttachmentId, mpsc::Sender<Event>)>) -> Vec<AttachmentId> {
        let mut ids: Vec<_> = found.into_iter().map(|(id, _)| id).collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn a_match_across_chunks_and_escapes_wakes_every_waiter_on_it() {
        let mut waiters = Waiters::default();
        for id in 0..100 {
            waiter(&mut waiters, id, r"tests? passed: \d+");
        }
        waiter(&mut waiters, 100, "never");
        assert!(ids(waiters.feed(b"\x1b[32mtests pa")).is_empty());
        let found = ids(waiters.feed(b"ss\x1b[0med: 4"));
        assert_eq!(found, (0..100).collect::<Vec<_>>());
        assert_eq!(waiters.len(), 1);
        assert_eq!(waiters.patterns.len(), 2, "pruned only on a rebuild");
    }

    #[test]
    fn only_text_after_a_waiter_came_counts() {
        let mut waiters = Waiters::default();
        waiter(&mut waiters, 1, "x");
        assert!(ids(waiters.feed(b"abc")).is_empty());
        // "ab" began before waiter 2 came; it needs a whole "ab" after.
        waiters.feed(b"a");
        waiter(&mut waiters, 2, "ab");
        assert!(ids(waiters.feed(b"b")).is_empty());
        assert_eq!(ids(waiters.feed(b" ab")), vec![2]);
        // Waiter 1's partial state survived the rebuild waiter 2 caused.
        waiter(&mut waiters, 3, "yz");
        waiters.feed(b"y");
        waiter(&mut waiters, 4, "q");
        assert_eq!(ids(waiters.feed(b"z x")), vec![1, 3]);
    }

    #[test]
    fn lines_anchor_and_a_prompt_without_newline_matches() {
        let mut waiters = Waiters::default();
        waiter(&mut waiters, 1, "^done$");
        waiter(&mut waiters, 2, r"Continue\? $");
        assert!(ids(waiters.feed(b"not done yet\r\n")).is_empty());
        assert_eq!(ids(waiters.feed(b"done\r\nContinue? ")), vec![1, 2]);
    }

    #[test]
    fn a_unicode_word_boundary_is_matched_by_its_regex() {
        let mut waiters = Waiters::default();
        waiter(&mut waiters, 1, r"\bété\b");
        assert!(!waiters.patterns[0].in_filter);
        assert!(ids(waiters.feed("un étéx".as_bytes())).is_empty());
        assert_eq!(ids(waiters.feed(" été fini".as_bytes())), vec![1]);
    }

    #[test]
    fn the_window_is_bounded_and_a_match_must_fit_in_it() {
        let mut waiters = Waiters::default();
        waiter(&mut waiters, 1, "start.*end");
        waiters.feed(b"start");
        for _ in 0..10 {
            waiters.feed(&[b'x'; WINDOW]);
            assert!(waiters.window.len() <= 2 * WINDOW);
        }
        // The DFA saw "start…end" but it no longer fits the window.
        assert!(ids(waiters.feed(b"end")).is_empty());
        assert_eq!(ids(waiters.feed(b"\nstart end")), vec![1]);
    }

    #[test]
    fn a_bad_pattern_is_one_line_and_the_last_waiter_frees_everything() {
        let mut waiters = Waiters::default();
        let (tx, _rx) = mpsc::channel(1);
        let error = waiters.add(1, "(unclosed", tx).unwrap_err();
        assert!(!error.contains('\n'), "{error}");
        waiter(&mut waiters, 2, "a");
        waiters.feed(b"zzz");
        assert!(waiters.remove(2));
        assert!(waiters.filter.is_none() && waiters.window.is_empty());
    }

    #[test]
    fn waiters_wake_exactly_when_the_regex_crate_first_matches_after_them() {
        const PATTERNS: &[&str] = &["ab", "a+b", "^b", "x$", r"(?-u:\b)x", "ba|xa", "a.b", "b a"];
        let judges: Vec<Regex> = PATTERNS.iter().map(|p| compile(p).unwrap()).collect();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..300 {
            let mut waiters = Waiters::default();
            // (id, pattern, text offset it came at, chunk it matched in)
            let mut judged: Vec<(AttachmentId, usize, usize, Option<usize>)> = Vec::new();
            let mut text = String::new();
            // Where the text the session keeps began: with no waiter left
            // it keeps none, and the next starts as at a line's start.
            let mut base = 0;
            for chunk in 0..40 {
                if next() % 3 == 0 {
                    let pattern = (next() % PATTERNS.len() as u64) as usize;
                    let id = judged.len() as AttachmentId;
                    waiter(&mut waiters, id, PATTERNS[pattern]);
                    judged.push((id, pattern, text.len(), None));
                }
                let piece: String = (0..next() % 6)
                    .map(|_| ['a', 'b', 'x', ' ', '\n'][(next() % 5) as usize])
                    .collect();
                text.push_str(&piece);
                let mut woke = ids(waiters.feed(piece.as_bytes()));
                let mut expected = Vec::new();
                for (id, pattern, start, matched) in &mut judged {
                    let regex = &judges[*pattern];
                    if matched.is_none() && regex.is_match_at(&text[base..], *start - base) {
                        *matched = Some(chunk);
                        expected.push(*id);
                    }
                }
                woke.sort_unstable();
                assert_eq!(woke, expected, "chunk {chunk} of {text:?}: {judged:?}");
                if waiters.len() == 0 {
                    base = text.len();
                }
            }
        }
    }
}
