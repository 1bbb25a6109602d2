//! Links `keepsh-session` (the session process, one per session) as a
//! position-dependent executable: a PIE's read-only data holding pointers
//! (vtables, string tables) is relocated at start, and those pages then
//! belong to each process (~400 KiB per session process measured); without
//! PIE they stay the file's, shared by every session. The server (`keepsh`,
//! which faces the network) stays a PIE.

fn main() {
    println!("cargo:rustc-link-arg-bin=keepsh-session=-no-pie");
}
