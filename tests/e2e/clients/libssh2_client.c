/* libssh2 1.10 (Debian's libssh2-1-dev), the SSH library of many iOS apps
 * and of Blink's legacy ssh2, against a keepsh test server.
 *
 * Usage: libssh2_client PORT USER KEY PASSWORD SCENARIO
 *   all       key login, password login, exec (stdout, stderr, exit status),
 *             PTY attach to session "phone" with typed echo, window-change,
 *             drop and reattach
 *   sha1-mac  offer only hmac-sha1: the key exchange must fail
 *
 * Prints one line per fact the Rust test checks and exits 0, or prints what
 * failed and exits 1. Every wait has a deadline (a socket timeout and a
 * bounded number of polls).
 */
#include <arpa/inet.h>
#include <libssh2.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DEADLINE_S 20

static void fail(const char *what, LIBSSH2_SESSION *session) {
    char *message = NULL;
    if (session)
        libssh2_session_last_error(session, &message, NULL, 0);
    printf("error: %s: %s\n", what, message ? message : "");
    exit(1);
}

static int connect_to(int port) {
    int sock = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {0};
    struct timeval timeout = {DEADLINE_S, 0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    if (connect(sock, (struct sockaddr *)&addr, sizeof addr) != 0) {
        printf("error: connect\n");
        exit(1);
    }
    return sock;
}

static LIBSSH2_SESSION *handshake(int sock, const char *mac) {
    LIBSSH2_SESSION *session = libssh2_session_init();
    libssh2_session_set_timeout(session, DEADLINE_S * 1000);
    if (mac) {
        libssh2_session_method_pref(session, LIBSSH2_METHOD_MAC_CS, mac);
        libssh2_session_method_pref(session, LIBSSH2_METHOD_MAC_SC, mac);
        /* A MAC matters only with a cipher that is not AEAD. */
        libssh2_session_method_pref(session, LIBSSH2_METHOD_CRYPT_CS, "aes128-ctr");
        libssh2_session_method_pref(session, LIBSSH2_METHOD_CRYPT_SC, "aes128-ctr");
    }
    if (libssh2_session_handshake(session, sock) != 0)
        return NULL;
    return session;
}

/* Runs `command` on a new channel; prints its stdout, stderr and status. */
static void exec(LIBSSH2_SESSION *session, const char *command) {
    char out[4096] = {0}, err[4096] = {0};
    size_t n_out = 0, n_err = 0;
    LIBSSH2_CHANNEL *channel = libssh2_channel_open_session(session);
    if (!channel)
        fail("open channel", session);
    if (libssh2_channel_exec(channel, command) != 0)
        fail("exec", session);
    for (;;) {
        ssize_t n = libssh2_channel_read(channel, out + n_out, sizeof out - 1 - n_out);
        ssize_t e = libssh2_channel_read_stderr(channel, err + n_err, sizeof err - 1 - n_err);
        if (n > 0)
            n_out += n;
        if (e > 0)
            n_err += e;
        if (n < 0 || e < 0)
            fail("read", session);
        if (n == 0 && e == 0 && libssh2_channel_eof(channel))
            break;
    }
    libssh2_channel_close(channel);
    libssh2_channel_wait_closed(channel);
    out[strcspn(out, "\n")] = 0;
    err[strcspn(err, "\n")] = 0;
    printf("exec %.*s status=%d out=%s err=%s\n", (int)strcspn(command, " "), command,
           libssh2_channel_get_exit_status(channel), out, err);
    libssh2_channel_free(channel);
}

/* Reads `channel` until `needle` appears, within the deadline. */
static void read_until(LIBSSH2_SESSION *session, LIBSSH2_CHANNEL *channel, const char *needle) {
    static char seen[1 << 16];
    size_t len = 0;
    time_t start = time(NULL);
    seen[0] = 0;
    while (!strstr(seen, needle)) {
        char buf[4096];
        ssize_t n;
        if (time(NULL) - start > DEADLINE_S) {
            printf("error: no '%s' within %d s\n", needle, DEADLINE_S);
            exit(1);
        }
        n = libssh2_channel_read(channel, buf, sizeof buf);
        if (n == LIBSSH2_ERROR_TIMEOUT || n == LIBSSH2_ERROR_EAGAIN)
            continue;
        if (n < 0)
            fail("read", session);
        if (n == 0 && libssh2_channel_eof(channel)) {
            printf("error: EOF before '%s'\n", needle);
            exit(1);
        }
        if (len + n >= sizeof seen) {
            /* Keep the tail: the needle may straddle the cut. */
            memmove(seen, seen + len - 256, 256);
            len = 256;
        }
        memcpy(seen + len, buf, n);
        len += n;
        seen[len] = 0;
    }
}

static LIBSSH2_CHANNEL *attach(LIBSSH2_SESSION *session, const char *name) {
    char command[128];
    LIBSSH2_CHANNEL *channel = libssh2_channel_open_session(session);
    if (!channel)
        fail("open channel", session);
    if (libssh2_channel_request_pty_ex(channel, "xterm", 5, NULL, 0, 80, 24, 0, 0) != 0)
        fail("pty-req", session);
    snprintf(command, sizeof command, "attach %s", name);
    if (libssh2_channel_exec(channel, command) != 0)
        fail("attach", session);
    return channel;
}

static void type(LIBSSH2_SESSION *session, LIBSSH2_CHANNEL *channel, const char *keys) {
    if (libssh2_channel_write(channel, keys, strlen(keys)) != (ssize_t)strlen(keys))
        fail("write", session);
}

int main(int argc, char **argv) {
    int port, sock;
    const char *user, *key, *password, *scenario;
    char public_key[4096];
    LIBSSH2_SESSION *session;
    LIBSSH2_CHANNEL *shell;
    if (argc != 6) {
        printf("error: usage\n");
        return 1;
    }
    port = atoi(argv[1]);
    user = argv[2];
    key = argv[3];
    password = argv[4];
    scenario = argv[5];
    libssh2_init(0);
    printf("version=%s\n", libssh2_version(0));

    if (strcmp(scenario, "sha1-mac") == 0) {
        sock = connect_to(port);
        session = handshake(sock, "hmac-sha1");
        printf("sha1-mac=%s\n", session ? "connected" : "refused");
        return 0;
    }

    /* Key login. */
    sock = connect_to(port);
    session = handshake(sock, NULL);
    if (!session)
        fail("handshake", NULL);
    snprintf(public_key, sizeof public_key, "%s.pub", key);
    if (libssh2_userauth_publickey_fromfile(session, user, public_key, key, NULL) != 0)
        fail("key login", session);
    printf("key=ok\n");
    exec(session, "version");
    exec(session, "attach no-such-session");
    libssh2_session_disconnect(session, "bye");
    libssh2_session_free(session);
    close(sock);

    /* Password login, PTY attach, typed echo, window-change. */
    sock = connect_to(port);
    session = handshake(sock, NULL);
    if (!session)
        fail("handshake", NULL);
    if (libssh2_userauth_password(session, user, password) != 0)
        fail("password login", session);
    printf("password=ok\n");
    shell = attach(session, "phone");
    type(session, shell, "echo typed-$((6*7))\n");
    read_until(session, shell, "typed-42");
    printf("echo=ok\n");
    if (libssh2_channel_request_pty_size(shell, 100, 30) != 0)
        fail("window-change", session);
    type(session, shell, "stty size\n");
    read_until(session, shell, "30 100");
    printf("resize=ok\n");
    /* Drop: close the socket without a goodbye. */
    close(sock);
    libssh2_session_free(session);

    /* Reattach: the screen comes back. */
    sock = connect_to(port);
    session = handshake(sock, NULL);
    if (!session || libssh2_userauth_password(session, user, password) != 0)
        fail("login again", session);
    shell = attach(session, "phone");
    read_until(session, shell, "30 100");
    printf("reattach=ok\n");
    libssh2_session_disconnect(session, "bye");
    libssh2_session_free(session);
    close(sock);
    libssh2_exit();
    return 0;
}
