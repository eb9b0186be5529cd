// Package holder makes a vPool's backend (its ASDs or its bucket) held by
// one daemon at a time, until several hosts can serve one vPool.
//
// A holder is a data dir: its identity is a random id kept there. The
// backend keeps holder records, one object per epoch:
//
//	<vpool>/holder.<epoch, 20 digits>   {"id", "epoch", "host", "data_dir", "pid", "since", "released"}
//
// each written with Create (If-None-Match: *), so that two daemons racing
// for the same epoch cannot both win. The newest record says who holds the
// backend:
//
//   - none, or a released one (its holder stopped cleanly): a daemon
//     claims it by writing the next epoch;
//   - its own id: a restart of the holder, which goes on with that epoch;
//   - another id: the daemon refuses to start (ErrHeld), naming the holder,
//     unless told to take over (vpool serve --takeover), which writes the
//     next epoch. Without a cluster nothing can tell a dead holder from a
//     slow one, so taking over is the operator's call.
//
// A holder that was taken over finds the newer epoch when it next looks
// (Check, every few seconds while it serves, and before every manifest
// it writes, through Guard), and from then on writes nothing to the
// backend (ErrFenced): its successor's objects are safe from it.
//
// Known gap: between two looks, a fenced holder may still upload an SCO
// or TLog under a name its successor also writes. Closing it needs the
// epoch in every object's name or conditional creates of SCOs, which is
// the next step of the ownership work (ARCHITECTURE.md, "Owners, epochs
// and fencing").
package holder

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"vpool/vfs"
	"vpool/volume/backend"
)

// Errors; test with errors.Is.
var (
	// ErrHeld: another daemon holds the backend.
	ErrHeld = errors.New("backend held by another daemon")
	// ErrFenced: another daemon took the backend over from this one.
	ErrFenced = errors.New("backend taken over by another daemon: this one may no longer write to it")
	// ErrNotClaimed: the backend was unreachable when this daemon started
	// and has not been claimed since; writes to it wait (retry).
	ErrNotClaimed = errors.New("backend not claimed yet (unreachable since the start)")
)

// Record is one epoch's holder.
type Record struct {
	ID       string    `json:"id"`
	Epoch    uint64    `json:"epoch"`
	Host     string    `json:"host"`
	DataDir  string    `json:"data_dir"`
	PID      int       `json:"pid"`
	Since    time.Time `json:"since"`
	Released bool      `json:"released,omitempty"`
}

func (r Record) String() string {
	return fmt.Sprintf("%s (data dir %s, pid %d) since %s, epoch %d", r.Host, r.DataDir, r.PID,
		r.Since.Local().Format(time.DateTime), r.Epoch)
}

// Holder is this daemon's hold on a backend.
type Holder struct {
	store   backend.Store
	pool    string
	mu      sync.Mutex
	me      Record
	claimed bool
	by      *Record // set once fenced: who took over
}

// New returns the hold of me (its ID, Host, DataDir and PID set) on the
// pool's backend, not claimed yet.
func New(store backend.Store, pool string, me Record) *Holder {
	return &Holder{store: store, pool: pool, me: me}
}

func recordName(pool string, epoch uint64) string { return fmt.Sprintf("%s/holder.%020d", pool, epoch) }

// newest returns the newest holder record (nil: none).
func newest(ctx context.Context, store backend.Store, pool string) (*Record, error) {
	names, err := store.List(ctx, pool+"/holder.")
	if err != nil {
		return nil, fmt.Errorf("holder: list holder records: %w", err)
	}
	for i := len(names) - 1; i >= 0; i-- {
		if _, err := strconv.ParseUint(strings.TrimPrefix(names[i], pool+"/holder."), 10, 64); err != nil {
			continue
		}
		n, err := store.Size(ctx, names[i])
		if errors.Is(err, backend.ErrNotFound) {
			continue // deleted meanwhile (older records are trimmed)
		}
		if err != nil {
			return nil, fmt.Errorf("holder: %s: %w", names[i], err)
		}
		b := make([]byte, n)
		if err := store.GetRange(ctx, names[i], b, 0); err != nil {
			return nil, fmt.Errorf("holder: %s: %w", names[i], err)
		}
		var r Record
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("holder: %s: unreadable record: %w", names[i], err)
		}
		return &r, nil
	}
	return nil, nil
}

// Claim takes the backend, or says who holds it (ErrHeld, with their
// record). takeover claims it from another holder. It returns the record
// it found (nil: none).
func (h *Holder) Claim(ctx context.Context, takeover bool) (*Record, error) {
	h.mu.Lock()
	me := h.me
	h.mu.Unlock()
	for attempt := 0; ; attempt++ {
		cur, err := newest(ctx, h.store, h.pool)
		if err != nil {
			return nil, err
		}
		switch {
		case cur != nil && cur.ID == me.ID && !cur.Released:
			h.claim(*cur) // a restart: same epoch
			return cur, nil
		case cur != nil && !cur.Released && !takeover:
			return cur, fmt.Errorf("%w: %s; if that daemon is gone for good, start this one with --takeover", ErrHeld, cur)
		}
		me.Epoch, me.Since = 1, time.Now().UTC()
		if cur != nil {
			me.Epoch = cur.Epoch + 1
		}
		err = h.write(ctx, me)
		if errors.Is(err, backend.ErrExists) && attempt < 3 {
			continue // another daemon wrote that epoch first: look again
		}
		if err != nil {
			return cur, err
		}
		h.claim(me)
		h.trim(ctx)
		return cur, nil
	}
}

func (h *Holder) claim(r Record) {
	h.mu.Lock()
	h.me, h.claimed = r, true
	h.mu.Unlock()
}

// Claimed reports whether the backend is this daemon's.
func (h *Holder) Claimed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.claimed && h.by == nil
}

func (h *Holder) write(ctx context.Context, r Record) error {
	b, _ := json.Marshal(r)
	if err := h.store.Create(ctx, recordName(h.pool, r.Epoch), bytes.NewReader(b), int64(len(b))); err != nil {
		return fmt.Errorf("holder: write epoch %d: %w", r.Epoch, err)
	}
	return nil
}

// trim deletes records older than the previous epoch (best effort).
func (h *Holder) trim(ctx context.Context) {
	epoch := h.Epoch()
	names, err := h.store.List(ctx, h.pool+"/holder.")
	if err != nil {
		return
	}
	for _, n := range names {
		if e, err := strconv.ParseUint(strings.TrimPrefix(n, h.pool+"/holder."), 10, 64); err == nil && e+1 < epoch {
			h.store.Delete(ctx, n)
		}
	}
}

// Epoch is the epoch this daemon holds the backend at (0: not claimed).
func (h *Holder) Epoch() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.me.Epoch
}

// Check looks at the newest record: ErrFenced once another daemon has
// taken over (and from then on, without looking).
func (h *Holder) Check(ctx context.Context) error {
	h.mu.Lock()
	by, me, claimed := h.by, h.me, h.claimed
	h.mu.Unlock()
	if by != nil {
		return fmt.Errorf("%w: by %s", ErrFenced, by)
	}
	if !claimed {
		return ErrNotClaimed
	}
	cur, err := newest(ctx, h.store, h.pool)
	if err != nil {
		return err // unreachable: no news either way
	}
	if cur != nil && cur.Epoch > me.Epoch && cur.ID != me.ID {
		h.mu.Lock()
		h.by = cur
		h.mu.Unlock()
		return fmt.Errorf("%w: by %s", ErrFenced, cur)
	}
	return nil
}

// Fenced reports the holder that took over, or nil.
func (h *Holder) Fenced() *Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.by
}

// Release marks the backend free (a clean stop): the next epoch's record
// says released, so that a daemon on another data dir (a restore) claims
// it without --takeover.
func (h *Holder) Release(ctx context.Context) error {
	if !h.Claimed() {
		return nil // not ours to release
	}
	h.mu.Lock()
	r := h.me
	h.mu.Unlock()
	r.Epoch++
	r.Released, r.Since = true, time.Now().UTC()
	if err := h.write(ctx, r); err != nil {
		return err
	}
	h.mu.Lock()
	h.me.Epoch, h.claimed = r.Epoch, false
	h.mu.Unlock()
	h.trim(ctx)
	return nil
}

// Guard wraps store so that, once this holder is fenced, nothing more is
// written or deleted (ErrFenced), and every manifest Create looks first.
func (h *Holder) Guard(store backend.Store) backend.Store { return &guarded{Store: store, h: h} }

type guarded struct {
	backend.Store
	h *Holder
}

func (g *guarded) fenced() error {
	g.h.mu.Lock()
	defer g.h.mu.Unlock()
	switch {
	case g.h.by != nil:
		return fmt.Errorf("%w: by %s", ErrFenced, g.h.by)
	case !g.h.claimed:
		return ErrNotClaimed
	}
	return nil
}

func (g *guarded) Put(ctx context.Context, name string, src io.ReaderAt, size int64) error {
	if err := g.fenced(); err != nil {
		return err
	}
	return g.Store.Put(ctx, name, src, size)
}

func (g *guarded) Create(ctx context.Context, name string, src io.ReaderAt, size int64) error {
	// Creates are manifests, namespace backups and holder records: the
	// points where what this daemon wrote becomes what a restore reads.
	if err := g.h.Check(ctx); errors.Is(err, ErrFenced) || errors.Is(err, ErrNotClaimed) {
		return err
	}
	return g.Store.Create(ctx, name, src, size)
}

func (g *guarded) Delete(ctx context.Context, name string) error {
	if err := g.fenced(); err != nil {
		return err
	}
	return g.Store.Delete(ctx, name)
}

// ID returns the data dir's holder id, making it at the first start.
func ID(dataDir string) (string, error) {
	p := filepath.Join(dataDir, "holder-id")
	if b, err := os.ReadFile(p); err == nil {
		if id := strings.TrimSpace(string(b)); len(id) == 32 {
			return id, nil
		}
		return "", fmt.Errorf("holder: %s is damaged; remove it to make this data dir a new holder (needs --takeover)", p)
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("holder: %w", err)
	}
	var raw [16]byte
	rand.Read(raw[:])
	id := hex.EncodeToString(raw[:])
	if err := vfs.WriteFileDurably(vfs.OS{}, p, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("holder: write %s: %w", p, err)
	}
	return id, nil
}
