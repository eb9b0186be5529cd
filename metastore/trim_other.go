//go:build !linux

package metastore

// trimLoop does nothing where the resident set of mapped tables cannot be
// trimmed (see trim_linux.go).
func (b *Badger) trimLoop(stop <-chan struct{}) { <-stop }
