package volume

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"
)

// Manifest is the vDisk's record on the backend: enough, with the TLogs it
// names, to rebuild the vDisk on a new host. A new generation is written
// before the previous one is deleted, so a crash leaves one valid.
type Manifest struct {
	VDisk           string    `json:"vdisk"` // 16 hex digits
	Generation      uint64    `json:"generation"`
	UploadedThrough uint32    `json:"uploaded_through"` // TLogs 1..n (and their SCOs) are on the backend
	ClusterSize     int64     `json:"cluster_size"`
	SCOSize         int64     `json:"sco_size"`
	Size            int64     `json:"size"` // as of the last upload
	Created         time.Time `json:"created"`
	Deleting        bool      `json:"deleting,omitempty"`
	Template        bool      `json:"template,omitempty"`
	// Epoch is the head's epoch; Snapshots the live snapshots, oldest first.
	Epoch     uint32         `json:"epoch,omitempty"`
	Snapshots []SnapshotInfo `json:"snapshots,omitempty"`
	// Dead are the TLogs that rollbacks undid: a rebuild skips them.
	Dead []TLogRange `json:"dead_tlogs,omitempty"`
	// Parent is the snapshot a clone reads through to.
	Parent *ParentRef `json:"parent,omitempty"`
}

const manifestMagic = "VPMANIF1"

func encodeManifest(m *Manifest) []byte {
	body, err := json.Marshal(m)
	if err != nil {
		panic(err) // a struct of plain fields always marshals
	}
	b := make([]byte, 8+4+len(body)+4)
	copy(b, manifestMagic)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(body)))
	copy(b[12:], body)
	binary.LittleEndian.PutUint32(b[12+len(body):], checksum(b[:12+len(body)]))
	return b
}

func decodeManifest(b []byte) (*Manifest, error) {
	if len(b) < 16 || string(b[:8]) != manifestMagic {
		return nil, errCorruptf("manifest magic")
	}
	n := binary.LittleEndian.Uint32(b[8:])
	if uint64(n)+16 != uint64(len(b)) {
		return nil, errCorruptf("manifest length %d in %d bytes", n, len(b))
	}
	if binary.LittleEndian.Uint32(b[12+n:]) != checksum(b[:12+n]) {
		return nil, errCorruptf("manifest checksum")
	}
	m := &Manifest{}
	if err := json.Unmarshal(b[12:12+n], m); err != nil {
		return nil, errCorruptf("manifest body: %v", err)
	}
	if _, err := parseID(m.VDisk); err != nil {
		return nil, errCorruptf("manifest vdisk id %q", m.VDisk)
	}
	if err := checkGeometry(m.ClusterSize, m.SCOSize); err != nil {
		return nil, errCorruptf("manifest geometry: %v", err)
	}
	return m, nil
}

// FormatID is how a vDisk id is written in names and logs.
func FormatID(id uint64) string { return fmt.Sprintf("%016x", id) }

func parseID(s string) (uint64, error) {
	var id uint64
	if len(s) != 16 {
		return 0, fmt.Errorf("%w: vDisk id %q", ErrNotFound, s)
	}
	if _, err := fmt.Sscanf(s, "%016x", &id); err != nil || id == 0 {
		return 0, fmt.Errorf("%w: vDisk id %q", ErrNotFound, s)
	}
	return id, nil
}

// ParseID reads a vDisk id written by FormatID.
func ParseID(s string) (uint64, error) { return parseID(s) }
