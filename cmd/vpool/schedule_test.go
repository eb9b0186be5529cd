package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"vpool/volume"
)

func TestScheduleConfig(t *testing.T) {
	c, err := loadConfig(writeFile(t, "snapshots:\n  schedules:\n    - path: vms/\n      every: 1h\n      keep: {hourly: 24, daily: 7}\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	sc := c.Snapshots.Schedules
	if len(sc) != 1 || sc[0].Every != time.Hour || sc[0].Keep.Hourly != 24 || sc[0].Keep.Daily != 7 {
		t.Fatalf("schedules %+v", sc)
	}
	if !sc[0].matches("/vms/a.raw") || !sc[0].matches("/vms/x/b.raw") || sc[0].matches("/other.raw") {
		t.Fatal("a directory schedule matches the wrong vDisks")
	}
	if one := (ScheduleConfig{Path: "vm1.raw"}); !one.matches("/vm1.raw") || one.matches("/vm1.raw2") {
		t.Fatal("a vDisk schedule matches the wrong vDisks")
	}
	for _, tc := range []struct{ yaml, want string }{
		{"snapshots:\n  schedules:\n    - path: a.raw\n      every: 1h\n      keep: {hourli: 3}\n", "unknown key"},
		{"snapshots:\n  schedules:\n    - path: a.raw\n      every: 1h\n", "keeps nothing"},
		{"snapshots:\n  schedules:\n    - path: a.raw\n      every: 10ms\n      keep: {last: 1}\n", "every 10ms"},
		{"snapshots:\n  schedules:\n    - every: 1h\n      keep: {last: 1}\n", "path is empty"},
	} {
		_, err := loadConfig(writeFile(t, tc.yaml), "")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

// Retention against a model: three days of hourly snapshots, keep the
// last 2, 5 hourly and 2 daily.
func TestExpired(t *testing.T) {
	start := time.Date(2026, 11, 20, 0, 30, 0, 0, time.UTC)
	var snaps []volume.SnapshotInfo
	for h := 0; h < 72; h++ {
		at := start.Add(time.Duration(h) * time.Hour)
		snaps = append(snaps, volume.SnapshotInfo{Name: fmt.Sprintf("auto-%02d", h), Created: at})
	}
	snaps = append(snaps, volume.SnapshotInfo{Name: "manual", Created: start})
	drop := expired(snaps, KeepConfig{Last: 2, Hourly: 5, Daily: 2})
	var kept []string
	for _, s := range snaps {
		if !slices.Contains(drop, s.Name) {
			kept = append(kept, s.Name)
		}
	}
	// last 2: 71, 70; hourly 5: 71..67; daily 2: the newest of day 3 (71) and of day 2 (47)
	if got := fmt.Sprint(kept); got != "[auto-47 auto-67 auto-68 auto-69 auto-70 auto-71 manual]" {
		t.Fatalf("kept %s", got)
	}
}
