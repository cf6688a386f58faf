package runtime

import (
	"os"

	"github.com/opencontainers/runc/libcontainer"
	// nsenter's cgo constructor joins and creates the container's namespaces
	// in the re-executed "init" process before the Go runtime starts threads.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
)

// Init runs libcontainer's container init when this process was started as
// one (os.Args[1] == "init"); otherwise it returns at once. Call it first
// thing in main (and in TestMain of packages whose tests start containers):
// Start re-executes the running binary as "<argv0> init", and that process
// must become the container's init before anything else runs.
func Init() {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init() // never returns
	}
}
