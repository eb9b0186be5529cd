package main

import (
	"log/slog"
	"path/filepath"
	"testing"

	"vpool/metastore"
)

// A data dir of the layout before the catalog was split out (vDisk
// records, upload state and the namespace in meta/) opens with those
// records moved into catalog/, and the block map left where it was.
func TestOpenStoresMovesRecordsIntoTheCatalog(t *testing.T) {
	dir := t.TempDir()
	old, err := metastore.OpenBadger(filepath.Join(dir, "meta"), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{"v12345678", "u12345678", "nsuper", "ni00000001"}
	var ops []metastore.Op
	for _, k := range append(keys, "m12345678page", "w12345678") {
		ops = append(ops, metastore.Op{Key: []byte(k), Value: []byte("x")})
	}
	if err := old.Commit(ops); err != nil {
		t.Fatal(err)
	}
	old.Close()
	meta, cat, err := openStores(dir, 1<<20, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	defer cat.Close()
	for _, k := range keys {
		if _, _, ok, _ := cat.Get([]byte(k)); !ok {
			t.Errorf("%s not in the catalog", k)
		}
		if _, ok, _ := meta.Get([]byte(k)); ok {
			t.Errorf("%s left in the block-map store", k)
		}
	}
	for _, k := range []string{"m12345678page", "w12345678"} {
		if _, ok, _ := meta.Get([]byte(k)); !ok {
			t.Errorf("block-map key %s moved", k)
		}
	}
}
