// Package dtl is the Distributed Transaction Log: a copy, on another
// host, of each vDisk's TLog records and data that are not yet on the
// backend, so that losing the owner's host loses none of them.
//
// # Pieces
//
//   - Core (core.go) is the server's protocol logic as a pure state
//     machine: sessions, owner epochs (fencing), which record positions
//     of which TLogs are held. Server (server.go) drives it over TCP or
//     TLS, with Store (store.go) as its disk.
//   - Tracker (tracker.go) is one vDisk's owner side as a pure state
//     machine: it numbers entries (LSNs), knows which are held, and says
//     when a write (sync) or a flush (async and sync) may return. Client
//     and Stream (client.go) drive it: one session per peer, vDisks
//     multiplexed over it, a catch-up from local flash after every new
//     session.
//   - Replicator (replicator.go) is a Client as volume.Replicator.
//
// # Owner obligations
//
//  1. Read back (Client.ReadBack) before attaching any vDisk: a takeover
//     reads everything the DTL holds before it appends (ARCHITECTURE.md,
//     "Owners, epochs and fencing").
//  2. Ship an entry only after its records and data are on local flash:
//     a catch-up reads them from there.
//  3. Trim a TLog only after a manifest naming it is on the backend.
//
// # Wire format
//
// Every message is one frame:
//
//	len:4 | type:1 | payload | crc32c(type|payload):4
//
// (little endian; len counts type and payload, at most MaxFrame). An
// Append carries records as the owner's TLog holds them (32 bytes each)
// followed by the data of its write records:
//
//	vdisk:8 | lsn:8 | seq:4 | rec0:4 | n:4 | n × record:32 | data
//
// A session: Hello(epoch) → Welcome | Refuse; per vDisk Open → Have (the
// held runs, so that a catch-up sends only what is lacking); then Append →
// Ack, Sync → Synced (after the server's fsync), Trim, Drop. An Ack is
// cumulative: it names the last LSN of the Appends it answers and counts
// them, so that one Ack answers a whole burst. A restore:
// List → Listing; Fetch → Entry… FetchEnd. A lower epoch than the highest
// seen for the vPool is refused with RefuseFenced.
//
// # Durability order
//
// The server appends an entry to its TLog's log file before it sends the
// Ack (a kill -9 of the server loses no acknowledged entry), syncs before
// Synced, and makes a new owner epoch durable before Welcome.
//
// dtl imports the standard library, vfs (its disk) and volume (whose
// Replicator it implements); volume never imports dtl.
package dtl
