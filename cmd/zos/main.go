// Command zos is the one binary of the Zero-OS compute system: flists,
// chunk stores, and (later) the hub, node and ledger.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	goruntime "runtime"
	"syscall"

	"github.com/spf13/cobra"

	zosruntime "github.com/zosgrid/zos/internal/runtime"
)

// exitError carries an exit status for failures scripts tell apart.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// Exit statuses.
const (
	exitFail      = 1 // anything else
	exitUsage     = 2 // bad flags or arguments
	exitSignature = 3 // a signature is missing, invalid or untrusted
	exitContent   = 4 // chunks missing or corrupt, or the flist itself corrupt
)

// The agent's main goroutine keeps the main thread to itself. A library
// that moves a locked thread into another namespace and lets it die
// (runc's libcontainer joins a container's mount namespace that way)
// would otherwise, when that thread is the main one, leave it parked in
// the container's namespace for good: Go never ends the main thread, so it
// would pin that namespace, and /proc/self, ps and nsenter -t would see
// the agent through it. Only the agent runs containers; other commands
// keep the main thread free (a locked main goroutine costs a thread
// switch each time it blocks: measured 5% on a pack).
func init() {
	if len(os.Args) > 2 && os.Args[1] == "node" && os.Args[2] == "run" {
		goruntime.LockOSThread()
	}
}

func main() {
	zosruntime.Init()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := &cobra.Command{
		Use:           "zos",
		Short:         "Zero-OS: flist images over verified, deduplicated chunk stores",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &exitError{exitUsage, fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())}
	})
	root.AddCommand(flistCmd(), keyCmd())
	root.AddCommand(cacheCmd())
	root.AddCommand(hubCmd())
	root.AddCommand(specCmd(), specSignCmd())
	root.AddCommand(nodeCmd(), deployCmd(), statusCmd(), logsCmd(), deleteCmd())
	root.AddCommand(chainCmd())
	err := root.ExecuteContext(ctx)
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "zos:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		os.Exit(ee.code)
	}
	os.Exit(exitFail)
}

func usageArgs(n int, what string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != n {
			return &exitError{exitUsage, fmt.Errorf("%s takes %s (see '%s --help')", c.CommandPath(), what, c.CommandPath())}
		}
		return nil
	}
}
