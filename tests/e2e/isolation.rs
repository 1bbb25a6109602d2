//! Each login name has a private set of sessions: another user's session
//! looks exactly like a missing one.

use crate::harness::{Server, stderr};

#[test]
fn bob_can_neither_list_attach_kill_nor_rename_alices_sessions() {
    let server = Server::start();
    let out = server.run("alice", &["new", "-d", "secret", "--", "sleep", "1000"]);
    assert!(out.status.success());
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    assert!(server.list("bob").is_empty());
    for reference in ["secret", id.as_str(), &id[..8]] {
        for args in [
            vec!["attach", reference],
            vec!["kill", reference],
            vec!["rename", reference, "mine"],
        ] {
            let out = server.run("bob", &args);
            assert_eq!(out.status.code(), Some(1), "{args:?}");
            // The same words as for a session that never existed.
            assert_eq!(
                stderr(&out),
                format!("keepsh: no session '{reference}' (see 'list' for your sessions)\n"),
                "{args:?}"
            );
        }
    }
    // Bob may use the same name for his own session.
    assert!(server.run("bob", &["new", "-d", "secret"]).status.success());
    let alice = server
        .session("alice", "secret")
        .expect("alice's session survives");
    assert_eq!(alice["state"], "orphaned");
    assert_eq!(server.list("alice").len(), 1);
}
