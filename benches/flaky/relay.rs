//! A flaky link, in userspace (this kernel has no `netem` qdisc): the
//! clients live in a network namespace of their own whose only way out is
//! a TUN device; its packets come out of a second TUN device in the
//! machine's namespace, where the servers listen, and back. Between the
//! two, this relay holds every IP packet for a fixed one-way delay and
//! drops each with a probability, in each direction, and drops every
//! packet to or from a vanished address (a phone out of coverage: its TCP
//! connections never close).
//!
//! Addresses: the servers' side [`SERVER`], the clients' [`CLIENT`] and
//! [`NEW_CLIENT`] (a phone that came back on another network).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The clients' namespace (`ip netns`).
pub const NETNS: &str = "keepsh-flaky";
/// The servers' address on the link.
pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// A client's address.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// The client's address after it moved.
pub const NEW_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
const CLIENT_TUN: &str = "kflaky-c";
const SERVER_TUN: &str = "kflaky-s";

/// What the link does to packets now.
#[derive(Clone, Debug, Default)]
struct Conditions {
    /// One-way delay.
    delay: Duration,
    /// Probability of a drop, per packet and direction.
    loss: f64,
    /// Addresses whose packets all vanish.
    vanished: HashSet<Ipv4Addr>,
}

/// The link; its namespace is removed on drop.
pub struct Link {
    conditions: Arc<Mutex<Conditions>>,
}

/// Runs `ip ARGS`; panics with its stderr on failure.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tun(name: &str) -> tun::Device {
    let mut config = tun::Configuration::default();
    config.tun_name(name).mtu(1500);
    tun::create(&config).unwrap_or_else(|e| panic!("TUN device {name}: {e}"))
}

impl Link {
    /// Makes the namespace and both devices, and starts relaying (no
    /// delay, no loss yet).
    pub fn start() -> Link {
        let _ = Command::new("ip").args(["netns", "del", NETNS]).output();
        ip(&["netns", "add", NETNS]);
        let client = tun(CLIENT_TUN);
        let server = tun(SERVER_TUN);
        // The client's device moves into its namespace; the open file
        // stays this process's end of it.
        ip(&["link", "set", CLIENT_TUN, "netns", NETNS]);
        for address in [CLIENT, NEW_CLIENT] {
            let address = format!("{address}/24");
            ip(&["-n", NETNS, "addr", "add", &address, "dev", CLIENT_TUN]);
        }
        ip(&["-n", NETNS, "link", "set", "lo", "up"]);
        ip(&["-n", NETNS, "link", "set", CLIENT_TUN, "up"]);
        ip(&["addr", "add", &format!("{SERVER}/24"), "dev", SERVER_TUN]);
        ip(&["link", "set", SERVER_TUN, "up"]);
        let conditions = Arc::new(Mutex::new(Conditions::default()));
        let (client_rx, client_tx) = client.split();
        let (server_rx, server_tx) = server.split();
        direction(client_rx, server_tx, &conditions, 1);
        direction(server_rx, client_tx, &conditions, 2);
        Link { conditions }
    }

    /// From now on: `delay` each way, `loss` (0..1) of the packets dropped
    /// each way.
    pub fn set(&self, delay: Duration, loss: f64) {
        let mut conditions = self.conditions.lock().expect("conditions");
        conditions.delay = delay;
        conditions.loss = loss;
    }

    /// Every packet to or from `address` is dropped from now on.
    pub fn vanish(&self, address: Ipv4Addr) {
        let mut conditions = self.conditions.lock().expect("conditions");
        conditions.vanished.insert(address);
    }

    /// `address` is reachable again.
    pub fn restore(&self, address: Ipv4Addr) {
        let mut conditions = self.conditions.lock().expect("conditions");
        conditions.vanished.remove(&address);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", NETNS]).output();
    }
}

/// Packets read from `from`, each on its way to `to` at its due time.
fn direction(
    mut from: impl Read + Send + 'static,
    mut to: impl Write + Send + 'static,
    conditions: &Arc<Mutex<Conditions>>,
    seed: u64,
) {
    let (queue, due): (Sender<(Instant, Vec<u8>)>, Receiver<_>) = channel();
    let conditions = Arc::clone(conditions);
    std::thread::spawn(move || {
        let mut random = Random(0x9e37_79b9_7f4a_7c15 ^ seed);
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = from.read(&mut buf) {
            let packet = &buf[..n];
            let now = conditions.lock().expect("conditions").clone();
            if addresses(packet).is_some_and(|(src, dst)| {
                now.vanished.contains(&src) || now.vanished.contains(&dst)
            }) || random.chance(now.loss)
            {
                continue;
            }
            if queue
                .send((Instant::now() + now.delay, packet.to_vec()))
                .is_err()
            {
                return;
            }
        }
    });
    std::thread::spawn(move || {
        for (at, packet) in due {
            // The delay is the emulated link itself, not a synchronisation.
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            if to.write(&packet).is_err() {
                return;
            }
        }
    });
}

/// An IPv4 packet's source and destination.
fn addresses(packet: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let address =
        |at: usize| Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3]);
    Some((address(12), address(16)))
}

/// xorshift64: the drop decisions (reproducible per run, no dependency).
struct Random(u64);

impl Random {
    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}
