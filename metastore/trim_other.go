//go:build !linux

package metastore

// startTrimmer does nothing where the resident set of mapped tables cannot
// be trimmed (see trim_linux.go).
func (b *Badger) startTrimmer() {}
