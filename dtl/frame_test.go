package dtl

import (
	"bufio"
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func roundTrip(t *testing.T, m Msg) Msg {
	t.Helper()
	b := m.Encode(nil)
	body, err := ReadFrame(bufio.NewReader(bytes.NewReader(b)), nil)
	if err != nil {
		t.Fatalf("%s: read: %v", m.Type, err)
	}
	got, err := Decode(body)
	if err != nil {
		t.Fatalf("%s: decode: %v", m.Type, err)
	}
	return got
}

func TestFrameRoundTrip(t *testing.T) {
	recs := bytes.Repeat([]byte{7}, 2*RecordSize)
	for _, m := range []Msg{
		{Type: MsgHello, Version: Version, Epoch: 9, Pool: "vp", Owner: "host-a"},
		{Type: MsgWelcome, Version: Version, Epoch: 9},
		{Type: MsgRefuse, Flags: RefuseFenced, Reason: "fenced"},
		{Type: MsgOpen, VDisk: 5, ClusterSize: 4096, SCOSize: 4 << 20, Epoch: 3, Flags: OpenFetched},
		{Type: MsgHave, VDisk: 5, Seq: 2, Runs: []Run{{3, 0, 10}, {4, 2, 3}}},
		{Type: MsgAppend, VDisk: 5, LSN: 77, Seq: 3, Rec0: 10, Recs: recs, Data: make([]byte, 8192)},
		{Type: MsgEntry, VDisk: 5, Seq: 3, Rec0: 10, Recs: recs, Data: []byte{}},
		{Type: MsgAck, VDisk: 5, LSN: 77, Count: 3},
		{Type: MsgSync, VDisk: 5, LSN: 78},
		{Type: MsgSynced, VDisk: 5, LSN: 78},
		{Type: MsgTrim, VDisk: 5, Seq: 2},
		{Type: MsgFetch, VDisk: 5},
		{Type: MsgFetchEnd, VDisk: 5, LSN: 4},
		{Type: MsgList},
		{Type: MsgListing, VDisks: []VDiskInfo{{VDisk: 5, ClusterSize: 4096, SCOSize: 4 << 20, Trimmed: 2, Bytes: 100}}},
		{Type: MsgDrop, VDisk: 5},
	} {
		got := roundTrip(t, m)
		if m.Data != nil && len(m.Data) == 0 {
			m.Data = got.Data // empty either way
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("%s: round trip gave %+v, want %+v", m.Type, got, m)
		}
	}
}

func TestFrameRejects(t *testing.T) {
	good := (&Msg{Type: MsgAck, VDisk: 1, LSN: 2, Count: 1}).Encode(nil)
	for name, b := range map[string][]byte{
		"checksum":  append(append([]byte{}, good[:len(good)-1]...), good[len(good)-1]^1),
		"huge":      {0xff, 0xff, 0xff, 0x7f, 1},
		"zero":      {0, 0, 0, 0},
		"truncated": good[:len(good)-2],
	} {
		body, err := ReadFrame(bufio.NewReader(bytes.NewReader(b)), nil)
		if err == nil {
			_, err = Decode(body)
		}
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for name, body := range map[string][]byte{
		"unknown type":     {99},
		"short ack":        {byte(MsgAck), 1, 2},
		"ack of none":      append([]byte{byte(MsgAck)}, make([]byte, 20)...),
		"trailing bytes":   append(append([]byte{byte(MsgDrop)}, make([]byte, 8)...), 1),
		"append no recs":   append([]byte{byte(MsgAppend)}, make([]byte, 28)...),
		"have runs lie":    {byte(MsgHave), 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff},
		"listing lies":     {byte(MsgListing), 0xff, 0xff, 0xff, 0x0f},
		"empty run":        append(append([]byte{byte(MsgHave)}, make([]byte, 12)...), 1, 0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 5, 0, 0, 0),
		"hello string lie": {byte(MsgHello), 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff},
		"refuse no flags":  {byte(MsgRefuse)},
	} {
		if _, err := Decode(body); !errors.Is(err, ErrFrame) {
			t.Errorf("%s: %v, want ErrFrame", name, err)
		}
	}
}

// FuzzDecode: any input is either a frame that encodes back to itself or
// an error; never a panic, never an allocation past the input's size.
func FuzzDecode(f *testing.F) {
	recs := make([]byte, RecordSize)
	for _, m := range []Msg{
		{Type: MsgHello, Version: 1, Epoch: 2, Pool: "p", Owner: "o"},
		{Type: MsgHave, VDisk: 1, Runs: []Run{{1, 0, 4}}},
		{Type: MsgAppend, VDisk: 1, LSN: 1, Seq: 1, Recs: recs, Data: make([]byte, 4096)},
		{Type: MsgListing, VDisks: []VDiskInfo{{VDisk: 1}}},
	} {
		f.Add(m.Encode(nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		body, err := ReadFrame(bufio.NewReader(bytes.NewReader(b)), nil)
		if err != nil {
			return
		}
		m, err := Decode(body)
		if err != nil {
			return
		}
		again, err := Decode(m.Encode(nil)[4 : 4+len(body)])
		if err != nil {
			t.Fatalf("re-encoded %s does not decode: %v", m.Type, err)
		}
		if again.Type != m.Type || again.VDisk != m.VDisk || again.LSN != m.LSN || len(again.Recs) != len(m.Recs) {
			t.Fatalf("re-encoded %s differs", m.Type)
		}
	})
}
