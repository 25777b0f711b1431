package vfstest

// HeldSync is a disk whose syncfs does not return until Release is closed
// (a file system that has a lot to write out, a network file system that
// hangs), then syncs Mem.
type HeldSync struct {
	*Mem
	Release chan struct{}
}

func (h HeldSync) SyncFS(name string) error {
	<-h.Release
	return h.Mem.SyncFS(name)
}
