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
	done := make(chan string)             // what went wrong, "" for nothing
	go func() { done <- pointsCheck() }() // never on the main thread: the main goroutine holds it
	if msg := <-done; msg != "" {
		return fail(msg)
	}
	return 0
}

// pointsCheck mounts a tmpfs in the calling thread's namespace and says
// what Points and lastMount got wrong about it.
func pointsCheck() string {
	dir, err := os.MkdirTemp("", "zos-points-")
	if err != nil {
		return err.Error()
	}
	defer os.Remove(dir)
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		return "mount tmpfs: " + err.Error()
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	self, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err.Error()
	}
	if strings.Contains(string(self), " "+dir+" ") {
		return "/proc/self/mountinfo shows " + dir + ": the main thread did not leave the namespace, the test proves nothing"
	}
	pts, err := Points()
	if err != nil {
		return err.Error()
	}
	if !pts[dir] {
		return "Points misses " + dir + ", mounted by the calling thread's namespace"
	}
	if e, ok := lastMount(dir); !ok || e.fstype != "tmpfs" {
		return "lastMount misses " + dir
	}
	return ""
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
