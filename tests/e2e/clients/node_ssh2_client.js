// Node's ssh2 (npm; Electron and web SSH apps) against a keepsh test
// server: key and password login, exec (stdout, stderr, exit status), a PTY
// attached to session "phone" with typed echo, a window-change, a dropped
// connection and a reattach.
//
// Usage: node node_ssh2_client.js PORT USER KEY PASSWORD
//
// Prints one line per fact the Rust test checks and exits 0, or prints the
// error and exits 1. Every wait has a deadline.

const fs = require("fs");
const { Client } = require("ssh2");

const DEADLINE_MS = 20000;
const [port, user, keyPath, password] = process.argv.slice(2);

function connect(auth) {
  return new Promise((resolve, reject) => {
    const conn = new Client();
    conn.on("ready", () => resolve(conn)).on("error", reject);
    conn.connect({
      host: "127.0.0.1",
      port: Number(port),
      username: user,
      readyTimeout: DEADLINE_MS,
      ...auth,
    });
  });
}

function exec(conn, command) {
  return new Promise((resolve, reject) => {
    conn.exec(command, (err, stream) => {
      if (err) return reject(err);
      let out = "";
      let errOut = "";
      stream.on("data", (d) => (out += d));
      stream.stderr.on("data", (d) => (errOut += d));
      stream.on("close", (code) => {
        const first = (s) => s.split("\n")[0].trim();
        console.log(
          `exec ${command.split(" ")[0]} status=${code} out=${first(out)} err=${first(errOut)}`
        );
        resolve();
      });
    });
  });
}

function attach(conn, name) {
  return new Promise((resolve, reject) => {
    conn.exec(
      `attach ${name}`,
      { pty: { term: "xterm", cols: 80, rows: 24 } },
      (err, stream) => {
        if (err) return reject(err);
        stream.seen = "";
        stream.on("data", (d) => (stream.seen += d));
        resolve(stream);
      }
    );
  });
}

function readUntil(stream, needle) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = setInterval(() => {
      if (stream.seen.includes(needle)) {
        clearInterval(poll);
        resolve();
      } else if (Date.now() - started > DEADLINE_MS) {
        clearInterval(poll);
        reject(new Error(`no ${needle} within ${DEADLINE_MS} ms`));
      }
    }, 10);
  });
}

async function main() {
  const key = await connect({ privateKey: fs.readFileSync(keyPath) });
  console.log("key=ok");
  await exec(key, "version");
  await exec(key, "attach no-such-session");
  key.end();

  const conn = await connect({ password });
  console.log("password=ok");
  const shell = await attach(conn, "phone");
  shell.write("echo typed-$((6*7))\n");
  await readUntil(shell, "typed-42");
  console.log("echo=ok");
  shell.setWindow(30, 100, 0, 0);
  shell.write("stty size\n");
  await readUntil(shell, "30 100");
  console.log("resize=ok");
  // Drop the connection without a goodbye.
  conn._sock.destroy();

  const again = await connect({ password });
  const back = await attach(again, "phone");
  await readUntil(back, "30 100");
  console.log("reattach=ok");
  again.end();
}

main().then(
  () => process.exit(0),
  (e) => {
    console.log(`error: ${e}`);
    process.exit(1);
  }
);
