// Go's golang.org/x/crypto/ssh (Debian's golang-golang-x-crypto-dev, built
// in GOPATH mode: no module download) against a keepsh test server: key and
// password login, exec (stdout, stderr, exit status), a PTY attached to
// session "phone" with typed echo, a window-change, a dropped connection and
// a reattach; then a login offering only AES-128 (GCM, and CTR with a
// non-EtM MAC), as apps that restrict x/crypto's defaults do.
//
// Usage: go_ssh_client PORT USER KEY PASSWORD
//
// Prints one line per fact the Rust test checks and exits 0, or prints the
// error and exits 1. Every wait has a deadline.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

const deadline = 20 * time.Second

var port, user, keyPath, password string

// connect logs in with auth over a fresh TCP connection, returning both so
// that a test can drop the connection without a goodbye.
// With ciphers or macs given, only those are offered.
func connect(auth ssh.AuthMethod, ciphers, macs []string) (*ssh.Client, net.Conn, error) {
	var hostKeyType string
	config := &ssh.ClientConfig{
		Config: ssh.Config{Ciphers: ciphers, MACs: macs},
		User:   user,
		Auth:   []ssh.AuthMethod{auth},
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			hostKeyType = key.Type()
			return nil
		},
		Timeout: deadline,
	}
	address := net.JoinHostPort("127.0.0.1", port)
	conn, err := net.DialTimeout("tcp", address, deadline)
	if err != nil {
		return nil, nil, err
	}
	conn.SetDeadline(time.Now().Add(deadline))
	c, chans, reqs, err := ssh.NewClientConn(conn, address, config)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	conn.SetDeadline(time.Time{})
	fmt.Printf("hostkey=%s\n", hostKeyType)
	return ssh.NewClient(c, chans, reqs), conn, nil
}

// firstLine is s up to its first newline, without surrounding blanks.
func firstLine(s string) string {
	return strings.TrimSpace(strings.SplitN(s, "\n", 2)[0])
}

func exec(client *ssh.Client, command string) error {
	session, err := client.NewSession()
	if err != nil {
		return err
	}
	defer session.Close()
	var out, errOut bytes.Buffer
	session.Stdout = &out
	session.Stderr = &errOut
	status := 0
	done := make(chan error, 1)
	go func() { done <- session.Run(command) }()
	select {
	case err = <-done:
	case <-time.After(deadline):
		return fmt.Errorf("%s: no exit within %v", command, deadline)
	}
	var exit *ssh.ExitError
	if errors.As(err, &exit) {
		status = exit.ExitStatus()
	} else if err != nil {
		return err
	}
	fmt.Printf("exec %s status=%d out=%s err=%s\n", strings.Fields(command)[0], status,
		firstLine(out.String()), firstLine(errOut.String()))
	return nil
}

// screen collects what a channel prints, for readUntil.
type screen struct {
	mu   sync.Mutex
	seen []byte
}

func (s *screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = append(s.seen, p...)
	return len(p), nil
}

func (s *screen) readUntil(needle string) error {
	started := time.Now()
	for time.Since(started) < deadline {
		s.mu.Lock()
		found := bytes.Contains(s.seen, []byte(needle))
		s.mu.Unlock()
		if found {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("no %q within %v", needle, deadline)
}

type shell struct {
	session *ssh.Session
	stdin   interface{ Write([]byte) (int, error) }
	screen  *screen
}

func attach(client *ssh.Client, name string) (*shell, error) {
	session, err := client.NewSession()
	if err != nil {
		return nil, err
	}
	if err := session.RequestPty("xterm", 24, 80, ssh.TerminalModes{}); err != nil {
		return nil, err
	}
	stdin, err := session.StdinPipe()
	if err != nil {
		return nil, err
	}
	s := &screen{}
	session.Stdout = s
	if err := session.Start("attach " + name); err != nil {
		return nil, err
	}
	return &shell{session, stdin, s}, nil
}

func run() error {
	key, err := os.ReadFile(keyPath)
	if err != nil {
		return err
	}
	signer, err := ssh.ParsePrivateKey(key)
	if err != nil {
		return err
	}
	client, _, err := connect(ssh.PublicKeys(signer), nil, nil)
	if err != nil {
		return fmt.Errorf("key login: %w", err)
	}
	fmt.Println("key=ok")
	if err := exec(client, "version"); err != nil {
		return err
	}
	if err := exec(client, "attach no-such-session"); err != nil {
		return err
	}
	client.Close()

	client, conn, err := connect(ssh.Password(password), nil, nil)
	if err != nil {
		return fmt.Errorf("password login: %w", err)
	}
	fmt.Println("password=ok")
	sh, err := attach(client, "phone")
	if err != nil {
		return err
	}
	sh.stdin.Write([]byte("echo typed-$((6*7))\n"))
	if err := sh.screen.readUntil("typed-42"); err != nil {
		return err
	}
	fmt.Println("echo=ok")
	if err := sh.session.WindowChange(30, 100); err != nil {
		return err
	}
	sh.stdin.Write([]byte("stty size\n"))
	if err := sh.screen.readUntil("30 100"); err != nil {
		return err
	}
	fmt.Println("resize=ok")
	// Drop the connection without a goodbye.
	conn.Close()

	again, _, err := connect(ssh.Password(password), nil, nil)
	if err != nil {
		return fmt.Errorf("login again: %w", err)
	}
	back, err := attach(again, "phone")
	if err != nil {
		return err
	}
	if err := back.screen.readUntil("30 100"); err != nil {
		return err
	}
	fmt.Println("reattach=ok")
	again.Close()

	for _, offer := range [][2]string{
		{"aes128-gcm@openssh.com", ""},
		{"aes128-ctr", "hmac-sha2-256"},
	} {
		var macs []string
		if offer[1] != "" {
			macs = []string{offer[1]}
		}
		client, _, err := connect(ssh.Password(password), []string{offer[0]}, macs)
		if err != nil {
			return fmt.Errorf("offering only %v: %w", offer, err)
		}
		if err := exec(client, "version"); err != nil {
			return err
		}
		client.Close()
		fmt.Printf("only %s=ok\n", offer[0])
	}
	return nil
}

func main() {
	if len(os.Args) != 5 {
		fmt.Println("error: usage: go_ssh_client PORT USER KEY PASSWORD")
		os.Exit(1)
	}
	port, user, keyPath, password = os.Args[1], os.Args[2], os.Args[3], os.Args[4]
	if err := run(); err != nil {
		fmt.Printf("error: %v\n", err)
		os.Exit(1)
	}
}
