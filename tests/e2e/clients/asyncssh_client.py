"""asyncssh against a keepsh test server: key and password login, exec,
a PTY attached to session "phone" with typed echo, a window-change, a
dropped connection and a reattach.

Usage: asyncssh_client.py PORT USER KEY PASSWORD

Prints one line per fact the Rust test checks and exits 0, or prints the
exception and exits 1. Every wait has a deadline.
"""

import asyncio
import sys

import asyncssh

DEADLINE = 20.0


async def connect(port, user, **auth):
    return await asyncio.wait_for(
        asyncssh.connect(
            "127.0.0.1", port, username=user, known_hosts=None, **auth
        ),
        DEADLINE,
    )


async def read_until(process, needle):
    seen = ""
    while needle not in seen:
        chunk = await asyncio.wait_for(process.stdout.read(4096), DEADLINE)
        if not chunk:
            raise EOFError(f"EOF before {needle!r}; got {seen[-200:]!r}")
        seen += chunk


async def attach(conn, name):
    return await conn.create_process(
        f"attach {name}", term_type="xterm", term_size=(80, 24)
    )


async def main():
    port, user, key, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    async with await connect(port, user, client_keys=[key], password=None) as conn:
        print("key=ok")
        result = await asyncio.wait_for(conn.run("version"), DEADLINE)
        print(f"exec version status={result.exit_status} out={result.stdout.strip()}")
        result = await asyncio.wait_for(conn.run("attach no-such-session"), DEADLINE)
        print(
            f"exec attach status={result.exit_status} out={result.stdout.strip()} "
            f"err={result.stderr.strip()}"
        )
    conn = await connect(port, user, client_keys=None, password=password)
    print("password=ok")
    shell = await attach(conn, "phone")
    shell.stdin.write("echo typed-$((6*7))\n")
    await read_until(shell, "typed-42")
    print("echo=ok")
    shell.change_terminal_size(100, 30)
    shell.stdin.write("stty size\n")
    await read_until(shell, "30 100")
    print("resize=ok")
    # Drop the connection without a goodbye.
    conn._transport.abort()
    async with await connect(port, user, client_keys=None, password=password) as again:
        back = await attach(again, "phone")
        await read_until(back, "30 100")
        print("reattach=ok")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as e:  # the test prints it
        print(f"error: {type(e).__name__}: {e}")
        sys.exit(1)
