/* libssh 0.10 (Debian's libssh-dev; Blink Shell is built on libssh),
 * against a keepsh test server: key login, password login, exec (stdout,
 * stderr, exit status), a PTY attached to session "phone" with typed echo,
 * a window-change, a dropped connection and a reattach.
 *
 * Usage: libssh_client PORT USER KEY PASSWORD
 *
 * Prints one line per fact the Rust test checks and exits 0, or prints what
 * failed and exits 1. Every wait has a deadline.
 */
#include <libssh/libssh.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEADLINE_S 20

static void fail(const char *what, ssh_session session) {
    printf("error: %s: %s\n", what, session ? ssh_get_error(session) : "");
    exit(1);
}

static ssh_session connect_to(int port, const char *user) {
    ssh_session session = ssh_new();
    long timeout = DEADLINE_S;
    int no = 0;
    ssh_options_set(session, SSH_OPTIONS_HOST, "127.0.0.1");
    ssh_options_set(session, SSH_OPTIONS_PORT, &port);
    ssh_options_set(session, SSH_OPTIONS_USER, user);
    ssh_options_set(session, SSH_OPTIONS_TIMEOUT, &timeout);
    ssh_options_set(session, SSH_OPTIONS_STRICTHOSTKEYCHECK, &no);
    ssh_options_set(session, SSH_OPTIONS_KNOWNHOSTS, "/dev/null");
    ssh_options_set(session, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, "/dev/null");
    if (ssh_connect(session) != SSH_OK)
        fail("connect", session);
    return session;
}

/* Runs `command`; prints its first line of stdout and stderr and status. */
static void exec(ssh_session session, const char *command) {
    char out[4096] = {0}, err[4096] = {0};
    int n_out = 0, n_err = 0;
    time_t start = time(NULL);
    ssh_channel channel = ssh_channel_new(session);
    if (!channel || ssh_channel_open_session(channel) != SSH_OK)
        fail("open channel", session);
    if (ssh_channel_request_exec(channel, command) != SSH_OK)
        fail("exec", session);
    while (!ssh_channel_is_eof(channel) || ssh_channel_poll(channel, 0) > 0 ||
           ssh_channel_poll(channel, 1) > 0) {
        int n = ssh_channel_read_timeout(channel, out + n_out, sizeof out - 1 - n_out, 0, 100);
        int e = ssh_channel_read_timeout(channel, err + n_err, sizeof err - 1 - n_err, 1, 100);
        if (n == SSH_ERROR || e == SSH_ERROR)
            fail("read", session);
        if (n > 0)
            n_out += n;
        if (e > 0)
            n_err += e;
        if (time(NULL) - start > DEADLINE_S)
            fail("no end of the command", session);
    }
    ssh_channel_send_eof(channel);
    out[strcspn(out, "\n")] = 0;
    err[strcspn(err, "\n")] = 0;
    printf("exec %.*s status=%d out=%s err=%s\n", (int)strcspn(command, " "), command,
           ssh_channel_get_exit_status(channel), out, err);
    ssh_channel_close(channel);
    ssh_channel_free(channel);
}

static void read_until(ssh_session session, ssh_channel channel, const char *needle) {
    static char seen[1 << 16];
    size_t len = 0;
    time_t start = time(NULL);
    seen[0] = 0;
    while (!strstr(seen, needle)) {
        char buf[4096];
        int n = ssh_channel_read_timeout(channel, buf, sizeof buf, 0, 200);
        if (n == SSH_ERROR)
            fail("read", session);
        if (time(NULL) - start > DEADLINE_S) {
            printf("error: no '%s' within %d s\n", needle, DEADLINE_S);
            exit(1);
        }
        if (n <= 0)
            continue;
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

static ssh_channel attach(ssh_session session, const char *name) {
    char command[128];
    ssh_channel channel = ssh_channel_new(session);
    if (!channel || ssh_channel_open_session(channel) != SSH_OK)
        fail("open channel", session);
    if (ssh_channel_request_pty_size(channel, "xterm", 80, 24) != SSH_OK)
        fail("pty-req", session);
    snprintf(command, sizeof command, "attach %s", name);
    if (ssh_channel_request_exec(channel, command) != SSH_OK)
        fail("attach", session);
    return channel;
}

static void type(ssh_session session, ssh_channel channel, const char *keys) {
    if (ssh_channel_write(channel, keys, strlen(keys)) != (int)strlen(keys))
        fail("write", session);
}

int main(int argc, char **argv) {
    int port;
    const char *user, *key, *password;
    ssh_session session;
    ssh_key private_key;
    ssh_channel shell;
    if (argc != 5) {
        printf("error: usage\n");
        return 1;
    }
    port = atoi(argv[1]);
    user = argv[2];
    key = argv[3];
    password = argv[4];
    printf("version=%s\n", ssh_version(0));

    /* Key login. */
    session = connect_to(port, user);
    if (ssh_pki_import_privkey_file(key, NULL, NULL, NULL, &private_key) != SSH_OK)
        fail("read key", session);
    if (ssh_userauth_publickey(session, NULL, private_key) != SSH_AUTH_SUCCESS)
        fail("key login", session);
    printf("key=ok\n");
    exec(session, "version");
    exec(session, "attach no-such-session");
    ssh_disconnect(session);
    ssh_free(session);

    /* Password login, PTY attach, typed echo, window-change. */
    session = connect_to(port, user);
    if (ssh_userauth_password(session, NULL, password) != SSH_AUTH_SUCCESS)
        fail("password login", session);
    printf("password=ok\n");
    shell = attach(session, "phone");
    type(session, shell, "echo typed-$((6*7))\n");
    read_until(session, shell, "typed-42");
    printf("echo=ok\n");
    if (ssh_channel_change_pty_size(shell, 100, 30) != SSH_OK)
        fail("window-change", session);
    type(session, shell, "stty size\n");
    read_until(session, shell, "30 100");
    printf("resize=ok\n");
    /* Drop: close the socket without a goodbye. */
    close(ssh_get_fd(session));
    ssh_free(session);

    /* Reattach: the screen comes back. */
    session = connect_to(port, user);
    if (ssh_userauth_password(session, NULL, password) != SSH_AUTH_SUCCESS)
        fail("login again", session);
    shell = attach(session, "phone");
    read_until(session, shell, "30 100");
    printf("reattach=ok\n");
    ssh_disconnect(session);
    ssh_free(session);
    ssh_key_free(private_key);
    return 0;
}
