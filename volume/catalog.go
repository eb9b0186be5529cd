package volume

import (
	"encoding/json"
	"fmt"
)

// Catalog is the truth about a vPool besides its data: vDisk records
// (settings, snapshots, epochs, templates, clones) and upload state here,
// and the namespace (package fs). Unlike the block-map store, which is a
// cache that TLogs rebuild, nothing can rebuild what the catalog forgets,
// so a commit is durable when it returns (metastore.Catalog: badger with
// synced writes on one host; a cluster store when a vPool spans hosts).
// Every key has a revision; a commit may be made conditional on the
// revisions it read (compare-and-set).
type Catalog interface {
	// Get returns key's value and revision.
	Get(key []byte) (value []byte, rev uint64, found bool, err error)
	// Commit applies ops atomically and durably if every condition
	// holds; ok is false, and nothing is applied, when one does not.
	Commit(conds []CatalogCond, ops []MetaOp) (ok bool, err error)
	// Scan calls fn for each key with prefix that is >= start,
	// ascending, until fn returns false. key and value are valid only
	// during fn.
	Scan(prefix, start []byte, fn func(key, value []byte) bool) error
	Close() error
}

// CatalogCond is a condition of a catalog commit: Key still has revision
// Rev (0: Key is absent). Like MetaOp, an alias of a plain struct.
type CatalogCond = struct {
	Key []byte
	Rev uint64
}

// CatalogPrefixes are the first key bytes of what the engine keeps in the
// catalog (for moving them out of a store of an older layout, which held
// everything).
var CatalogPrefixes = [][]byte{{metaKeyVDisk}, {metaKeyUpload}}

// commitCatalog applies ops to the catalog unconditionally.
func (p *Pool) commitCatalog(ops []MetaOp) error {
	_, err := p.catalog.Commit(nil, ops)
	return err
}

// updateRecordLocked rewrites the vDisk's record in the catalog, with a
// compare-and-set on the revision it read (retried when another change of
// the record came between); the caller holds v.recMu. It is durable when
// it returns.
func (v *VDisk) updateRecordLocked(fn func(*vdiskRecord)) error {
	key := metaKey(metaKeyVDisk, v.id)
	for range 16 {
		b, rev, ok, err := v.pool.catalog.Get(key)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: %s", ErrNotFound, FormatID(v.id))
		}
		var rec vdiskRecord
		if err := json.Unmarshal(b, &rec); err != nil {
			return errCorruptf("vDisk record: %v", err)
		}
		fn(&rec)
		rb, _ := json.Marshal(rec)
		ok, err = v.pool.catalog.Commit([]CatalogCond{{Key: key, Rev: rev}}, []MetaOp{{Key: key, Value: rb}})
		if err != nil {
			return fmt.Errorf("volume: vDisk %s: store record: %w", FormatID(v.id), err)
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("volume: vDisk %s: store record: it kept changing under 16 tries", FormatID(v.id))
}

// saveUploadState stores the upload state as it is now. It is durable
// when it returns: only then may what it allows (an SCO leaving flash, the
// DTL dropping records) happen. Commits are serialised and each reads the
// newest state, so the stored state never goes back.
func (v *VDisk) saveUploadState() error {
	v.upStateMu.Lock()
	defer v.upStateMu.Unlock()
	v.mu.Lock()
	u := uploadState{v.mu.uploadedThrough, v.mu.syncedThrough, v.mu.manifestGen}
	v.mu.Unlock()
	return v.pool.commitCatalog([]MetaOp{{Key: metaKey(metaKeyUpload, v.id), Value: u.encode()}})
}

// syncBlockMap makes the stored block map survive a power loss, before a
// catalog change that relies on it: the catalog must never say a rollback
// or a flatten is done while the store could still go back to the map
// from before it.
func (v *VDisk) syncBlockMap() error {
	if err := v.pool.meta.Sync(); err != nil {
		return fmt.Errorf("volume: vDisk %s: sync block map: %w", FormatID(v.id), err)
	}
	return nil
}
