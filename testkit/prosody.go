package testkit

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ErrProsodyNotInstalled says the prosody or prosodyctl binary is missing.
var ErrProsodyNotInstalled = errors.New("prosody not installed: run apt-get install -y prosody")

const (
	prosodyDomain = "localhost"
	// Generous enough for a loaded CI machine; Prosody usually listens in
	// well under a second.
	prosodyStartTimeout = 15 * time.Second
	prosodyStopTimeout  = 10 * time.Second
	prosodyctlTimeout   = 15 * time.Second
)

// Prosody is a Prosody XMPP server run as a child process from its own
// temp dir: config, data, certificate and log all live there, and it
// listens for clients on one loopback port that survives restarts.
type Prosody struct {
	dir      string
	config   string
	logPath  string
	certPEM  []byte
	certPool *x509.CertPool
	port     int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been waited for
	log  *os.File      // stdout+stderr of every run, appended
}

// NewProsody writes a config and a self-signed certificate for localhost
// into dir and picks a free loopback port. It does not start the server.
func NewProsody(dir string) (*Prosody, error) {
	for _, bin := range []string{"prosody", "prosodyctl"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("%w (%s: %v)", ErrProsodyNotInstalled, bin, err)
		}
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("prosody dir: %w", err)
	}
	p := &Prosody{
		dir:     dir,
		config:  filepath.Join(dir, "prosody.cfg.lua"),
		logPath: filepath.Join(dir, "prosody.log"),
	}
	for _, sub := range []string{"data", "certs"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o750); err != nil {
			return nil, fmt.Errorf("prosody dir: %w", err)
		}
	}
	if err := p.writeCert(); err != nil {
		return nil, err
	}
	if p.port, err = freePort(); err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.config, []byte(p.configText()), 0o640); err != nil {
		return nil, fmt.Errorf("write prosody config: %w", err)
	}
	return p, nil
}

// StartProsody starts a Prosody for the test on a temp dir and stops it
// when the test ends. A missing prosody fails the test: the XMPP tests are
// the point, skipping them would hide a broken machine.
func StartProsody(t testing.TB) *Prosody {
	t.Helper()
	p, err := NewProsody(t.TempDir())
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close prosody: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), prosodyStartTimeout)
	defer cancel()
	if err := p.Start(ctx); err != nil {
		t.Fatalf("start prosody: %v", err)
	}
	return p
}

// Addr is the host:port clients dial.
func (p *Prosody) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)) }

// Domain is the one virtual host, "localhost".
func (p *Prosody) Domain() string { return prosodyDomain }

// Dir is the temp dir holding config, data, certificate and log.
func (p *Prosody) Dir() string { return p.dir }

// ConfigPath is the config file every prosody/prosodyctl call is given.
func (p *Prosody) ConfigPath() string { return p.config }

// CertPool holds the server's self-signed certificate, for clients that
// verify TLS against it.
func (p *Prosody) CertPool() *x509.CertPool { return p.certPool }

// CertPEM is the server's certificate in PEM.
func (p *Prosody) CertPEM() []byte { return bytes.Clone(p.certPEM) }

// Running reports whether the server process is alive.
func (p *Prosody) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.runningLocked()
}

func (p *Prosody) runningLocked() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Start runs prosody in the foreground as a child and returns once its
// client port accepts connections.
func (p *Prosody) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.runningLocked() {
		return errors.New("prosody already running")
	}
	if p.log == nil {
		f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return fmt.Errorf("open prosody log: %w", err)
		}
		p.log = f
	}
	fmt.Fprintf(p.log, "=== testkit: starting prosody on %s at %s\n", p.Addr(), time.Now().Format(time.RFC3339Nano))
	// Never without --config: bare prosody would take the system config
	// and :5222.
	cmd := exec.Command("prosody", "--config", p.config, "-F")
	cmd.Dir = p.dir
	cmd.Stdout = p.log
	cmd.Stderr = p.log
	cmd.SysProcAttr = prosodyProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start prosody: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	p.cmd, p.done = cmd, done

	if err := p.waitListening(ctx, done); err != nil {
		p.killLocked()
		return fmt.Errorf("%w\n%s", err, p.LogTail(40))
	}
	return nil
}

func (p *Prosody) waitListening(ctx context.Context, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, prosodyStartTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var d net.Dialer
	for {
		dctx, dcancel := context.WithTimeout(ctx, time.Second)
		c, err := d.DialContext(dctx, "tcp", p.Addr())
		dcancel()
		if err == nil {
			_ = c.Close()
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("prosody exited before listening on %s", p.Addr())
		case <-ctx.Done():
			return fmt.Errorf("prosody not listening on %s: %w", p.Addr(), ctx.Err())
		case <-tick.C:
		}
	}
}

// Stop asks prosody to shut down (SIGTERM) and waits for it, killing it if
// it takes too long. Clients see their streams end.
func (p *Prosody) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.runningLocked() {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("signal prosody: %w", err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(prosodyStopTimeout):
		p.killLocked()
		return fmt.Errorf("prosody did not stop within %s; killed\n%s", prosodyStopTimeout, p.LogTail(20))
	}
}

// Kill ends prosody with SIGKILL, as a crash would: clients get no
// stream end, only a reset connection.
func (p *Prosody) Kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.killLocked()
}

func (p *Prosody) killLocked() {
	if !p.runningLocked() {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Restart stops prosody and starts it again on the same port, with the
// same accounts.
func (p *Prosody) Restart(ctx context.Context) error {
	if err := p.Stop(); err != nil {
		return err
	}
	return p.Start(ctx)
}

// Close stops prosody (killing it if need be) and closes its log.
func (p *Prosody) Close() error {
	err := p.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.killLocked()
	if p.log != nil {
		if cerr := p.log.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close prosody log: %w", cerr)
		}
		p.log = nil
	}
	return err
}

// Register creates an account user@localhost; it works while prosody runs.
func (p *Prosody) Register(user, password string) error {
	ctx, cancel := context.WithTimeout(context.Background(), prosodyctlTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "prosodyctl", "--config", p.config, "register", user, prosodyDomain, password)
	cmd.Dir = p.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		// The password is an argument; keep it out of the error.
		return fmt.Errorf("prosodyctl register %s@%s: %w: %s", user, prosodyDomain, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// LogTail returns the last n lines of prosody's log, for failure messages.
func (p *Prosody) LogTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no prosody log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "--- prosody log (" + p.logPath + ") ---\n" + strings.Join(lines, "\n")
}

// configText leaves network_settings alone on purpose: Prosody keeps Nagle
// on (network_settings = { nagle = true }) as Debian ships it, and so do
// the auction houses the sniper talks to. xmppclient's stall test
// (TestClosedLoopNoAckStall) depends on that default and fails if this
// config mentions network_settings or nagle: fix latency on the client.
func (p *Prosody) configText() string {
	var b strings.Builder
	q := strconv.Quote
	fmt.Fprintf(&b, "-- Generated by sniper/testkit: a throwaway server for tests.\n")
	if os.Geteuid() == 0 {
		// Prosody refuses to run as root without this.
		b.WriteString("run_as_root = true\n")
	}
	fmt.Fprintf(&b, "pidfile = %s\n", q(filepath.Join(p.dir, "prosody.pid")))
	fmt.Fprintf(&b, "data_path = %s\n", q(filepath.Join(p.dir, "data")))
	fmt.Fprintf(&b, "certificates = %s\n", q(filepath.Join(p.dir, "certs")))
	b.WriteString(`interfaces = { "127.0.0.1" }
local_interfaces = { "127.0.0.1" }
`)
	fmt.Fprintf(&b, "c2s_ports = { %d }\n", p.port)
	b.WriteString(`s2s_ports = { }
c2s_direct_tls_ports = { }
legacy_ssl_ports = { }
http_ports = { }
https_ports = { }
admins = { }
plugin_paths = { }
-- Only what a chat client needs. Debian's default adds mod_limits, which
-- throttles c2s to 10 kB/s, and mod_offline, which would hide "recipient
-- is offline" behind storage.
modules_enabled = { "roster", "saslauth", "tls", "disco", "ping", "posix" }
modules_disabled = { "offline", "s2s" }
authentication = "internal_plain"
storage = "internal"
allow_registration = false
-- TLS is offered but optional so that plaintext mode can be tested.
c2s_require_encryption = false
allow_unencrypted_plain_auth = false
log = { { levels = { min = "info" }, to = "console" } }
`)
	fmt.Fprintf(&b, "ssl = { certificate = %s, key = %s }\n",
		q(filepath.Join(p.dir, "certs", "localhost.crt")), q(filepath.Join(p.dir, "certs", "localhost.key")))
	fmt.Fprintf(&b, "VirtualHost %s\n", q(prosodyDomain))
	return b.String()
}

func (p *Prosody) writeCert() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return fmt.Errorf("serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: prosodyDomain, Organization: []string{"sniper testkit"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		// Its own CA, so a client can trust exactly this certificate.
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:              []string{prosodyDomain},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("parse certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal key: %w", err)
	}
	p.certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(filepath.Join(p.dir, "certs", "localhost.crt"), p.certPEM, 0o640); err != nil {
		return fmt.Errorf("write certificate: %w", err)
	}
	if err := os.WriteFile(filepath.Join(p.dir, "certs", "localhost.key"), keyPEM, 0o600); err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	p.certPool = x509.NewCertPool()
	p.certPool.AddCert(cert)
	return nil
}

// freePort asks the kernel for a free loopback port. Another process could
// take it before prosody binds it: unlikely enough on a test machine to
// accept, and prosody would then exit and Start fail on its log.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
