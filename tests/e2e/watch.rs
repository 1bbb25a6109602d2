//! Watching a session without attaching to it. `wait`: for the program's
//! exit (its code, 128 + n for a signal), or for output after the call
//! that matches a pattern, across writes; 124 when `--timeout` runs out.
//! Many waiters on one session, on the same and on other patterns.
//! `tail`: the last lines as text, and with `-f` new output as text,
//! counted as a watcher, not a client. All of it from paramiko too.

use std::path::{Path, PathBuf};

use crate::harness::{Client, DEADLINE, Server, poll, stderr};

/// A FIFO in the server's directory, and its path quoted for `sh`.
fn fifo(server: &Server, name: &str) -> (PathBuf, String) {
    let path = server.dir.path().join(name);
    let made = std::process::Command::new("mkfifo").arg(&path).status();
    assert!(made.expect("run mkfifo").success());
    let quoted = shell_words::quote(&path.to_string_lossy()).into_owned();
    (path, quoted)
}

/// Starts session `name` running `script` under `sh`, detached.
fn start(server: &Server, name: &str, script: &str) {
    let quoted = shell_words::quote(script).into_owned();
    let out = server.run("alice", &["new", "-d", name, "--", "sh", "-c", &quoted]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `ssh alice wait ARGS...` (each quoted: ssh joins them with spaces),
/// running.
fn waiting(server: &Server, args: &[&str]) -> Client {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| shell_words::quote(a).into_owned())
        .collect();
    let quoted: Vec<&str> = quoted.iter().map(String::as_str).collect();
    server.stream("alice", &[&["wait"], &quoted[..]].concat())
}

fn write(fifo: &Path, text: &str) {
    std::fs::write(fifo, text).expect("write to the FIFO");
}

#[test]
fn wait_exits_with_the_programs_code_or_128_plus_its_signal() {
    let server = Server::start();
    let (go, q) = fifo(&server, "go");
    start(&server, "three", &format!("read x < {q}; exit 3"));
    let (stop, q) = fifo(&server, "stop");
    start(&server, "termed", &format!("read x < {q}; kill -TERM $$"));
    let mut three = waiting(&server, &["three"]);
    let mut termed = waiting(&server, &["termed"]);
    let mut pattern = waiting(&server, &["--for", "never printed", "three"]);
    let listed = poll(DEADLINE, || {
        server
            .session("alice", "three")
            .filter(|s| s["watchers"] == 1)
    });
    assert!(listed.is_some());
    write(&go, "x\n");
    write(&stop, "x\n");
    assert_eq!(three.wait_exit(), 3, "{}", three.errors());
    assert_eq!(termed.wait_exit(), 128 + 15, "{}", termed.errors());
    // A waiter for a pattern when the program exits first: 1, and why.
    assert_eq!(pattern.wait_exit(), 1);
    assert_eq!(
        pattern.errors(),
        "keepsh: the program of session 'three' exited with code 3 before its output matched \
         (check the pattern against `history`)\n"
    );
    // Already exited: at once.
    assert_eq!(waiting(&server, &["three"]).wait_exit(), 3);
}

#[test]
fn wait_for_matches_output_after_the_call_across_writes_and_times_out_with_124() {
    let server = Server::start();
    // Two FIFOs: a reader's close would drop a second line written early.
    let (first, q1) = fifo(&server, "first");
    let (second, q2) = fifo(&server, "second");
    let script = format!(
        "printf 'tests passed: 9\\n'; read a < {q1}; printf '\\033[32mtests pa'; \
         read b < {q2}; printf 'ssed: 4\\033[m\\n'; exec sleep 1000"
    );
    start(&server, "build", &script);
    // Output from before the call does not count.
    let mut old = waiting(&server, &["--for", "passed: 9", "--timeout", "1s", "build"]);
    assert_eq!(old.wait_exit(), 124);
    assert!(
        old.errors()
            .starts_with("keepsh: timed out after 1s waiting on session 'build'"),
        "{}",
        old.errors()
    );
    let mut new = waiting(&server, &["--for", r"tests? passed: \d", "build"]);
    // Waiters on other patterns, and a second on the same one: one pass
    // over the text serves them all.
    let mut same = waiting(&server, &["--for", r"tests? passed: \d", "build"]);
    let mut line = waiting(&server, &["--for", r"^tests passed: 4$", "build"]);
    let mut never = waiting(&server, &["--for", "never printed", "build"]);
    // Listed as watchers, not clients.
    let watching = poll(DEADLINE, || {
        server
            .session("alice", "build")
            .filter(|s| s["watchers"] == 4)
    });
    let session = watching.unwrap_or_else(|| panic!("{}", server.log()));
    assert_eq!(session["clients"], 0);
    // Two writes, the second once the first is out.
    write(&first, "a\n");
    let half = poll(DEADLINE, || {
        let out = server.run("alice", &["history", "--raw", "build"]);
        crate::harness::stdout(&out)
            .ends_with("tests pa")
            .then_some(())
    });
    assert!(half.is_some());
    write(&second, "b\n");
    assert_eq!(new.wait_exit(), 0, "{}", new.errors());
    assert_eq!(same.wait_exit(), 0, "{}", same.errors());
    assert_eq!(line.wait_exit(), 0, "{}", line.errors());
    // The one left still waits; when it goes, the session forgets it.
    let one_left = poll(DEADLINE, || {
        server
            .session("alice", "build")
            .filter(|s| s["watchers"] == 1)
    });
    assert!(one_left.is_some());
    never.kill();
    let none_left = poll(DEADLINE, || {
        server
            .session("alice", "build")
            .filter(|s| s["watchers"] == 0)
    });
    assert!(none_left.is_some());
    // A pattern that does not compile: a usage error.
    let out = server.run("alice", &["wait", "--for", "(unclosed", "build"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("keepsh: invalid --for pattern: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn tail_prints_the_last_lines_and_follows_as_text_without_being_a_client() {
    let server = Server::start();
    let (go, q) = fifo(&server, "go");
    let script = format!(
        "seq -f 'line %g' 1 30; read a < {q}; printf '\\033[1;31mred alert\\033[m\\n'; \
         exec sleep 1000"
    );
    start(&server, "log", &script);
    let mut attached = server.tt("alice", &["attach", "log"]);
    attached.wait_for("line 30");
    let out = server.run("alice", &["tail", "-n", "3", "log"]);
    assert_eq!(crate::harness::stdout(&out), "line 28\nline 29\nline 30\n");
    let mut follow = server.stream("alice", &["tail", "-f", "-n", "2", "log"]);
    follow.wait_for("line 29\nline 30\n");
    // One from a terminal of another size too: it takes no size.
    let before = server.session("alice", "log").expect("log");
    let mut cmd = server.ssh("alice");
    cmd.args(["-tt", "tail", "-f", "-n", "1", "log"]);
    let mut sized = Client::in_terminal(&cmd, 50, 10);
    sized.wait_for("line 30");
    let counted = poll(DEADLINE, || {
        server
            .session("alice", "log")
            .filter(|s| s["watchers"] == 2)
    });
    let session = counted.expect("two watchers listed");
    assert_eq!(session["clients"], 1, "tail -f counted as a client");
    assert_eq!(
        (&session["cols"], &session["rows"]),
        (&before["cols"], &before["rows"])
    );
    write(&go, "a\n");
    let output = follow.wait_for("red alert");
    assert!(output.ends_with("line 30\nred alert\n"), "{output:?}");
    sized.wait_for("red alert");
    follow.kill();
    sized.kill();
    let gone = poll(DEADLINE, || {
        server
            .session("alice", "log")
            .filter(|s| s["watchers"] == 0)
    });
    assert!(gone.is_some());
}

#[test]
fn paramiko_drives_a_session_with_wait_tail_send_and_list_on_one_connection() {
    let server = Server::start();
    assert!(server.run("alice", &["new", "-d", "sh"]).status.success());
    let out = server.paramiko("alice", &["alice"], &["drive", "sh"]);
    let out = crate::harness::stdout(&out);
    for fact in [
        "clients=0\n",
        "send=0\n",
        "wait=0\n",
        "tail=0 paramiko-42|",
        "current_command=sh",
    ] {
        assert!(out.contains(fact), "no {fact:?} in:\n{out}");
    }
}

#[test]
fn list_says_what_each_session_is_doing_in_80_columns() {
    let server = Server::start();
    assert!(
        server
            .run("alice", &["new", "-d", "agent"])
            .status
            .success()
    );
    let send = |text: &str| {
        let quoted = shell_words::quote(text).into_owned();
        let out = server.run("alice", &["send", "agent", "--enter", "--", &quoted]);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    send("cd /tmp");
    send("printf '\\033]2;agent title\\007\\007'");
    send("exec vim -u NONE");
    let doing = poll(DEADLINE, || {
        server.session("alice", "agent").filter(|s| {
            s["current_command"] == "vim"
                && s["cwd"] == "/tmp"
                && s["title"] == "agent title"
                && s["bells"] == 1
        })
    });
    let doing = doing.unwrap_or_else(|| panic!("{:?}", server.session("alice", "agent")));
    assert!(doing["last_line"].is_string(), "{doing}");
    let table = crate::harness::stdout(&server.run("alice", &["list"]));
    assert!(table.lines().all(|l| l.chars().count() <= 80), "{table}");
    assert!(
        table.contains("RUNNING") && table.contains("vim"),
        "{table}"
    );
    // Attaching resets the bell count.
    let mut client = server.tt("alice", &["attach", "agent"]);
    client.wait_for("~");
    let reset = poll(DEADLINE, || {
        server.session("alice", "agent").filter(|s| s["bells"] == 0)
    });
    assert!(reset.is_some());
}
