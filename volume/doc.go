// Package volume is vpool's vDisk engine: per vDisk a log-structured
// write path (SCOs + TLogs on local flash), a block map kept in an
// embedded store with a bounded in-memory page cache, a read path through
// the write buffer, the read cache and partial backend reads, background
// upload to the backend, and recovery after a crash or the loss of local
// flash.
//
// # Caller's obligations
//
//  1. Open a Pool once per vPool with its Deps; Close it on shutdown.
//  2. WriteAt, ReadAt, Discard and Flush may be called concurrently on one
//     VDisk; Resize excludes them while it runs.
//  3. Writes are inside the vDisk: grow it with Resize first.
//  4. Delete a vDisk only when no I/O on it is in flight.
//
// # Write path
//
// A write takes the stripe locks of its clusters: shared for whole
// clusters, exclusive for a partial one, so that a read-modify-write
// cannot lose a concurrent write to the same cluster (stripes.go). It
// reserves write-buffer space (this is where backpressure
// slows or blocks it), and under the vDisk's mutex reserves SCO slots and
// TLog record positions and a ticket. The SCO data and TLog records are
// then written outside the mutex; the block map is changed under it; the
// ticket is marked done. The watermark is the end of the longest prefix
// of done tickets: every record before it is in the block map.
//
// All-zero clusters are not stored: they become Unmap records.
//
// # Durability order
//
// Two stores: the catalog (Catalog: vDisk records, snapshots, epochs,
// upload state), whose commits are durable when they return, and the
// block-map store (MetaStore), a cache of the TLogs that a power loss may
// set back to an older, consistent state.
//
//   - A write returns after its data and records are in the page cache
//     (pwrite): it survives kill -9.
//   - Flush fsyncs every SCO and TLog file not yet synced; concurrent
//     flushes share one (group commit). It never waits for the backend.
//   - The block map in the store is written back (dirty pages + marker, in
//     one atomic commit) only after a Flush that covers every record the
//     pages show: the store never holds a mapping whose record could be
//     lost. Replay from the marker is idempotent for whatever the stored
//     pages already show, so the marker may lag.
//   - A TLog is created with its header synced before its name is synced.
//   - An SCO is uploaded before its TLog, and the TLog before the manifest
//     that names it, and the manifest before the upload state that says
//     so is committed to the catalog; only then is the SCO disposable and
//     leaves local flash. The local TLog file stays until the stored
//     marker passes it; a marker set back by a power loss replays the
//     TLogs it no longer passes from the backend.
//   - A snapshot, rollback, template or clone is acknowledged after its
//     catalog commit; a snapshot's TLogs are flushed before it. A
//     rollback or flatten syncs the block-map store before the catalog
//     says it is done.
//   - A deletion commits the record's Deleting mark first and removes the
//     record last, after the block map's keys (synced).
//   - A manifest generation is written before the previous one is deleted.
//
// # Formats
//
// SCO: the cluster data, slot after slot (slot n at n*clusterSize).
//
// TLog (local file and backend object <vpool>/<id>/tlog/<n>):
//
//	+-------------------------------+
//	| header (64): "VPTLOG1\0",     |
//	|   vdisk u64, seq u32,         |
//	|   cluster size u32, ..., crc  |
//	+-------------------------------+
//	| record 0 (32 bytes)           |  type u8, 0, owner u16, sco u32,
//	| record 1                      |  cluster/size u64, slot/count u32,
//	| ...                           |  data crc u32, 0 u32, record crc u32
//	| seal record                   |  (sealed TLogs end with one)
//	+-------------------------------+
//
// Record positions are handed out in order but written concurrently, so
// a crash can leave holes (zeros) or torn records: replay skips any record
// whose CRC fails. For TLogs that may not have been flushed before a power
// loss, every write record's data CRC is checked against its SCO at
// recovery and records whose data is missing are erased.
//
// Block map: pages of 64 entries of 16 bytes (sco u32, slot u32, data crc
// u32, owner u16, 0 u16) under key 'm'+id+page in the block-map store;
// the marker (TLog seq u32, record u32, size u64, allocated clusters u64)
// under 'w'+id. In the catalog: upload state under 'u'+id, the vDisk's
// record (settings, snapshots, epoch) under 'v'+id.
//
// Manifest (<vpool>/<id>/manifest.<generation>): "VPMANIF1", length u32,
// JSON (Manifest), crc u32.
//
// # Recovery
//
// Open finds vDisks in the catalog, in local TLog directories and in backend
// manifests. For each: settings from the store, or from the newest
// readable manifest when local flash was lost; then every TLog from the
// stored marker's on is replayed, read from local flash or else from the
// backend; then SCOs not yet uploaded are queued again.
//
// This package imports vpool/flashcache and vpool/vfs; the backend and the
// metadata stores are the interfaces Backend, Catalog and MetaStore.
package volume
