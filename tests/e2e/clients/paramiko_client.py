"""paramiko against a keepsh test server: what a Python SSH library does.

Usage: paramiko_client.py PORT USER KEY[,KEY...] SCENARIO [ARGS...]

Each scenario prints one line per fact the Rust test checks and exits 0,
or prints the exception and exits 1. Every wait has a deadline.
"""

import json
import sys
import time

import paramiko

DEADLINE = 20.0


def connect(port, user, keys):
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(
        "127.0.0.1",
        port=port,
        username=user,
        key_filename=keys,
        look_for_keys=False,
        allow_agent=False,
        timeout=DEADLINE,
        auth_timeout=DEADLINE,
        banner_timeout=DEADLINE,
    )
    return client


def run(transport, command):
    """Runs `command` on a new channel; returns (status, stdout)."""
    channel = transport.open_session(timeout=DEADLINE)
    channel.settimeout(DEADLINE)
    channel.exec_command(command)
    out = b""
    while True:
        chunk = channel.recv(65536)
        if not chunk:
            break
        out += chunk
    status = channel.recv_exit_status()
    channel.close()
    return status, out.decode()


def read_until(channel, needle, deadline=DEADLINE):
    """Reads `channel` until `needle` appears; returns the seconds it took."""
    started = time.monotonic()
    seen = b""
    while needle.encode() not in seen:
        if time.monotonic() - started > deadline:
            raise TimeoutError(f"no {needle!r} within {deadline} s; got {seen[-200:]!r}")
        try:
            seen += channel.recv(65536)
        except TimeoutError:
            pass
    return time.monotonic() - started


def attach(transport, name):
    channel = transport.open_session(timeout=DEADLINE)
    channel.settimeout(0.2)
    channel.get_pty(term="xterm", width=80, height=24)
    channel.exec_command(f"attach {name}")
    return channel


def scenario_version(client, _args):
    status, out = run(client.get_transport(), "version")
    print(f"status={status} {out.strip()}")


def scenario_exec(client, args):
    """Runs each argument as a command, one channel each, in order."""
    transport = client.get_transport()
    for command in args:
        status, out = run(transport, command)
        print(f"status={status} {out.strip()}")


def scenario_sequential(client, args):
    """N commands, one after the other, each on a new channel."""
    transport = client.get_transport()
    ok = 0
    for _ in range(int(args[0])):
        status, out = run(transport, "version")
        if status == 0 and out.startswith("keepsh "):
            ok += 1
    print(f"ok={ok}")


def scenario_concurrent(client, _args):
    """Ten channels open at once; the eleventh is refused; the ten work."""
    transport = client.get_transport()
    channels = [transport.open_session(timeout=DEADLINE) for _ in range(10)]
    try:
        transport.open_session(timeout=DEADLINE)
        print("eleventh=opened")
    except paramiko.ChannelException as e:
        print(f"eleventh=refused code={e.code}")
    first = channels[0]
    first.settimeout(DEADLINE)
    first.exec_command("version")
    out = first.makefile().read().decode()
    print(f"first={out.strip()}")
    for channel in channels:
        channel.close()
    status, out = run(transport, "version")
    print(f"after-close status={status}")


def scenario_stalled(client, _args):
    """Channel 'noisy' is never read (its window fills); 'quiet' must echo."""
    transport = client.get_transport()
    noisy = attach(transport, "noisy")
    # Wait until the server has filled the window granted to 'noisy'
    # (paramiko extends it only as the application reads).
    started = time.monotonic()
    while len(noisy.in_buffer) < noisy.in_window_size - 65536:
        if time.monotonic() - started > DEADLINE:
            raise TimeoutError(f"noisy got only {len(noisy.in_buffer)} bytes")
        time.sleep(0.02)
    print(f"noisy-buffered={len(noisy.in_buffer)}")
    quiet = attach(transport, "quiet")
    worst = 0.0
    for i in range(5):
        quiet.send(f"echo tick-$(({i}+100))\n")
        worst = max(worst, read_until(quiet, f"tick-{i + 100}"))
    print(f"quiet-worst={worst:.3f}")


def raw_open(transport, window_size, max_packet_size):
    """Opens a session channel with exactly these values, which paramiko
    would otherwise raise to its minimums (2**15, 2**12)."""
    transport._sanitize_window_size = lambda w: w
    transport._sanitize_packet_size = lambda p: p
    try:
        return transport.open_channel(
            "session",
            window_size=window_size,
            max_packet_size=max_packet_size,
            timeout=DEADLINE,
        )
    finally:
        del transport._sanitize_window_size
        del transport._sanitize_packet_size


def scenario_zero_window(client, _args):
    """A channel opened with a window of 0 is attached to a noisy session;
    another channel of the same connection must still echo."""
    transport = client.get_transport()
    frozen = raw_open(transport, 0, 32768)
    frozen.get_pty(term="xterm", width=80, height=24)
    frozen.exec_command("attach noisy")
    quiet = attach(transport, "quiet")
    worst = 0.0
    for i in range(5):
        quiet.send(f"echo tock-$(({i}+200))\n")
        worst = max(worst, read_until(quiet, f"tock-{i + 200}"))
    print(f"quiet-worst={worst:.3f} frozen-got={len(frozen.in_buffer)}")


def scenario_zero_packet(client, _args):
    """A channel open with a maximum packet size of 0 is refused; the
    connection carries on."""
    transport = client.get_transport()
    try:
        raw_open(transport, 2**21, 0)
        print("zero-packet=opened")
    except paramiko.ChannelException as e:
        print(f"zero-packet=refused code={e.code}")
    status, out = run(transport, "version")
    print(f"after status={status} {out.strip()}")


def scenario_echo_during(client, args):
    """Types on an attached channel while another channel runs `args`;
    prints the slowest echo seen while that command ran."""
    transport = client.get_transport()
    shell = attach(transport, "typing")
    other = transport.open_session(timeout=DEADLINE)
    other.settimeout(DEADLINE)
    other.exec_command(" ".join(args))
    worst = 0.0
    i = 0
    started = time.monotonic()
    while not other.exit_status_ready():
        i += 1
        shell.send(f"echo e-$(({i}+100000))\n")
        worst = max(worst, read_until(shell, f"e-{i + 100000}"))
        if time.monotonic() - started > DEADLINE:
            raise RuntimeError("the command never finished")
    print(f"echoes={i} worst={worst:.3f} status={other.recv_exit_status()}")


def send_signal(channel, name):
    """Sends a `signal` request (RFC 4254 §6.9; paramiko has no call for
    it) with want_reply set; returns "success" or "failure"."""
    m = paramiko.Message()
    m.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
    m.add_int(channel.remote_chanid)
    m.add_string("signal")
    m.add_boolean(True)
    m.add_string(name)
    channel._event_pending()
    channel.transport._send_user_message(m)
    if not channel.event.wait(DEADLINE):
        raise TimeoutError(f"no reply to signal {name} within {DEADLINE} s")
    # paramiko closes a channel whose request failed.
    return "success" if channel.event_ready else "failure"


def scenario_signal(client, _args):
    """Signals to an attached shell's foreground job, to a read-only
    watcher, to a channel that runs nothing yet, one outside RFC 4254
    §6.10, and each catchable one to a program that traps them."""
    transport = client.get_transport()
    shell = attach(transport, "target")
    # The marker is computed, so the echo of the typed line cannot match it.
    shell.send("sh -c 'echo sleeping-$((1+1)); exec sleep 1000'\n")
    read_until(shell, "sleeping-2")
    print(f"int={send_signal(shell, 'INT')}")
    shell.send("echo back-$((2+3))\n")
    waited = read_until(shell, "back-5")
    print(f"shell-back={waited:.3f}")
    shell.send("sh -c 'echo sleeping-$((3+4)); exec sleep 1000'\n")
    read_until(shell, "sleeping-7")
    print(f"kill={send_signal(shell, 'KILL')}")
    shell.send("echo back-$((5+6))\n")
    read_until(shell, "back-11")
    print(f"unknown={send_signal(shell, 'NOSUCH')}")
    watcher = transport.open_session(timeout=DEADLINE)
    watcher.get_pty(term="xterm", width=80, height=24)
    watcher.exec_command("attach --read-only target")
    print(f"read-only={send_signal(watcher, 'INT')}")
    idle = transport.open_session(timeout=DEADLINE)
    print(f"unstarted={send_signal(idle, 'INT')}")
    shell2 = attach(transport, "trapper")
    read_until(shell2, "armed")
    for name in ["INT", "QUIT", "HUP", "USR1", "USR2"]:
        print(f"trapped-{name.lower()}={send_signal(shell2, name)}")
        read_until(shell2, f"got-{name}")
    print(f"term={send_signal(shell2, 'TERM')}")
    started = time.monotonic()
    while not shell2.exit_status_ready():
        if time.monotonic() - started > DEADLINE:
            raise TimeoutError("TERM did not end the session")
        time.sleep(0.02)
    print("trapper-ended=yes")


def scenario_sftp(client, args):
    """Puts `args[0]` to `args[1]` and gets it back over SFTP while a shell
    channel of the same connection echoes."""
    import hashlib
    import os
    local, remote = args
    transport = client.get_transport()
    shell = attach(transport, "beside-sftp")
    sftp = paramiko.SFTPClient.from_transport(transport)
    sftp.get_channel().settimeout(DEADLINE)
    sftp.put(local, remote)
    back = local + ".back"
    sftp.get(remote, back)
    sftp.close()
    digest = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
    print(f"same={digest(local) == digest(back)} size={os.path.getsize(back)}")
    shell.send("echo o$((0))k\n")
    read_until(shell, "o0k")
    print("echo=ok")


def scenario_shell_twice(client, _args):
    """What a phone app does: a PTY and a shell request, dropped, then
    again; with on_shell = "attach" the second shell is the first."""
    transport = client.get_transport()
    shell = client.invoke_shell(term="xterm", width=80, height=24)
    shell.settimeout(0.2)
    shell.send(b"echo marker-$((30+3))\n")
    read_until(shell, "marker-33")
    shell.close()
    started = time.monotonic()
    while '"state":"orphaned"' not in run(transport, "list --json")[1].replace(" ", ""):
        if time.monotonic() - started > DEADLINE:
            raise TimeoutError("the session was never orphaned")
        time.sleep(0.05)
    again = client.invoke_shell(term="xterm", width=80, height=24)
    again.settimeout(0.2)
    read_until(again, "marker-33")
    again.send(b"echo again-$((40+4))\n")
    read_until(again, "again-44")
    print("reattached=ok")
    print(f"sessions={run(transport, 'list --json')[1].count(chr(34) + 'id' + chr(34))}")


def session_entry(transport, name):
    """Session `name`'s `list --json` entry, or None."""
    status, out = run(transport, "list --json")
    if status != 0:
        raise RuntimeError(f"list --json: status {status}")
    return next((s for s in json.loads(out) if s["name"] == name), None)


def scenario_drive(client, args):
    """On one connection, while session NAME (a shell) runs: `wait --for`
    and `tail -f` on two channels, `send` on a third; then `tail -n` and
    `list --json`."""
    name = args[0]
    transport = client.get_transport()
    waiter = transport.open_session(timeout=DEADLINE)
    waiter.settimeout(DEADLINE)
    waiter.exec_command(f"wait {name} --for 'paramiko-[0-9]+' --timeout 20s")
    follower = transport.open_session(timeout=DEADLINE)
    follower.settimeout(0.2)
    follower.exec_command(f"tail -f -n 1 {name}")
    started = time.monotonic()
    while (session_entry(transport, name) or {}).get("watchers") != 2:
        if time.monotonic() - started > DEADLINE:
            raise TimeoutError("the waiter and the follower never both listed")
        time.sleep(0.05)
    print(f"clients={session_entry(transport, name)['clients']}")
    status, _ = run(transport, f"send {name} --enter echo paramiko-$((6*7))")
    print(f"send={status}")
    read_until(follower, "paramiko-42")
    print(f"wait={waiter.recv_exit_status()}")
    status, out = run(transport, f"tail -n 2 {name}")
    print(f"tail={status} {'|'.join(out.splitlines())}")
    follower.close()
    # `list` is brought up to date within 0.3 s of output.
    started = time.monotonic()
    while (entry := session_entry(transport, name))["current_command"] is None:
        if time.monotonic() - started > DEADLINE:
            break
        time.sleep(0.05)
    print(f"current_command={entry['current_command']} cwd={entry['cwd']}")


def main():
    port, user, keys, scenario = sys.argv[1:5]
    client = connect(int(port), user, keys.split(","))
    try:
        globals()[f"scenario_{scenario}"](client, sys.argv[5:])
    finally:
        client.close()


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # the test prints it
        print(f"error: {type(e).__name__}: {e}")
        sys.exit(1)
