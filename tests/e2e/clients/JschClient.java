// JSch 0.1.55 (Debian's libjsch-java), the SSH library of JuiceSSH and many
// Android apps of its era, against a keepsh test server.
//
// Usage: java -cp jsch.jar:DIR JschClient PORT USER PASSWORD
//
// Prints one line per fact the Rust test checks and exits 0, or prints the
// exception and exits 1. Every wait has a deadline.

import com.jcraft.jsch.ChannelExec;
import com.jcraft.jsch.JSch;
import com.jcraft.jsch.Session;
import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;

public class JschClient {
    static final long DEADLINE_MS = 20_000;

    public static void main(String[] args) {
        try {
            run(Integer.parseInt(args[0]), args[1], args[2]);
        } catch (Exception e) {
            System.out.println("error: " + e);
            System.exit(1);
        }
    }

    static Session connect(int port, String user, String password) throws Exception {
        Session session = new JSch().getSession(user, "127.0.0.1", port);
        session.setPassword(password);
        session.setConfig("StrictHostKeyChecking", "no");
        session.setConfig("PreferredAuthentications", "password");
        session.connect((int) DEADLINE_MS);
        return session;
    }

    static void run(int port, String user, String password) throws Exception {
        Session session = connect(port, user, password);
        System.out.println("password=ok");
        System.out.println("hostkey=" + session.getHostKey().getType());
        System.out.println("cipher=" + session.getConfig("cipher.s2c"));
        exec(session, "version");
        exec(session, "attach no-such-session");
        // A PTY channel attached to session "phone": typed input echoes,
        // and a window-change reaches the program.
        Attached shell = attach(session, "phone");
        OutputStream keys = shell.channel().getOutputStream();
        InputStream screen = shell.screen();
        keys.write("echo typed-$((6*7))\n".getBytes(StandardCharsets.UTF_8));
        keys.flush();
        readUntil(screen, "typed-42");
        System.out.println("echo=ok");
        shell.channel().setPtySize(100, 30, 0, 0);
        keys.write("stty size\n".getBytes(StandardCharsets.UTF_8));
        keys.flush();
        readUntil(screen, "30 100");
        System.out.println("resize=ok");
        // Drop the connection without a goodbye, then reattach.
        session.disconnect();
        Session again = connect(port, user, password);
        Attached back = attach(again, "phone");
        readUntil(back.screen(), "30 100");
        System.out.println("reattach=ok");
        again.disconnect();
    }

    // `attach NAME` with a PTY (JSch's exec channel with setPty). JSch
    // drops what arrives before getInputStream(), so it is taken first.
    record Attached(ChannelExec channel, InputStream screen) {}

    static Attached attach(Session session, String name) throws Exception {
        ChannelExec exec = (ChannelExec) session.openChannel("exec");
        exec.setPty(true);
        exec.setPtyType("xterm", 80, 24, 0, 0);
        exec.setCommand("attach " + name);
        InputStream screen = exec.getInputStream();
        exec.connect((int) DEADLINE_MS);
        return new Attached(exec, screen);
    }

    static void exec(Session session, String command) throws Exception {
        ChannelExec channel = (ChannelExec) session.openChannel("exec");
        channel.setCommand(command);
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        channel.setErrStream(err);
        InputStream out = channel.getInputStream();
        channel.connect((int) DEADLINE_MS);
        ByteArrayOutputStream got = new ByteArrayOutputStream();
        long start = System.currentTimeMillis();
        byte[] buf = new byte[8192];
        while (true) {
            while (out.available() > 0) {
                int n = out.read(buf);
                if (n < 0) break;
                got.write(buf, 0, n);
            }
            if (channel.isClosed() && out.available() == 0) break;
            if (System.currentTimeMillis() - start > DEADLINE_MS) {
                throw new RuntimeException("no end of '" + command + "'");
            }
            Thread.sleep(10);
        }
        System.out.println("exec " + command.split(" ")[0] + " status=" + channel.getExitStatus()
            + " out=" + got.toString(StandardCharsets.UTF_8).trim().replace('\n', '|')
            + " err=" + err.toString(StandardCharsets.UTF_8).trim().replace('\n', '|'));
        channel.disconnect();
    }

    static void readUntil(InputStream in, String needle) throws Exception {
        StringBuilder seen = new StringBuilder();
        long start = System.currentTimeMillis();
        byte[] buf = new byte[8192];
        while (seen.indexOf(needle) < 0) {
            if (System.currentTimeMillis() - start > DEADLINE_MS) {
                throw new RuntimeException("no '" + needle + "' in: " + seen);
            }
            if (in.available() > 0) {
                int n = in.read(buf);
                if (n > 0) seen.append(new String(buf, 0, n, StandardCharsets.UTF_8));
            } else {
                Thread.sleep(10);
            }
        }
    }
}
