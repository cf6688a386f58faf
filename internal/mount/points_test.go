package mount

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// mainThreadNS names the environment variable that turns a run of this
// test binary into the helper of TestPointsFollowCallingThread.
const mainThreadNS = "ZOS_TEST_MAIN_THREAD_NS"

func init() {
	if os.Getenv(mainThreadNS) != "" {
		runtime.LockOSThread() // the main goroutine keeps the main thread
		os.Exit(pointsHelper())
	}
}

// pointsHelper moves the main thread into a mount namespace of its own,
// as runc's libcontainer leaves it when its namespace thread lands there,
// mounts a tmpfs from another thread, and checks that Points, called
// there, sees it where /proc/self/mountinfo does not.
func pointsHelper() int {
	fail := func(msg string) int {
		os.Stderr.WriteString(msg + "\n")
		return 1
	}
	if err := unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS); err != nil {
		return fail("unshare: " + err.Error())
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fail("make / private: " + err.Error())
	}
	type result struct {
		code int
		msg  string
	}
	done := make(chan result)
	go func() { // never on the main thread: the main goroutine holds it
		dir, err := os.MkdirTemp("", "zos-points-")
		if err != nil {
			done <- result{1, err.Error()}
			return
		}
		defer os.Remove(dir)
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
			done <- result{1, "mount tmpfs: " + err.Error()}
			return
		}
		defer unix.Unmount(dir, unix.MNT_DETACH)
		self, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			done <- result{1, err.Error()}
			return
		}
		if strings.Contains(string(self), " "+dir+" ") {
			done <- result{1, "/proc/self/mountinfo shows " + dir + ": the main thread did not leave the namespace, the test proves nothing"}
			return
		}
		pts, err := Points()
		switch {
		case err != nil:
			done <- result{1, err.Error()}
		case !pts[dir]:
			done <- result{1, "Points misses " + dir + ", mounted by the calling thread's namespace"}
		default:
			if e, ok := lastMount(dir); !ok || e.fstype != "tmpfs" {
				done <- result{1, "lastMount misses " + dir}
				return
			}
			done <- result{0, ""}
		}
	}()
	r := <-done
	if r.code != 0 {
		return fail(r.msg)
	}
	return 0
}

// TestPointsFollowCallingThread: the mount table is read for the calling
// thread, not the thread-group leader, which a library may have left in a
// container's mount namespace (the cause of a node agent that saw its own
// image mounts as gone and every container fail).
func TestPointsFollowCallingThread(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: unshares a mount namespace and mounts a tmpfs")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), mainThreadNS+"=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper: %v: %s", err, out)
	}
}
