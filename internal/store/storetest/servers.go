package storetest

// Real servers for backend tests: the S3 and Redis-protocol stores are tested
// against the programs users run, started here on free loopback ports with
// their data in t.TempDir and stopped in t.Cleanup. A missing program skips
// the test with what to install, except under CI=true, where it fails: CI
// must never pass by silently skipping a real-server test.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// MinIOCache is where .ci/deps.sh builds and caches the MinIO server.
const MinIOCache = "/var/cache/zos-ci/bin/minio"

// StartRedis starts a redis-server on a free loopback port, without
// persistence, and returns its host:port.
func StartRedis(t testing.TB) string {
	t.Helper()
	bin := need(t, "redis-server", "", "", "run .ci/deps.sh or apt-get install redis-server")
	dir := t.TempDir()
	return start(t, "redis-server", func(addr string, port int) *exec.Cmd {
		return exec.Command(bin,
			"--bind", "127.0.0.1", "--port", strconv.Itoa(port),
			"--dir", dir, "--save", "", "--appendonly", "no",
			"--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning")
	}, func(ctx context.Context, addr string) error {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			return err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		if !strings.HasPrefix(line, "+PONG") {
			return fmt.Errorf("PING answered %q", line)
		}
		return nil
	})
}

// StartMinIO starts a single-drive MinIO server on a free loopback port and
// returns its host:port and root credentials.
func StartMinIO(t testing.TB) (endpoint, access, secret string) {
	t.Helper()
	bin := need(t, "minio", "ZOS_MINIO", MinIOCache,
		"run .ci/deps.sh (builds it into "+MinIOCache+") or set ZOS_MINIO to a minio server binary")
	dir := t.TempDir()
	access, secret = "zostest", "zostest-secret"
	endpoint = start(t, "minio", func(addr string, port int) *exec.Cmd {
		cmd := exec.Command(bin, "server", "--quiet", "--address", addr,
			"--certs-dir", dir+"/certs", dir+"/data")
		cmd.Env = append(os.Environ(),
			"MINIO_ROOT_USER="+access, "MINIO_ROOT_PASSWORD="+secret,
			"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_CI_CD=1")
		return cmd
	}, func(ctx context.Context, addr string) error {
		// The health endpoints answer before the object layer is up; an
		// S3 request answers 503 (XMinioServerNotInitialized) until it is,
		// and then 403, this one being unsigned.
		req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/", nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			return fmt.Errorf("unsigned list buckets: %s", resp.Status)
		}
		return nil
	})
	return endpoint, access, secret
}

// need finds a program: the file named by $env when set (an explicit choice
// wins), else name in $PATH, else fallback. If none is there it skips t, or
// fails it when CI=true.
func need(t testing.TB, name, env, fallback, install string) string {
	t.Helper()
	exe := func(p string) bool {
		fi, err := os.Stat(p)
		return p != "" && err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
	}
	if env != "" && exe(os.Getenv(env)) {
		return os.Getenv(env)
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if exe(fallback) {
		return fallback
	}
	msg := fmt.Sprintf("%s not installed: %s", name, install)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// start runs the command that command builds for a free port until ready
// answers, trying a few ports in case another process takes the one picked
// between probing and binding, and stops it when t ends.
func start(t testing.TB, name string, command func(addr string, port int) *exec.Cmd, ready func(ctx context.Context, addr string) error) string {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		cmd := command(addr, port)
		out := &tail{max: 8 << 10}
		cmd.Stdout, cmd.Stderr = out, out
		cmd.SysProcAttr = procAttr()
		if err := cmd.Start(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		if err := await(exited, addr, ready); err != nil {
			stop(cmd, exited)
			lastErr = fmt.Errorf("%w\n%s", err, out)
			continue
		}
		t.Cleanup(func() { stop(cmd, exited) })
		return addr
	}
	t.Fatalf("%s did not start: %v", name, lastErr)
	return ""
}

// await polls ready for up to a minute (MinIO formats its drive on first
// start), giving up early if the process exits.
func await(exited <-chan error, addr string, ready func(context.Context, string) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		err := ready(rctx, addr)
		rcancel()
		if err == nil {
			return nil
		}
		select {
		case werr := <-exited:
			return fmt.Errorf("exited before ready: %v", werr)
		case <-ctx.Done():
			return fmt.Errorf("not ready after a minute: %w", err)
		case <-tick.C:
		}
	}
}

// stop asks the server to exit and kills it if it has not within 10 seconds.
func stop(cmd *exec.Cmd, exited <-chan error) {
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tail keeps the last max bytes a server wrote, for the failure message.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (w *tail) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if over := len(w.buf) - w.max; over > 0 {
		w.buf = w.buf[over:]
	}
	return len(p), nil
}

func (w *tail) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(bytes.TrimSpace(w.buf))
}
