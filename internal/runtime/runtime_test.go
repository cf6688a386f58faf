package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/runc/libcontainer/seccomp"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	Init() // the re-executed test binary becomes the container's init here
	if os.Getenv(helperEnv) != "" {
		os.Exit(agentHelper())
	}
	os.Exit(m.Run())
}

// corpusMin is the Debian minbase tree the containers run on.
func corpusMin() string {
	dir := os.Getenv("ZOS_CORPUS")
	if dir == "" {
		dir = "/var/cache/zos-corpus"
	}
	return filepath.Join(dir, "min")
}

// needContainers skips unless real containers can run here.
func needContainers(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("containers need root")
	}
	if _, err := os.Stat(filepath.Join(corpusMin(), "bin", "sh")); err != nil {
		t.Skipf("no corpus tree at %s: build it with 'bash ../shared/corpus/build-corpus.sh min'", corpusMin())
	}
	if !memoryController() {
		t.Skip("no cgroup memory controller")
	}
	if !seccomp.Enabled {
		t.Skip("built without -tags seccomp: containers are refused (go test -tags seccomp)")
	}
}

func memoryController() bool {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) == 3 && strings.Contains(","+f[1]+",", ",memory,") {
			return true
		}
	}
	c, _ := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
	return strings.Contains(string(c), "memory")
}

// rootfs gives the test an overlay over the corpus tree, so the tree is
// never written; unmounted when the test ends.
func rootfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	upper, work, merged := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "merged")
	for _, d := range []string{upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", corpusMin(), upper, work)
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatalf("overlay: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount rootfs: %v", err)
		}
	})
	return merged
}

var nonID = regexp.MustCompile(`[^a-z0-9_.-]+`)

// testID is a container ID unique to the test and the run.
func testID(t *testing.T) string {
	id := strings.Trim(nonID.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-_.")
	suffix := "-" + strconv.Itoa(os.Getpid())
	if len(id) > 64-len(suffix) {
		id = id[:64-len(suffix)]
	}
	return id + suffix
}

func newRuntime(t *testing.T) *Runtime {
	t.Helper()
	r, err := New(filepath.Join(t.TempDir(), "state"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// start starts s (ID, Rootfs and Log filled in when empty) and deletes the
// container when the test ends.
func start(t *testing.T, r *Runtime, s Spec) Spec {
	t.Helper()
	if s.ID == "" {
		s.ID = testID(t)
	}
	if s.Rootfs == "" {
		s.Rootfs = rootfs(t)
	}
	if s.Log == "" {
		s.Log = filepath.Join(t.TempDir(), "log")
	}
	t.Cleanup(func() {
		if err := r.Delete(context.Background(), s.ID); err != nil {
			t.Errorf("delete: %v", err)
		}
	})
	if err := r.Start(context.Background(), s); err != nil {
		t.Fatalf("start: %v", err)
	}
	return s
}

// waitStopped waits until the container has stopped and returns its state.
func waitStopped(t *testing.T, r *Runtime, id string, timeout time.Duration) State {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := r.State(context.Background(), id)
		if err != nil {
			t.Fatalf("state: %v", err)
		}
		if st.Status == Stopped {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s still %s after %v", id, st.Status, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readLog(t *testing.T, s Spec) string {
	t.Helper()
	b, err := os.ReadFile(s.Log)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestEcho(t *testing.T) {
	needContainers(t)
	r := newRuntime(t)
	s := start(t, r, Spec{
		Args:     []string{"/bin/sh", "-c", "echo hi; echo err >&2; id -u; id -g; pwd; printenv FOO; hostname"},
		Env:      []string{"FOO=bar baz"},
		Cwd:      "/tmp",
		User:     "1000:1000",
		Hostname: "box1",
	})
	st := waitStopped(t, r, s.ID, 10*time.Second)
	if st.ExitCode != 0 || st.OOMKilled || st.Started.IsZero() {
		t.Errorf("state %+v, want exit 0, not OOM-killed, a start time", st)
	}
	want := "hi\nerr\n1000\n1000\n/tmp\nbar baz\nbox1\n"
	if got := readLog(t, s); got != want {
		t.Errorf("log:\n%s\nwant:\n%s", got, want)
	}
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// TestWithoutSeccomp runs when the package is built without -tags seccomp:
// Start must refuse rather than run a container unconfined.
func TestWithoutSeccomp(t *testing.T) {
	if seccomp.Enabled {
		t.Skip("built with seccomp support")
	}
	r := newRuntime(t)
	err := r.Start(context.Background(), Spec{ID: "x", Rootfs: t.TempDir(), Args: []string{"true"}})
	if err == nil || !strings.Contains(err.Error(), "without -tags seccomp") {
		t.Fatalf("start: %v, want a refusal naming -tags seccomp", err)
	}
	if entries, _ := os.ReadDir(r.root); len(entries) != 0 {
		t.Errorf("left in the state root: %v", entries)
	}
}
