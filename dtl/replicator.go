package dtl

import (
	"context"

	"vpool/volume"
)

// Replicator is a Client as the engine's volume.Replicator.
type Replicator struct {
	Client *Client
	// Default is the mode of vDisks without one of their own.
	Default Mode
}

var _ volume.Replicator = Replicator{}

// AsVolume is r for volume.Deps: nil (no DTL) when r is.
func (r *Replicator) AsVolume() volume.Replicator {
	if r == nil {
		return nil
	}
	return *r
}

// Close ends the client's sessions; a nil r is a no-op.
func (r *Replicator) Close() {
	if r != nil {
		r.Client.Close()
	}
}

// ReadBack implements volume.Replicator.
func (r Replicator) ReadBack(ctx context.Context, fn func(volume.ReplicaEntry) error) error {
	return r.Client.ReadBack(ctx, func(info VDiskInfo, e Entry) error {
		return fn(volume.ReplicaEntry{VDisk: info.VDisk, ClusterSize: int64(info.ClusterSize), SCOSize: int64(info.SCOSize),
			Seq: e.Seq, Rec0: e.Rec0, Recs: e.Recs, Data: e.Data})
	})
}

func (r Replicator) mode(s string) (Mode, error) {
	if s == "" {
		return r.Default, nil
	}
	return ParseMode(s)
}

// Attach implements volume.Replicator.
func (r Replicator) Attach(id uint64, clusterSize, scoSize int64, mode string, src volume.ReplicaSource) (volume.ReplicaStream, error) {
	m, err := r.mode(mode)
	if err != nil {
		return nil, err
	}
	return &stream{r: r, Stream: r.Client.Attach(id, uint32(clusterSize), uint32(scoSize), m, source{src})}, nil
}

type stream struct {
	r Replicator
	*Stream
}

func (s *stream) Ship(ctx context.Context, entries []volume.ReplicaEntry) error {
	var arr [4]Entry
	es := arr[:0]
	for _, e := range entries {
		es = append(es, Entry{Seq: e.Seq, Rec0: e.Rec0, Recs: e.Recs, Data: e.Data})
	}
	return s.Stream.Ship(ctx, es)
}

func (s *stream) SetMode(mode string) error {
	m, err := s.r.mode(mode)
	if err != nil {
		return err
	}
	s.Stream.SetMode(m)
	return nil
}

// DTLStatus is the stream's state, for status and metrics.
func (s *stream) DTLStatus() StreamStatus { return s.Stream.Status() }

type source struct{ volume.ReplicaSource }

func (s source) Lacking(ctx context.Context, trimmed uint32, held func(seq, rec uint32) bool, total func(int64), fn func(Entry) error) error {
	return s.ReplicaSource.Lacking(ctx, trimmed, held, total, func(e volume.ReplicaEntry) error {
		return fn(Entry{Seq: e.Seq, Rec0: e.Rec0, Recs: e.Recs, Data: e.Data})
	})
}
