//! The SSH server from the first byte: what a client sends, into russh
//! with keepsh's configuration and handler (`front::Connection`), over an
//! in-memory pipe; the server's answers are read and dropped. Never a
//! panic, never a hang: the connection, and every task it spawned, must
//! end once the input has.
//!
//! The first byte picks how far the harness takes the client before the
//! fuzzer's bytes:
//! - `0 mod 3`, **raw**: nothing; the input is the client's stream from
//!   its identification line on (version exchange, KEXINIT, key exchange
//!   messages under keepsh's real algorithms).
//! - `1 mod 3`, **plaintext**: the harness sends an identification line
//!   and a KEXINIT that offers only `none` (russh's key exchange and
//!   cipher without cryptography, appended to keepsh's lists here only),
//!   then NEWKEYS; the rest of the input is cut into packets (a 2-byte
//!   length, then that many payload bytes) that the harness frames, so
//!   the fuzzer's bytes are SSH messages: service requests,
//!   authentication, channels, global requests.
//! - `2 mod 3`, **logged in**: as plaintext, then `ssh-userauth` and a
//!   correct password for the configured user `fuzz` (an argon2id hash of
//!   the smallest cost, so a login takes microseconds), then the packets:
//!   channels, `pty-req`, `shell`, `exec` command strings, `env`,
//!   `window-change`, `subsystem`, data, EOF and close.
//!
//! Sessions are never started: the session-host program is a path that
//! does not exist, so a `shell` or `exec` that would start one fails as a
//! failed spawn does. The state directory is a fresh temporary one.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use keepsh::admission::Startups;
use keepsh::config::Config;
use keepsh::front::{AuthProgress, Connection, Shared};
use keepsh::server::startup::{self, Launch};
use libfuzzer_sys::fuzz_target;
use russh::keys::PrivateKey;
use russh::keys::ssh_key::private::Ed25519Keypair;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio::sync::{oneshot, watch};

/// The configured user's password.
const PASSWORD: &str = "fuzz";
/// The client's pause after its input, in paused time: it ends once no
/// task has anything left to do.
const SETTLE: Duration = Duration::from_secs(1);

struct Server {
    runtime: Runtime,
    config: Arc<russh::server::Config>,
    shared: Arc<Shared>,
    startups: Arc<Startups>,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let state = std::env::temp_dir().join(format!("keepsh-fuzz-ssh-{}", std::process::id()));
        std::fs::create_dir_all(&state).expect("state directory");
        let text = format!(
            "[server]\nstate_dir = {state:?}\nsftp_server = \"\"\n\n\
             [[users]]\nname = \"fuzz\"\npassword_hash = \"{}\"\n",
            cheapest_hash()
        );
        let config = Config::parse(&text, "fuzz.toml".as_ref(), "/".as_ref()).expect("config");
        let key = PrivateKey::from(Ed25519Keypair::from_seed(&[7; 32]));
        let mut russh = keepsh::server::russh_config(&config.server, vec![key]);
        russh.preferred = with_none(russh.preferred);
        // A rejected attempt waits 1 s (against timing a user's existence):
        // time, not logic, and it would bound the fuzzer at one run a second.
        russh.auth_rejection_time = Duration::ZERO;
        // Keepalives would fire while time is paused and a password is
        // checked on its thread, ending the connection at random.
        russh.keepalive_interval = None;
        let launch = Launch {
            host_program: "/nonexistent/keepsh-fuzz-session-host".into(),
            program_open_files: None,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime");
        let shared = {
            let _guard = runtime.enter();
            Arc::new(startup::shared(&config, launch).expect("shared"))
        };
        Server {
            runtime,
            config: Arc::new(russh),
            shared,
            startups: Startups::new(64, 64),
        }
    })
}

/// An argon2id hash of [`PASSWORD`] at the lowest cost argon2 allows
/// (8 KiB, one pass): a login costs microseconds, not tens of ms.
fn cheapest_hash() -> String {
    use argon2::password_hash::PasswordHasher;
    let params = argon2::Params::new(8, 1, 1, None).expect("params");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(PASSWORD.as_bytes())
        .expect("hash")
        .to_string()
}

/// keepsh's algorithms with `none` appended as key exchange, cipher and
/// MAC, for the plaintext modes.
fn with_none(mut preferred: russh::Preferred) -> russh::Preferred {
    preferred.kex.to_mut().push(russh::kex::NONE);
    preferred.cipher.to_mut().push(russh::cipher::NONE);
    preferred.mac.to_mut().push(russh::mac::NONE);
    preferred
}

/// How far the harness takes the client before the fuzzer's bytes.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Raw,
    Plaintext,
    LoggedIn,
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mode = [Mode::Raw, Mode::Plaintext, Mode::LoggedIn][usize::from(mode % 3)];
    let server = server();
    let baseline = server.runtime.metrics().num_alive_tasks();
    // A connection that does not end once its input has, or a task of it
    // that outlives it, waits for ever: libFuzzer's `-timeout` reports it
    // (a timer here would not do: paused time jumps to it while a
    // password is checked on its thread).
    server.runtime.block_on(async {
        connection(server, mode, rest.to_vec()).await;
        // What the connection spawned (its channels' tasks) ends with it.
        while tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
            > baseline
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
});

/// Runs one connection: the client sends what `mode` prescribes and the
/// fuzzer's bytes, waits until the server has nothing left to do (time is
/// paused: a sleep ends only once every task waits), then closes its side;
/// returns once the server has ended the connection.
async fn connection(server: &Server, mode: Mode, rest: Vec<u8>) {
    let (client, stream) = tokio::io::duplex(64 * 1024);
    let (from_server, mut to_server) = tokio::io::split(client);
    let (answered, authentication) = oneshot::channel();
    let reader = tokio::spawn(read_answers(from_server, mode, answered));
    let writer = tokio::spawn(async move {
        let input = match mode {
            Mode::Raw => rest,
            Mode::Plaintext => [plaintext_prefix(), packets(&rest)].concat(),
            Mode::LoggedIn => {
                let login = [plaintext_prefix(), login()].concat();
                let _ = to_server.write_all(&login).await;
                // The password is checked on a thread of its own, which
                // paused time does not wait for: wait for the answer.
                let _ = authentication.await;
                packets(&rest)
            }
        };
        let _ = to_server.write_all(&input).await;
        tokio::time::sleep(SETTLE).await;
        let _ = to_server.shutdown().await;
    });
    let permit = server.startups.admit([127, 0, 0, 1].into()).await;
    let (progress, _) = watch::channel(AuthProgress::default());
    let handle = Arc::new(OnceLock::new());
    let handler = Connection::new(
        Arc::clone(&server.shared),
        None,
        Arc::clone(&handle),
        progress,
        permit,
    );
    let config = Arc::clone(&server.config);
    if let Ok(running) = russh::server::run_stream(config, stream, handler).await {
        let _ = handle.set(running.handle());
        let _ = running.await;
    }
    let _ = writer.await;
    let _ = reader.await;
}

/// Reads the server's output to its end. In the plaintext modes it reads
/// it as packets and says when authentication was answered (success or
/// failure), or that it never will be.
async fn read_answers(
    mut from_server: impl AsyncRead + Unpin,
    mode: Mode,
    answered: oneshot::Sender<()>,
) {
    let mut output = Vec::new();
    let mut answered = Some(answered);
    let mut buffer = vec![0; 64 * 1024];
    while let Ok(n) = from_server.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        if mode == Mode::Raw || answered.is_none() {
            continue;
        }
        output.extend_from_slice(&buffer[..n]);
        if messages(&output).any(|kind| kind == USERAUTH_FAILURE || kind == USERAUTH_SUCCESS)
            && let Some(answered) = answered.take()
        {
            let _ = answered.send(());
        }
    }
}

/// RFC 4252 §5.1.
const USERAUTH_FAILURE: u8 = 51;
/// RFC 4252 §5.1.
const USERAUTH_SUCCESS: u8 = 52;

/// The message numbers of the complete unencrypted packets in `output`
/// (the server's identification line first).
fn messages(output: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let start = output
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(output.len(), |end| end + 2);
    let mut rest = &output[start..];
    std::iter::from_fn(move || {
        let [a, b, c, d, _padding, kind, ..] = *rest else {
            return None;
        };
        let length = u32::from_be_bytes([a, b, c, d]) as usize;
        let packet = rest.get(..4 + length)?;
        rest = &rest[packet.len()..];
        Some(kind)
    })
}

/// The client's identification line, its KEXINIT offering only `none`,
/// and NEWKEYS (RFC 4253 §4.2, §7.1, §7.3).
fn plaintext_prefix() -> Vec<u8> {
    let mut kexinit = vec![20];
    kexinit.extend_from_slice(&[0; 16]);
    for list in [
        "none",
        "ssh-ed25519",
        "none",
        "none",
        "none",
        "none",
        "none",
        "none",
        "",
        "",
    ] {
        string(&mut kexinit, list.as_bytes());
    }
    kexinit.extend_from_slice(&[0, 0, 0, 0, 0]);
    [
        b"SSH-2.0-keepsh-fuzz\r\n".to_vec(),
        packet(&kexinit),
        packet(&[21]),
    ]
    .concat()
}

/// `ssh-userauth`, then a password login as `fuzz` (RFC 4252 §8).
fn login() -> Vec<u8> {
    let mut service = vec![5];
    string(&mut service, b"ssh-userauth");
    let mut password = vec![50];
    string(&mut password, b"fuzz");
    string(&mut password, b"ssh-connection");
    string(&mut password, b"password");
    password.push(0);
    string(&mut password, PASSWORD.as_bytes());
    [packet(&service), packet(&password)].concat()
}

/// Cuts `rest` into payloads (a 2-byte big-endian length, then up to that
/// many bytes) and frames each as a packet.
fn packets(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let [high, low, tail @ ..] = rest {
        let length = usize::from(u16::from_be_bytes([*high, *low])).min(tail.len());
        let (payload, next) = tail.split_at(length);
        out.extend(packet(payload));
        rest = next;
    }
    out
}

/// One unencrypted binary packet (RFC 4253 §6): length, padding length,
/// payload, 4 to 11 bytes of padding to a multiple of 8, no MAC.
fn packet(payload: &[u8]) -> Vec<u8> {
    let padding = 4 + (8 - (payload.len() + 9) % 8) % 8;
    let length = (1 + payload.len() + padding) as u32;
    let mut out = length.to_be_bytes().to_vec();
    out.push(padding as u8);
    out.extend_from_slice(payload);
    out.extend(std::iter::repeat_n(0, padding));
    out
}

/// An SSH `string` (RFC 4251 §5): a 4-byte length, then the bytes.
fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}
