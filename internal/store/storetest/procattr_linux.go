package storetest

import "syscall"

// procAttr makes a test server die with the test binary, even when a
// timeout panic skips t.Cleanup.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
