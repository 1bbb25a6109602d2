//! Giving freed memory back to the system, for the two kinds of process
//! whose heap swells for a moment: the server after argon2 (a 19 MiB
//! buffer per verification) and a session process after a burst of work
//! (its start, an attach's redraw, a flood of output), and a thread's
//! stack that once went deep.

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

/// Bytes kept below the caller's frame when the stack is given back: the
/// call to madvise(2) itself and the x86-64 red zone (128 bytes) run there.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const STACK_MARGIN: usize = 4096;

/// Has the kernel drop the calling thread's stack pages below the caller's
/// frame (`madvise(2)` `MADV_DONTNEED`; they read as zeroes when touched
/// again). A thread's stack stays resident as deep as it ever went: a
/// session process's main stack once went 36 KiB deep (starting the
/// program, the first redraw) while idle it needs a quarter of that.
/// Returns the bytes of stack that no longer hold memory (what was mapped
/// below the frame; pages never touched count too). Costs one
/// pthread_getattr_np(3), which reads `/proc/self/maps` for the main
/// thread.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[expect(unsafe_code, reason = "pthread_getattr_np and madvise: raw calls")]
pub fn give_back_unused_stack() -> usize {
    use nix::libc;
    let here = std::hint::black_box(0u8);
    let frame = std::ptr::addr_of!(here) as usize;
    // SAFETY: `attr` is initialised by pthread_getattr_np before it is read
    // and destroyed once; the out-pointers point at locals.
    let (low, size, page) = unsafe {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
        if libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) != 0 {
            return 0;
        }
        let (mut low, mut size) = (std::ptr::null_mut(), 0);
        let got = libc::pthread_attr_getstack(attr.as_ptr(), &mut low, &mut size);
        libc::pthread_attr_destroy(attr.as_mut_ptr());
        if got != 0 {
            return 0;
        }
        let page = usize::try_from(libc::sysconf(libc::_SC_PAGESIZE)).unwrap_or(4096);
        (low as usize, size, page)
    };
    let end = (frame.saturating_sub(STACK_MARGIN)) & !(page - 1);
    if frame >= low + size || end <= low {
        return 0;
    }
    // SAFETY: [low, end) lies below the live frames of this thread (the
    // stack grows down and `end` is a page and a margin below this
    // function's own local), so no object lives there; MADV_DONTNEED on
    // private anonymous memory only makes it read as zeroes next time.
    // Parts of the range that are not mapped (a main stack below its
    // lowest touched page) make it fail with ENOMEM after the mapped part
    // was done.
    unsafe {
        libc::madvise(low as *mut libc::c_void, end - low, libc::MADV_DONTNEED);
    }
    end - low
}

/// Elsewhere the stack is left as it is.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn give_back_unused_stack() -> usize {
    0
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Resident KiB of the mapping holding `address` (`/proc/self/smaps`).
    fn resident_kib(address: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((low, high)) = range.split_once('-')
                && let (Ok(low), Ok(high)) = (
                    usize::from_str_radix(low, 16),
                    usize::from_str_radix(high, 16),
                )
            {
                inside = (low..high).contains(&address);
            } else if inside && let Some(rss) = line.strip_prefix("Rss:") {
                let kib = rss.trim().trim_end_matches("kB").trim();
                return kib.parse().expect("Rss");
            }
        }
        panic!("no mapping holds {address:#x}");
    }

    /// Touches `depth` pages of stack below the caller.
    fn deep(depth: usize) -> u64 {
        let page = std::hint::black_box([depth as u8; 4096]);
        if depth == 0 {
            0
        } else {
            deep(depth - 1) + u64::from(page[7])
        }
    }

    /// After a deep call the stack is resident as deep as it went; given
    /// back, the pages below the caller leave (the kernel's count), what
    /// the caller's frame holds stays, and the stack works on.
    #[test]
    fn a_deep_stack_is_given_back_keeping_the_live_frames() {
        let thread = std::thread::Builder::new().stack_size(8 << 20);
        let run = thread.spawn(|| {
            let kept = std::hint::black_box([7u8; 64]);
            let at = std::ptr::addr_of!(kept) as usize;
            std::hint::black_box(deep(256));
            let before = resident_kib(at);
            let given = give_back_unused_stack();
            let after = resident_kib(at);
            assert!(before >= 1024, "{before} KiB resident after the deep call");
            assert!(after + 900 <= before, "{before} → {after} KiB resident");
            assert!(given >= 1024 * 1024, "{given} bytes given back");
            assert_eq!(kept, [7u8; 64]);
            assert_eq!(deep(16), (1..=16).sum::<u64>());
        });
        run.expect("spawn").join().expect("the thread");
    }
}
