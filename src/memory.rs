//! Giving freed memory back to the system, for the two kinds of process
//! whose heap swells for a moment: the server after argon2 (a 19 MiB
//! buffer per verification) and a session process after a burst of work
//! (its start, an attach's redraw, a flood of output).

/// Has glibc return the pages of freed memory to the system
/// (`malloc_trim(3)`): whole free pages inside every arena's heap, not only
/// its top. glibc raises its mmap threshold after a large block is freed,
/// and an arena gives memory back on its own only above its trim threshold
/// (mallopt(3) M_TRIM_THRESHOLD), and never from the middle of its heap:
/// without this, RSS stays at a burst's peak. Returns whether any memory
/// was released. Costs a walk over the free lists (microseconds for a
/// session's heap). Measured with `cargo bench --bench compare` (auth,
/// memory): see BENCHMARKS.md.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[expect(unsafe_code, reason = "malloc_trim, a glibc call with no safe binding")]
pub fn give_back_freed_memory() -> bool {
    // SAFETY: malloc_trim takes no pointer and glibc serialises it with
    // every other allocator call; it only releases pages no block uses.
    unsafe { nix::libc::malloc_trim(0) == 1 }
}

/// Elsewhere (musl, other systems) the allocator has no such call.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn give_back_freed_memory() -> bool {
    false
}
