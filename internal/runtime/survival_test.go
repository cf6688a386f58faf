package runtime

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// helperEnv makes the test binary play an agent: it opens a Runtime,
// starts the container described in the variable (JSON: root and spec),
// prints "started" and waits to be killed.
const helperEnv = "ZOS_RUNTIME_TEST_AGENT"

type helperJob struct {
	Root string
	Spec Spec
}

func agentHelper() int {
	var job helperJob
	if err := json.Unmarshal([]byte(os.Getenv(helperEnv)), &job); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 2
	}
	r, err := New(job.Root, nil)
	if err == nil {
		err = r.Start(context.Background(), job.Spec)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	fmt.Println("started")
	select {} // until killed
}

// TestSurvival: an agent killed with -9 leaves its container running; a new
// Runtime over the same root finds it, stops and deletes it, leaving
// nothing.
func TestSurvival(t *testing.T) {
	needContainers(t)
	// Orphans come back to this process instead of pid 1 (which need not
	// reap them), so the test can check the init is really gone.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })

	root := filepath.Join(t.TempDir(), "state")
	spec := Spec{ID: testID(t), Rootfs: rootfs(t), Args: []string{"sleep", "300"}, Log: filepath.Join(t.TempDir(), "log")}
	job, _ := json.Marshal(helperJob{Root: root, Spec: spec})
	agent := exec.Command(os.Args[0], "-test.run=^$")
	agent.Env = append(os.Environ(), helperEnv+"="+string(job))
	agent.Stderr = os.Stderr
	out, err := agent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if line != "started\n" {
		agent.Process.Kill()
		agent.Wait()
		t.Fatalf("agent: %q, %v", line, err)
	}
	// The agent dies with -9: no Stop, no Delete, no goodbye.
	agent.Process.Signal(unix.SIGKILL)
	agent.Wait()

	b, err := New(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Cleanup(func() { b.Delete(ctx, spec.ID) })
	list, err := b.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != spec.ID || list[0].Status != Running || list[0].Pid <= 0 || list[0].Started.IsZero() {
		t.Fatalf("list after the agent died: %+v, want %s running", list, spec.ID)
	}
	pid := list[0].Pid
	if ppid := parentOf(pid); ppid != os.Getpid() {
		t.Errorf("container init %d has parent %d, want this process (the subreaper)", pid, ppid)
	}

	if err := b.Stop(ctx, spec.ID, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	st, err := b.State(ctx, spec.ID)
	if err != nil || st.Status != Stopped || st.ExitCode != -1 {
		t.Errorf("after stop: %+v, %v: want stopped, exit code unknown (-1)", st, err)
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, 0, nil); err != nil || !ws.Signaled() || ws.Signal() != unix.SIGKILL {
		t.Errorf("container init: %v, %v: want killed by SIGKILL", ws, err)
	}
	if err := b.Delete(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("container init %d still exists: %v", pid, err)
	}
	assertGone(t, b, spec.ID)
	if list, err := b.List(ctx); err != nil || len(list) != 0 {
		t.Errorf("list after delete: %+v, %v", list, err)
	}
}

func parentOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// pid (comm) state ppid ...: comm may hold spaces, so start after ')'.
	var state string
	var ppid int
	if i := lastIndex(b, ')'); i >= 0 {
		fmt.Sscanf(string(b[i+1:]), " %s %d", &state, &ppid)
	}
	return ppid
}

func lastIndex(b []byte, c byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == c {
			return i
		}
	}
	return -1
}

func TestErrors(t *testing.T) {
	needContainers(t)
	r := newRuntime(t)
	ctx := context.Background()
	s := start(t, r, Spec{Args: []string{"sleep", "30"}})
	if err := r.Start(ctx, s); !errors.Is(err, ErrExists) {
		t.Errorf("start of a taken id: %v, want ErrExists", err)
	}
	unknown := testID(t) + "-none"
	if _, err := r.State(ctx, unknown); !errors.Is(err, ErrNotFound) {
		t.Errorf("state of an unknown id: %v, want ErrNotFound", err)
	}
	if err := r.Stop(ctx, unknown, time.Second); !errors.Is(err, ErrNotFound) {
		t.Errorf("stop of an unknown id: %v, want ErrNotFound", err)
	}
	if err := r.Delete(ctx, unknown); err != nil {
		t.Errorf("delete of an unknown id: %v, want nil", err)
	}

	rootfs := s.Rootfs
	for _, c := range []struct {
		name string
		spec Spec
	}{
		{"invalid id", Spec{ID: "Bad/ID", Rootfs: rootfs, Args: []string{"true"}}},
		{"empty id", Spec{ID: "", Rootfs: rootfs, Args: []string{"true"}}},
		{"long id", Spec{ID: strings.Repeat("a", 65), Rootfs: rootfs, Args: []string{"true"}}},
		{"missing rootfs", Spec{ID: testID(t) + "-a", Rootfs: "/nonexistent/rootfs", Args: []string{"true"}}},
		{"relative rootfs", Spec{ID: testID(t) + "-b", Rootfs: "rootfs", Args: []string{"true"}}},
		{"no command", Spec{ID: testID(t) + "-c", Rootfs: rootfs}},
		{"missing mount source", Spec{ID: testID(t) + "-d", Rootfs: rootfs, Args: []string{"true"}, Mounts: []Mount{{Source: "/nonexistent", Target: "/data"}}}},
		{"missing netns", Spec{ID: testID(t) + "-e", Rootfs: rootfs, Args: []string{"true"}, NetNS: "/run/netns/nonexistent"}},
		{"unknown user", Spec{ID: testID(t) + "-f", Rootfs: rootfs, Args: []string{"true"}, User: "nosuchuser"}},
		// Found missing only by the container's init: the start fails
		// and whatever was created is removed again.
		{"missing executable", Spec{ID: testID(t) + "-g", Rootfs: rootfs, Args: []string{"/no/such/program"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := r.Start(ctx, c.spec); err == nil {
				r.Delete(ctx, c.spec.ID)
				t.Fatal("started")
			} else {
				t.Log(err)
			}
			entries, _ := os.ReadDir(r.root)
			for _, e := range entries {
				if e.Name() != s.ID {
					t.Errorf("left in the state root: %s", e.Name())
				}
			}
			if validID(c.spec.ID) == nil {
				assertGone(t, r, c.spec.ID)
			}
		})
	}
}

func TestVolume(t *testing.T) {
	needContainers(t)
	r := newRuntime(t)
	data, ro := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(ro, "in"), []byte("from host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := start(t, r, Spec{
		Args:   []string{"sh", "-c", `cat /ro/in; echo written > /data/out; (echo x > /ro/x) 2>/dev/null || echo ro`},
		Mounts: []Mount{{Source: data, Target: "/data"}, {Source: ro, Target: "/ro", ReadOnly: true}},
	})
	waitStopped(t, r, s.ID, 10*time.Second)
	if got := readLog(t, s); got != "from host\nro\n" {
		t.Errorf("log %q", got)
	}
	if b, err := os.ReadFile(filepath.Join(data, "out")); err != nil || string(b) != "written\n" {
		t.Errorf("volume: %q, %v", b, err)
	}
}

// TestConcurrent starts, lists and deletes several containers at once.
func TestConcurrent(t *testing.T) {
	needContainers(t)
	r := newRuntime(t)
	ctx := context.Background()
	const n = 4
	specs := make([]Spec, n)
	for i := range specs {
		specs[i] = Spec{ID: fmt.Sprintf("%s-%d", testID(t), i), Rootfs: rootfs(t), Args: []string{"sleep", "30"}}
		id := specs[i].ID
		t.Cleanup(func() { r.Delete(ctx, id) })
	}
	errs := make(chan error, n)
	for _, s := range specs {
		go func() { errs <- r.Start(ctx, s) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	list, err := r.List(ctx)
	if err != nil || len(list) != n {
		t.Fatalf("list: %+v, %v: want %d containers", list, err, n)
	}
	for i, st := range list {
		if st.ID != specs[i].ID || st.Status != Running || st.Pid <= 0 {
			t.Errorf("list[%d] = %+v, want %s running", i, st, specs[i].ID)
		}
	}
	for _, s := range specs {
		go func() { errs <- r.Delete(ctx, s.ID) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	for _, s := range specs {
		assertGone(t, r, s.ID)
	}
}
