package lru

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zosgrid/zos/internal/digest"
)

// The tests below run this test binary again as a helper process (another
// process sharing the cache directory), selected by $ZOS_LRU_HELPER:
//
//	write DIR BUDGET PREFIX N SIZE   put N blobs, reading back every 4th one
//	pin DIR ID                       pin ID, print "pinned", hold it until stdin closes
func TestMain(m *testing.M) {
	if args := os.Getenv("ZOS_LRU_HELPER"); args != "" {
		if err := helper(strings.Fields(args)); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func helper(args []string) error {
	ctx := context.Background()
	switch args[0] {
	case "write":
		budget, _ := strconv.ParseInt(args[2], 10, 64)
		n, _ := strconv.Atoi(args[4])
		size, _ := strconv.Atoi(args[5])
		s, err := Open(ctx, args[1], Options{Budget: budget})
		if err != nil {
			return err
		}
		defer s.Close()
		for i := 0; i < n; i++ {
			bs := blobs(fmt.Sprint(args[3], i, "-"), 1, size)
			if err := s.Put(ctx, bs[0].id, bs[0].data); err != nil {
				return err
			}
			if i%4 == 0 {
				// Reads race with the other process's evictions: a miss
				// is fine, a bad blob is not.
				if _, err := s.Get(ctx, bs[0].id); err != nil && !strings.Contains(err.Error(), "not found") {
					return err
				}
			}
		}
		return nil
	case "pin":
		s, err := Open(ctx, args[1], Options{})
		if err != nil {
			return err
		}
		defer s.Close()
		id, err := digest.Parse(args[2])
		if err != nil {
			return err
		}
		defer s.Pin(id)()
		fmt.Println("pinned")
		io.Copy(io.Discard, os.Stdin)
		return nil
	}
	return fmt.Errorf("unknown helper %q", args)
}

func helperCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "ZOS_LRU_HELPER="+strings.Join(args, " "))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// dirBytes sums the sizes of the blob files under root while holding the
// state lock, so that no process links a blob meanwhile (evictions may
// still remove some: the sum is at least what the cache held when the lock
// was taken).
func dirBytes(t *testing.T, root string) int64 {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(root, metaDir, "state"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := flock(f, unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer funlock(f)
	var total int64
	shards, _ := filepath.Glob(filepath.Join(root, "[0-9a-f][0-9a-f]"))
	for _, sh := range shards {
		names, _ := os.ReadDir(sh)
		for _, n := range names {
			if strings.HasPrefix(n.Name(), ".") {
				continue
			}
			if fi, err := n.Info(); err == nil {
				total += fi.Size()
			}
		}
	}
	return total
}

// TestTwoProcessesBudget: two processes writing to one cache at once never
// take it past its budget, and the shared count matches the directory.
func TestTwoProcessesBudget(t *testing.T) {
	root := t.TempDir()
	const budget = 1 << 20
	s := open(t, root, budget)
	var cmds []*exec.Cmd
	for _, p := range []string{"a", "b"} {
		cmd := helperCmd(t, "write", root, strconv.Itoa(budget), p, "400", "12000")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, cmd := range cmds {
		wg.Go(func() { errs <- cmd.Wait() })
	}
	stop := make(chan struct{})
	go func() { wg.Wait(); close(stop) }()
	var peak int64
	samples := 0
sample:
	for {
		select {
		case <-stop:
			break sample
		case <-time.After(2 * time.Millisecond):
		}
		peak = max(peak, dirBytes(t, root))
		samples++
	}
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("writer: %v", err)
		}
	}
	u := checkCount(t, s)
	st, _ := s.Stats()
	t.Logf("%d samples, peak %d bytes of %d; end %d blobs, %d bytes; %d evictions, %d hits, %d misses",
		samples, peak, budget, u.Blobs, u.Bytes, st.Evictions, st.Hits, st.Misses)
	if peak > budget || u.Bytes > budget {
		t.Fatalf("budget %d passed: peak %d, end %d", budget, peak, u.Bytes)
	}
	if st.Evictions == 0 || u.Bytes < budget/2 {
		t.Fatalf("the writers should have filled and evicted: %+v", st)
	}
	ctx := context.Background()
	s.List(ctx, func(id digest.ID) error {
		if _, err := s.Get(ctx, id); err != nil {
			t.Errorf("blob left by the writers: %v", err)
		}
		return nil
	})
}

// TestPinAcrossProcesses: a blob pinned by another process survives GC, and
// is evictable once that process exits (its pin dies with it).
func TestPinAcrossProcesses(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := open(t, root, 0)
	bs := blobs("xpin", 3, 4000)
	putAll(t, s, bs)
	cmd := helperCmd(t, "pin", root, bs[1].id.String())
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "pinned\n" {
		t.Fatalf("helper: %q", line)
	}
	if u, _ := s.Usage(ctx); u.Pinned != 1 {
		t.Fatalf("pinned = %d, want 1", u.Pinned)
	}
	r, err := s.GC(ctx, 1)
	if err != nil || r.Blobs != 1 || !has(s, bs[1].id) {
		t.Fatalf("GC with a blob pinned elsewhere: %+v %v", r, err)
	}
	// The helper is killed: its pin goes with it.
	cmd.Process.Kill()
	cmd.Wait()
	in.Close()
	if r, _ := s.GC(ctx, 1); r.Blobs != 0 {
		t.Fatalf("pin of a dead process still holds: %+v", r)
	}
}

// TestKilledWriter: a writer killed at a random point leaves only whole
// blobs (and at most a temporary file), and a GC recounts exactly.
func TestKilledWriter(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := open(t, root, 0)
	for round := range 3 {
		cmd := helperCmd(t, "write", root, "0", fmt.Sprint("kill", round), "100000", "30000")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(50+round*37) * time.Millisecond)
		cmd.Process.Kill()
		cmd.Wait()
	}
	u, err := s.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bad, largest := 0, 0
	s.List(ctx, func(id digest.ID) error {
		b, err := s.Get(ctx, id)
		if err != nil {
			bad++
		}
		largest = max(largest, len(b))
		return nil
	})
	// A writer killed between linking a blob and writing the count leaves
	// that blob uncounted (lru.go, commit): at most one blob per kill,
	// until the next reconcile.
	if st, _ := s.Stats(); st.Used+3*int64(largest) < u.Bytes {
		t.Fatalf("count below the directory after crashes by more than a blob per kill: counted %d, holds %d (blobs up to %d bytes)",
			st.Used, u.Bytes, largest)
	}
	t.Logf("%d blobs, %d bytes, %d temporary files after 3 kills", u.Blobs, u.Bytes, u.Temps)
	if bad != 0 || u.Blobs == 0 || u.Temps > 3 {
		t.Fatalf("%d bad blobs of %d, %d temporary files", bad, u.Blobs, u.Temps)
	}
	s.GC(ctx, 0)
	checkCount(t, s)
}
