//! The ring buffer of a session's raw output, indexed by absolute byte offset.
//!
//! Invariant: `start() <= end()`, `end() - start() <= capacity()`, and the
//! bytes held are exactly the program's output from `start()` to `end()`.
//! Offsets count every byte the program ever wrote, so a client can say
//! "everything after offset N" and get neither a gap nor a duplicate.

use std::collections::VecDeque;

use bytes::Bytes;

/// A bounded window over a session's output.
#[derive(Debug)]
pub struct RingBuffer {
    bytes: VecDeque<u8>,
    capacity: usize,
    /// Absolute offset of `bytes[0]`.
    start: u64,
}

impl RingBuffer {
    /// An empty buffer that keeps the last `capacity` bytes (at least 1).
    /// Memory is allocated as output arrives, not up front.
    pub fn new(capacity: usize) -> RingBuffer {
        RingBuffer {
            bytes: VecDeque::new(),
            capacity: capacity.max(1),
            start: 0,
        }
    }

    /// The most bytes it keeps (`scrollback_bytes`).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Absolute offset of the oldest byte held.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Absolute offset one past the newest byte: the total output so far.
    pub fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    /// Appends output, dropping the oldest bytes beyond capacity.
    pub fn push(&mut self, data: &[u8]) {
        let data = if data.len() > self.capacity {
            // Only the tail can survive; skip the rest without copying it.
            let skipped = data.len() - self.capacity;
            self.start += (self.bytes.len() + skipped) as u64;
            self.bytes.clear();
            &data[skipped..]
        } else {
            data
        };
        let overflow = (self.bytes.len() + data.len()).saturating_sub(self.capacity);
        if overflow > 0 {
            self.bytes.drain(..overflow);
            self.start += overflow as u64;
        }
        self.bytes.extend(data);
    }

    /// Copies out up to `max_len` bytes starting at absolute offset `from`,
    /// clamped to what is held. Returns the offset actually used (`from`, or
    /// `start()` if `from` is older than the buffer) and the bytes.
    pub fn read(&self, from: u64, max_len: usize) -> (u64, Bytes) {
        let from = from.clamp(self.start, self.end());
        let skip = (from - self.start) as usize;
        let len = (self.bytes.len() - skip).min(max_len);
        let (a, b) = self.bytes.as_slices();
        let mut out = Vec::with_capacity(len);
        if skip < a.len() {
            let take = len.min(a.len() - skip);
            out.extend_from_slice(&a[skip..skip + take]);
            out.extend_from_slice(&b[..len - take]);
        } else {
            let skip = skip - a.len();
            out.extend_from_slice(&b[skip..skip + len]);
        }
        (from, Bytes::from(out))
    }

    /// Where the last `lines` lines begin: the offset just after the
    /// `lines`th `\n` counted back from the end (the unfinished last line
    /// comes on top). When the buffer holds fewer and has wrapped, the
    /// first line start it holds, so that a terminal parser fed from there
    /// does not begin inside a line or an escape sequence; when nothing has
    /// been dropped yet, `start()`.
    pub fn tail_lines_start(&self, lines: usize) -> u64 {
        if lines > 0 {
            let mut seen = 0;
            for (i, &b) in self.bytes.iter().enumerate().rev() {
                if b == b'\n' {
                    seen += 1;
                    if seen == lines {
                        return self.start + i as u64 + 1;
                    }
                }
            }
        } else {
            return self.end();
        }
        if self.start == 0 {
            return 0;
        }
        self.bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(self.start, |i| self.start + i as u64 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(ring: &RingBuffer) -> Vec<u8> {
        ring.read(0, usize::MAX).1.to_vec()
    }

    #[test]
    fn keeps_everything_below_capacity() {
        let mut ring = RingBuffer::new(10);
        ring.push(b"hello");
        assert_eq!((ring.start(), ring.end()), (0, 5));
        assert_eq!(all(&ring), b"hello");
    }

    #[test]
    fn wraps_keeping_the_newest_bytes_and_their_offsets() {
        let mut ring = RingBuffer::new(8);
        ring.push(b"0123456");
        ring.push(b"789ab");
        assert_eq!((ring.start(), ring.end()), (4, 12));
        assert_eq!(all(&ring), b"456789ab");
        assert_eq!(ring.read(6, 3), (6, Bytes::from_static(b"678")));
        assert_eq!(ring.read(11, 100), (11, Bytes::from_static(b"b")));
        assert_eq!(ring.read(12, 100), (12, Bytes::new()));
    }

    #[test]
    fn a_chunk_larger_than_capacity_keeps_its_tail() {
        let mut ring = RingBuffer::new(4);
        ring.push(b"ab");
        ring.push(b"0123456789");
        assert_eq!((ring.start(), ring.end()), (8, 12));
        assert_eq!(all(&ring), b"6789");
    }

    #[test]
    fn reads_across_the_deque_seam_match_a_reference_model() {
        // Pushes of varied sizes against a Vec that keeps everything.
        let mut ring = RingBuffer::new(37);
        let mut model = Vec::new();
        let mut seed = 7u32;
        for round in 0..500 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let len = (seed >> 16) as usize % 50;
            let chunk: Vec<u8> = (0..len).map(|i| (round + i) as u8).collect();
            ring.push(&chunk);
            model.extend_from_slice(&chunk);
            assert_eq!(ring.end(), model.len() as u64);
            assert!(ring.end() - ring.start() <= 37);
            let from = ring.start() + (seed as u64 % (ring.end() - ring.start() + 1));
            let (at, got) = ring.read(from, 13);
            assert_eq!(at, from);
            let want_end = (from as usize + 13).min(model.len());
            assert_eq!(&got[..], &model[from as usize..want_end]);
        }
    }

    #[test]
    fn reads_before_the_start_are_clamped() {
        let mut ring = RingBuffer::new(4);
        ring.push(b"abcdef");
        assert_eq!(ring.read(0, 10), (2, Bytes::from_static(b"cdef")));
    }

    #[test]
    fn tail_lines_start_counts_newlines_back_from_the_end() {
        let mut ring = RingBuffer::new(100);
        ring.push(b"a\nb\nc\nprompt");
        assert_eq!(ring.tail_lines_start(0), 12);
        assert_eq!(ring.tail_lines_start(1), 6);
        assert_eq!(ring.tail_lines_start(2), 4);
        assert_eq!(ring.tail_lines_start(9), 0);
        // Wrapped: never start inside the partial first line.
        let mut ring = RingBuffer::new(8);
        ring.push(b"xxxxab\ncd\n");
        assert_eq!(ring.start(), 2);
        assert_eq!(ring.tail_lines_start(1), 10);
        assert_eq!(ring.tail_lines_start(2), 7);
        assert_eq!(ring.tail_lines_start(5), 7);
    }
}
