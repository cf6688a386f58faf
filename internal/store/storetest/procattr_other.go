//go:build !linux

package storetest

import "syscall"

func procAttr() *syscall.SysProcAttr { return nil }
