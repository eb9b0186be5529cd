package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"vpool/objstore"
	"vpool/objstore/s3"
	"vpool/vfs"
	"vpool/volume/backend"
	"vpool/volume/holder"
)

// check refuses a backend section that cannot work, naming the key.
func (b *BackendConfig) check() error {
	switch b.Type {
	case "local":
		return nil
	case "s3":
	default:
		return fmt.Errorf("config: backend.type %q: want local or s3", b.Type)
	}
	s := &b.S3
	for _, k := range []struct{ key, val string }{{"backend.s3.endpoint", s.Endpoint}, {"backend.s3.bucket", s.Bucket},
		{"backend.s3.access_key", s.AccessKey}} {
		if k.val == "" {
			return fmt.Errorf("config: %s is empty (backend.type is s3)", k.key)
		}
	}
	if len(b.ASDs) > 0 {
		return errors.New("config: backend.asds is set but backend.type is s3: the ASDs are the local backend's")
	}
	if s.SecretKeyFile != "" {
		if s.SecretKey != "" {
			return errors.New("config: both backend.s3.secret_key_file and VPOOL_BACKEND_S3_SECRET_KEY are set: give the secret once")
		}
		raw, err := os.ReadFile(s.SecretKeyFile)
		if err != nil {
			return fmt.Errorf("config: backend.s3.secret_key_file: %w", err)
		}
		s.SecretKey = strings.TrimSpace(string(raw))
	}
	if s.SecretKey == "" {
		return errors.New("config: no S3 secret key: name a file holding it with backend.s3.secret_key_file, or set VPOOL_BACKEND_S3_SECRET_KEY")
	}
	return nil
}

// backendStore is the vPool's backend, watched for its health, with the
// concrete store for what only it can say.
type backendStore struct {
	*objstore.Watched
	kind string
	ec   *objstore.EC // backend.type local
	// healer runs the local backend's repair and verify passes
	healer *objstore.Healer
	s3     *s3.Store // backend.type s3
}

func openBackend(ctx context.Context, c *Config, log *slog.Logger) (*backendStore, error) {
	if c.Backend.Type == "s3" {
		cfg := c.Backend.S3
		st, err := s3.New(s3.Config{Endpoint: cfg.Endpoint, Bucket: cfg.Bucket, Region: cfg.Region, AccessKey: cfg.AccessKey,
			SecretKey: cfg.SecretKey, Timeout: cfg.Timeout, PartSize: int64(cfg.PartSize), Log: log})
		if err != nil {
			return nil, fmt.Errorf("config: backend.s3: %w", err)
		}
		b := &backendStore{Watched: objstore.Watch(st), kind: "s3 " + cfg.Endpoint + "/" + cfg.Bucket, s3: st}
		cctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
		if err := st.Check(cctx); err != nil {
			// Writes go on into the write buffer; uploads retry.
			log.Warn("vpool: S3 backend unreachable at start: writes are buffered and uploads retry until it answers",
				"endpoint", cfg.Endpoint, "bucket", cfg.Bucket, "err", err)
		}
		return b, nil
	}
	// The data dir remembers the pool its ASDs carry, so that ASDs
	// without it (disks not mounted) are never written to.
	idFile := filepath.Join(c.DataDir, "asd-pool-id")
	known := ""
	if b, err := os.ReadFile(idFile); err == nil {
		known = strings.TrimSpace(string(b))
	}
	ec, err := objstore.OpenECPool(c.Backend.ASDs, objstore.Preset{Data: c.Backend.Preset.Data,
		Parity: c.Backend.Preset.Parity, FragmentSize: int64(c.Backend.Preset.FragmentSize)}, known, log)
	if err != nil {
		return nil, err
	}
	if known == "" {
		if err := vfs.WriteFileDurably(vfs.OS{}, idFile, []byte(ec.PoolID()+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
	}
	kind := fmt.Sprintf("local %d+%d over %d ASDs", c.Backend.Preset.Data, c.Backend.Preset.Parity, len(c.Backend.ASDs))
	healer := objstore.NewHealer(ec, filepath.Join(c.DataDir, "backend-pass.json"), int64(c.Backend.Repair.Rate), log)
	return &backendStore{Watched: objstore.Watch(ec), kind: kind, ec: ec, healer: healer}, nil
}

var _ backend.Store = (*backendStore)(nil)

// noCapacity is what df shows of a store that does not say its size (S3).
const noCapacity = 1 << 50

// usage is the backend's raw capacity; an S3 bucket has no size of its own.
func (b *backendStore) usage(ctx context.Context) (objstore.Usage, error) {
	if b.ec == nil {
		return objstore.Usage{TotalBytes: noCapacity, FreeBytes: noCapacity, DataFraction: 1}, nil
	}
	return b.ec.Usage(ctx)
}

func (b *backendStore) repairedReads() int64 {
	if b.ec == nil {
		return 0
	}
	return b.ec.RepairedReads()
}

// setReserve makes new fragments leave room for the metadata stores (a
// local backend's ASDs may share the data dir's filesystem).
func (b *backendStore) setReserve(n int64) {
	if b.ec != nil {
		b.ec.SetReserve(n)
	}
}

// claimBackend takes the backend for this data dir (see volume/holder),
// or refuses: another daemon holds it. A backend that does not answer at
// start is claimed later by watchHolder if this data dir has served
// before; uploads wait until then.
func claimBackend(ctx context.Context, c *Config, be *backendStore, takeover bool, log *slog.Logger) (*holder.Holder, error) {
	_, err := os.Stat(filepath.Join(c.DataDir, "catalog"))
	servedBefore := err == nil
	id, err := holder.ID(c.DataDir)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	h := holder.New(be, c.Name, holder.Record{ID: id, Host: host, DataDir: c.DataDir, PID: os.Getpid()})
	cctx, cancel := context.WithTimeout(ctx, claimTimeout)
	prev, err := h.Claim(cctx, takeover)
	cancel()
	switch {
	case err == nil:
		if prev != nil && prev.ID != id && !prev.Released {
			log.Warn("vpool: took the backend over", "from", prev.String(), "epoch", h.Epoch())
		}
		return h, nil
	case errors.Is(err, holder.ErrHeld):
		return nil, fmt.Errorf("%s: %w", be.kind, err)
	case servedBefore && !takeover:
		log.Warn("vpool: backend unreachable at start: serving from local state; uploads wait until it answers and is claimed",
			"backend", be.kind, "err", err)
		return h, nil
	}
	return nil, fmt.Errorf("claim the backend %s (needed before a new data dir serves it): %w", be.kind, err)
}

// claimTimeout bounds the claim at start; holderCheck is how often a
// serving daemon looks whether it still holds the backend.
const (
	claimTimeout = 60 * time.Second
	holderCheck  = 10 * time.Second
)

// watchHolder claims a backend that was unreachable at start, and then
// looks every holderCheck whether another daemon took it over; it sends
// the reason on fenced when this daemon must stop.
func watchHolder(ctx context.Context, h *holder.Holder, log *slog.Logger, fenced chan<- error) {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	every(ctx, holderCheck, func() {
		var err error
		if !h.Claimed() {
			if _, err = h.Claim(ctx, false); err == nil {
				log.Info("vpool: backend claimed; uploads go on", "epoch", h.Epoch())
			}
		} else {
			err = h.Check(ctx)
		}
		if errors.Is(err, holder.ErrHeld) || errors.Is(err, holder.ErrFenced) {
			fenced <- err
			stop()
		}
	})
}

// releaseBackend lets the backend go at a clean stop when everything is
// on it, so that a restore on another data dir needs no --takeover; with
// writes not uploaded yet, this data dir keeps it.
func releaseBackend(e *engine, closeErr error, log *slog.Logger) {
	if !e.holder.Claimed() {
		return
	}
	if pending := e.wb.Stats().UsedBytes; pending > 0 || closeErr != nil || e.ns != nil && !e.ns.BackedUp() {
		log.Info("vpool: this data dir keeps holding the backend: not everything is on it yet",
			"not_uploaded", Size(pending).String(), "close_error", closeErr)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.holder.Release(ctx); err != nil {
		log.Warn("vpool: release the backend", "err", err)
	}
}

// BackendStatus is the backend's part of vpool status.
type BackendStatus struct {
	Kind         string     `json:"kind"`
	Holder       string     `json:"holder"` // this daemon's hold: "epoch N", "not claimed", "taken over by ..."
	OK           bool       `json:"ok"`
	FailingSince *time.Time `json:"failing_since,omitempty"`
	LastError    string     `json:"last_error,omitempty"`
	Failures     int64      `json:"failures"`
	Requests     *S3Stats   `json:"s3,omitempty"`
	// the local backend's ASDs, and objects written without full
	// redundancy (too few writable ASDs) since the start
	ASDs         []objstore.ASDStatus `json:"asds,omitempty"`
	DegradedPuts int64                `json:"degraded_puts,omitempty"`
	// the repair or verify pass running, and the last one finished
	Pass     *objstore.PassStatus `json:"pass,omitempty"`
	LastPass *objstore.PassStatus `json:"last_pass,omitempty"`
}

// S3Stats counts an S3 backend's requests.
type S3Stats struct {
	Gets     int64 `json:"gets"`
	GetBytes int64 `json:"get_bytes"`
	Puts     int64 `json:"puts"`
	PutBytes int64 `json:"put_bytes"`
	Lists    int64 `json:"lists"`
	Deletes  int64 `json:"deletes"`
}

func (b *backendStore) status(hd *holder.Holder) *BackendStatus {
	h := b.Health()
	st := &BackendStatus{Kind: b.kind, OK: h.OK, LastError: h.LastError, Failures: h.Failures}
	switch {
	case hd.Fenced() != nil:
		st.Holder = "TAKEN OVER by " + hd.Fenced().String() + ": this daemon no longer writes to it"
	case !hd.Claimed():
		st.Holder = "not claimed yet (unreachable since the start): uploads wait"
	default:
		st.Holder = fmt.Sprintf("held by this daemon, epoch %d", hd.Epoch())
	}
	if !h.OK {
		st.FailingSince = &h.FailingSince
	}
	if b.ec != nil {
		st.ASDs, st.DegradedPuts = b.ec.ASDs(), b.ec.DegradedPuts()
		st.Pass, st.LastPass = b.healer.Status()
	}
	if b.s3 != nil {
		s := b.s3.Stats()
		st.Requests = &S3Stats{Gets: s.Gets.Load(), Puts: s.Puts.Load(), Lists: s.Lists.Load(), Deletes: s.Deletes.Load(),
			GetBytes: s.GetBytes.Load(), PutBytes: s.PutBytes.Load()}
	}
	return st
}

func printBackend(w io.Writer, st *Status) {
	b := st.Backend
	if b == nil {
		return
	}
	state := "ok"
	if b.FailingSince != nil {
		state = fmt.Sprintf("UNREACHABLE since %s (%s): %s; writes are buffered and uploads retry",
			b.FailingSince.Local().Format(time.DateTime), time.Since(*b.FailingSince).Round(time.Second), b.LastError)
	}
	fmt.Fprintf(w, "backend: %s: %s; %s\n", b.Kind, state, b.Holder)
	if st.BackendTotal < noCapacity {
		fmt.Fprintf(w, "backend: %s free of %s raw; repaired reads: %d\n", human(int64(st.BackendFree)), human(int64(st.BackendTotal)), st.RepairedReads)
	}
	for _, a := range b.ASDs {
		if a.State != objstore.ASDOK {
			fmt.Fprintf(w, "backend: ASD %s %s since %s: %s\n", a.Path, strings.ToUpper(string(a.State)), a.Since.Local().Format(time.DateTime), a.Detail)
		}
	}
	for _, p := range []*objstore.PassStatus{b.Pass, b.LastPass} {
		if p != nil {
			fmt.Fprintf(w, "backend: %s\n", passLine(p))
		}
	}
	if b.DegradedPuts > 0 {
		fmt.Fprintf(w, "backend: %d objects written without full redundancy since the start (too few writable ASDs)\n", b.DegradedPuts)
	}
	if r := b.Requests; r != nil {
		fmt.Fprintf(w, "backend: %d GETs (%s), %d PUTs (%s), %d lists, %d deletes\n",
			r.Gets, human(r.GetBytes), r.Puts, human(r.PutBytes), r.Lists, r.Deletes)
	}
}

// passLine is one line about a repair or verify pass.
func passLine(p *objstore.PassStatus) string {
	if !p.Finished.IsZero() {
		line := fmt.Sprintf("last %s pass %s ago: %d objects, %d damaged, %d repaired (%d fragments), %d unrepairable, in %s",
			p.Kind, time.Since(p.Finished).Round(time.Second), p.Checked, p.Damaged, p.Repaired, p.Fragments, p.Unrepairable, p.Working.Round(time.Second))
		if p.LastProblem != "" {
			line += "; last problem: " + p.LastProblem
		}
		return line + errSuffix(p.Error)
	}
	pct := 0.0
	if p.Objects > 0 {
		pct = 100 * float64(p.Checked) / float64(p.Objects)
	}
	return fmt.Sprintf("%s pass running: %.0f%%, %d of %d objects, %d damaged, %d repaired, %d unrepairable, %s/s, ETA %s",
		p.Kind, pct, p.Checked, p.Objects, p.Damaged, p.Repaired, p.Unrepairable, human(int64(p.Rate())), p.ETA().Round(time.Second))
}
