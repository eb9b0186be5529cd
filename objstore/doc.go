// Package objstore is vpool's backend: a store of immutable, checksummed
// objects (sealed SCOs, TLogs, manifests) with put, ranged get, delete and
// list by prefix.
//
// Two implementations share one contract, checked by one conformance suite:
//
//   - Mem: in memory, for tests; it can be told to fail or stall.
//   - EC: a local erasure-coded store over N directories ("ASDs", one per
//     capacity disk). Each object is cut into stripes of k fragments of the
//     preset's fragment size; m parity fragments are added per stripe with
//     Reed-Solomon (klauspost/reedsolomon), and the k+m fragments of a
//     stripe go to k+m distinct ASDs.
//
// # Caller's obligations
//
//  1. An object name is written once. Put may be repeated with the same
//     content (an upload retried after a crash); it replaces the object
//     whole: a Put that fails or is cut short by a crash leaves the
//     previous object readable (EC: the new fragments are written beside
//     the old ones and then switched in, see geometry in ec.go).
//  2. A reader asks only for ranges inside the object (ErrRange otherwise).
//  3. Delete is idempotent; a name may be reused after Delete.
//
// # EC fragment file
//
// One file per fragment, <asd>/objects/<escaped object name>/<stripe>.<index>
// (".tmp" while a Put writes it, ".new" while it is switched in):
//
//	+----------------------+  offset 0
//	| header (64 bytes)    |  magic, object size, geometry, nonce, CRC
//	+----------------------+  64
//	| block 0: 4096 data   |  + 4-byte CRC-32C of the block
//	| block 1: 4096 data   |  + 4-byte CRC-32C
//	| ...                  |
//	| last block: <=4096   |  + 4-byte CRC-32C
//	+----------------------+
//
// A range read touches only the data fragments that cover the range and
// verifies only the blocks it reads. Reed-Solomon works column by column,
// so a missing or corrupt fragment is rebuilt for the needed block range
// only, from the same range of any k other fragments of its stripe. Every
// object has a random nonce written in all its fragments, so a stale
// fragment left by an ASD that was away during a Delete is never mixed
// into a newer object of the same name.
//
// This package imports only the standard library and reedsolomon.
package objstore
