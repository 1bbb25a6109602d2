#!/usr/bin/env python3
"""Writes the `ssh` fuzz target's seeds into fuzz/seeds/ssh/ (see
fuzz_targets/ssh.rs for the input's shape: a mode byte, then raw client
bytes or 2-byte-length-prefixed SSH message payloads). The raw seeds are
what real clients sent first (OpenSSH 9.2p1 and paramiko, captured by a
listener that never answered), kept as files: hello-openssh, hello-paramiko; kex-curve25519 is made
from the first.

Usage: python3 fuzz/seeds/ssh.py
"""
import os
import struct

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ssh")

RAW, PLAINTEXT, LOGGED_IN = 0, 1, 2


def u32(n):
    return struct.pack(">I", n)


def string(b):
    if isinstance(b, str):
        b = b.encode()
    return u32(len(b)) + b


def boolean(v):
    return b"\x01" if v else b"\x00"


def seed(name, mode, *messages):
    body = b"".join(struct.pack(">H", len(m)) + m for m in messages)
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(bytes([mode]) + body)


# RFC 4253 §10, RFC 4252, RFC 4254 message numbers.
SERVICE_REQUEST, USERAUTH_REQUEST, GLOBAL_REQUEST = 5, 50, 80
CHANNEL_OPEN, WINDOW_ADJUST, DATA, EXTENDED_DATA = 90, 93, 94, 95
EOF, CLOSE, REQUEST = 96, 97, 98
IGNORE, DEBUG, UNIMPLEMENTED = 2, 4, 3

# The server's number for the first channel a connection opens (russh
# counts from 1 and takes the next: 2, 3, 4...), which requests name.
FIRST = 2

# An Ed25519 public key blob (any 32 bytes parse).
ED25519 = string("ssh-ed25519") + string(bytes(range(32)))


def userauth(user, method, *rest):
    return bytes([USERAUTH_REQUEST]) + string(user) + string("ssh-connection") + string(method) + b"".join(rest)


def open_session(sender=0):
    return bytes([CHANNEL_OPEN]) + string("session") + u32(sender) + u32(2 * 1024 * 1024) + u32(32768)


def request(channel, kind, want, *rest):
    return bytes([REQUEST]) + u32(channel) + string(kind) + boolean(want) + b"".join(rest)


def pty_req(channel, cols=80, rows=24, term="xterm-256color", modes=b"\x00"):
    return request(channel, "pty-req", True, string(term), u32(cols), u32(rows), u32(0), u32(0), string(modes))


def exec_(channel, command):
    return request(channel, "exec", True, string(command))


def data(channel, b):
    return bytes([DATA]) + u32(channel) + string(b)


def packet(payload):
    """One unencrypted binary packet (RFC 4253 §6), as the target frames it."""
    padding = 4 + (8 - (len(payload) + 9) % 8) % 8
    return u32(1 + len(payload) + padding) + bytes([padding]) + payload + bytes(padding)


def main():
    os.makedirs(HERE, exist_ok=True)
    # A real client's hello, then its key exchange (curve25519: any 32
    # bytes), NEWKEYS, and bytes that are not a valid encrypted packet.
    with open(os.path.join(HERE, "hello-openssh"), "rb") as f:
        hello = f.read()
    with open(os.path.join(HERE, "kex-curve25519"), "wb") as f:
        f.write(hello + packet(bytes([30]) + string(bytes([9]) * 32)) + packet(bytes([21])) + bytes(64))
    service = bytes([SERVICE_REQUEST]) + string("ssh-userauth")
    # Before authentication.
    seed("auth-methods", PLAINTEXT, service,
         userauth("fuzz", "none"),
         userauth("fuzz", "password", boolean(False), string("wrong")),
         userauth("nobody", "password", boolean(False), string("fuzz")),
         userauth("fuzz", "publickey", boolean(False), string("ssh-ed25519"), string(ED25519)),
         userauth("fuzz", "publickey", boolean(True), string("ssh-ed25519"), string(ED25519),
                  string(string("ssh-ed25519") + string(bytes(64)))),
         userauth("fuzz", "keyboard-interactive", string(""), string("")),
         userauth("fuzz+work", "password", boolean(False), string("fuzz")),
         userauth("fuzz", "password", boolean(True), string("old"), string("new")))
    seed("before-service", PLAINTEXT,
         bytes([SERVICE_REQUEST]) + string("ssh-connection"),
         open_session(),
         bytes([IGNORE]) + string("x"),
         bytes([DEBUG]) + boolean(True) + string("debug") + string("en"),
         bytes([UNIMPLEMENTED]) + u32(7))
    # Logged in: sessions, commands, requests.
    seed("shell", LOGGED_IN, open_session(), pty_req(FIRST),
         request(FIRST, "env", False, string("LANG"), string("C.UTF-8")),
         request(FIRST, "shell", True),
         request(FIRST, "window-change", False, u32(120), u32(40), u32(0), u32(0)),
         data(FIRST, b"echo hi\r"),
         bytes([WINDOW_ADJUST]) + u32(FIRST) + u32(65536),
         bytes([EOF]) + u32(FIRST), bytes([CLOSE]) + u32(FIRST))
    for name, command in [
        ("exec-list", "list --json"),
        ("exec-attach", "attach -d work"),
        ("exec-new", "new -d build -- make -j2"),
        ("exec-wait", "wait --for 'done [0-9]+' --timeout 5s work"),
        ("exec-tail", "tail -f -n 10 work"),
        ("exec-send", "send --enter work ls -l"),
        ("exec-keys", "send --keys work C-c Up Enter"),
        ("exec-history", "history --raw work"),
        ("exec-kill", "kill work"),
        ("exec-rename", "rename work play"),
        ("exec-scp", "scp -t /tmp"),
        ("exec-bad", "attach 'a b"),
    ]:
        seed(name, LOGGED_IN, open_session(), exec_(FIRST, command), bytes([EOF]) + u32(FIRST))
    seed("channels", LOGGED_IN,
         open_session(0), open_session(1), open_session(2),
         pty_req(FIRST, 200, 60), request(FIRST, "shell", True),
         exec_(FIRST + 1, "list"),
         request(FIRST + 2, "subsystem", True, string("sftp")),
         request(FIRST, "signal", False, string("INT")),
         bytes([EXTENDED_DATA]) + u32(FIRST + 1) + u32(1) + string("err"),
         request(FIRST + 1, "x11-req", True, boolean(False), string("MIT-MAGIC-COOKIE-1"), string("00"), u32(0)),
         request(FIRST + 1, "auth-agent-req@openssh.com", True),
         bytes([CLOSE]) + u32(FIRST + 2), bytes([CLOSE]) + u32(FIRST + 1), bytes([CLOSE]) + u32(FIRST))
    seed("globals", LOGGED_IN,
         bytes([GLOBAL_REQUEST]) + string("keepalive@openssh.com") + boolean(True),
         bytes([GLOBAL_REQUEST]) + string("tcpip-forward") + boolean(True) + string("127.0.0.1") + u32(0),
         bytes([GLOBAL_REQUEST]) + string("no-more-sessions@openssh.com") + boolean(False),
         bytes([CHANNEL_OPEN]) + string("direct-tcpip") + u32(5) + u32(65536) + u32(32768)
         + string("127.0.0.1") + u32(22) + string("127.0.0.1") + u32(5555),
         open_session(6))


if __name__ == "__main__":
    main()
