//go:build !linux

package httpstore

import "os"

func openBlob(path string) (*os.File, error) { return os.Open(path) }
