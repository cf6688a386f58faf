package pack

// WithSpoolMemory sets how much small-file content Layers keeps in memory
// before it spills to a temporary file (tests exercise the spill).
func WithSpoolMemory(opt Options, n int64) Options {
	opt.spoolMemory = n
	return opt
}
