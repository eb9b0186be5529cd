package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"vpool/volume"
)

// SnapshotsConfig is the snapshot scheduler's part.
type SnapshotsConfig struct {
	Schedules []ScheduleConfig `mapstructure:"schedules"`
}

// ScheduleConfig takes a snapshot of the vDisk at Path, or of every vDisk
// under the directory Path (ending in "/"; "/" for all), every Every, and
// keeps the scheduled snapshots that Keep says.
type ScheduleConfig struct {
	Path  string        `mapstructure:"path"`
	Every time.Duration `mapstructure:"every"`
	Keep  KeepConfig    `mapstructure:"keep"`
}

// KeepConfig is a retention rule: the newest Last snapshots, and the
// newest one of each of the last Hourly hours, Daily days and Weekly
// weeks. A snapshot any rule keeps stays.
type KeepConfig struct {
	Last   int `mapstructure:"last"`
	Hourly int `mapstructure:"hourly"`
	Daily  int `mapstructure:"daily"`
	Weekly int `mapstructure:"weekly"`
}

// scheduledPrefix names the snapshots the scheduler takes (and may delete).
const scheduledPrefix = "auto-"

func (s ScheduleConfig) check(i int) error {
	k := s.Keep
	switch {
	case s.Path == "":
		return fmt.Errorf("config: snapshots.schedules[%d].path is empty", i)
	case s.Every < time.Second:
		return fmt.Errorf("config: snapshots.schedules[%d].every %s: want at least 1s", i, s.Every)
	case k.Last < 0 || k.Hourly < 0 || k.Daily < 0 || k.Weekly < 0:
		return fmt.Errorf("config: snapshots.schedules[%d].keep: counts cannot be negative", i)
	case k.Last+k.Hourly+k.Daily+k.Weekly == 0:
		return fmt.Errorf("config: snapshots.schedules[%d].keep keeps nothing: set last, hourly, daily or weekly", i)
	}
	return nil
}

// matches reports whether the schedule covers the vDisk at path ("/a/b.raw").
func (s ScheduleConfig) matches(path string) bool {
	p := "/" + strings.TrimPrefix(s.Path, "/")
	if strings.HasSuffix(p, "/") {
		return strings.HasPrefix(path, p)
	}
	return path == p
}

// expired returns the scheduled snapshots that keep does not keep.
func expired(snaps []volume.SnapshotInfo, keep KeepConfig) []string {
	var auto []volume.SnapshotInfo
	for _, s := range snaps {
		if strings.HasPrefix(s.Name, scheduledPrefix) {
			auto = append(auto, s)
		}
	}
	sort.Slice(auto, func(a, b int) bool { return auto[a].Created.After(auto[b].Created) }) // newest first
	kept := map[string]bool{}
	for i := 0; i < len(auto) && i < keep.Last; i++ {
		kept[auto[i].Name] = true
	}
	bucket := func(n int, key func(time.Time) string) {
		seen := map[string]bool{}
		for _, s := range auto {
			if len(seen) == n {
				break
			}
			if k := key(s.Created.UTC()); !seen[k] {
				seen[k] = true
				kept[s.Name] = true
			}
		}
	}
	bucket(keep.Hourly, func(t time.Time) string { return t.Format("2006010215") })
	bucket(keep.Daily, func(t time.Time) string { return t.Format("20060102") })
	bucket(keep.Weekly, func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprint(y, w) })
	var out []string
	for _, s := range auto {
		if !kept[s.Name] {
			out = append(out, s.Name)
		}
	}
	return out
}

// snapshotScheduler takes and expires scheduled snapshots until ctx ends.
func (s *controlServer) snapshotScheduler(ctx context.Context, schedules []ScheduleConfig) {
	tick := time.Minute
	for _, sc := range schedules {
		tick = min(tick, max(sc.Every/4, time.Second))
	}
	every(ctx, tick, func() {
		if s.e.ns == nil {
			return
		}
		for id, path := range s.e.ns.VDiskNames(ctx) {
			for _, sc := range schedules {
				if sc.matches(path) {
					s.runSchedule(ctx, id, path, sc)
				}
			}
		}
	})
}

func (s *controlServer) runSchedule(ctx context.Context, id uint64, path string, sc ScheduleConfig) {
	v, err := s.e.pool.VDisk(id)
	if err != nil || v.IsTemplate() {
		return
	}
	snaps := v.Snapshots()
	var newest time.Time
	for _, sn := range snaps {
		if strings.HasPrefix(sn.Name, scheduledPrefix) && sn.Created.After(newest) {
			newest = sn.Created
		}
	}
	if time.Since(newest) >= sc.Every {
		name := scheduledPrefix + time.Now().UTC().Format("20060102-150405")
		if _, err := s.e.ns.CreateSnapshot(ctx, path, name); err != nil {
			s.log.Error("vpool: scheduled snapshot", "path", path, "err", err)
			return
		}
		snaps = v.Snapshots()
	}
	for _, name := range expired(snaps, sc.Keep) {
		if err := v.DeleteSnapshot(ctx, name); err != nil {
			s.log.Warn("vpool: expire a scheduled snapshot", "path", path, "snapshot", name, "err", err)
		}
		s.recount()
	}
}

// startBackground starts the daemon's background work: the scrubber, the
// reclaimable-space counter and the snapshot schedules; each ends with ctx.
func (s *controlServer) startBackground(ctx context.Context) {
	if s.c.Scrub.Interval > 0 {
		go s.scrubber(ctx, s.c.Scrub.Interval)
	}
	go s.reclaimCounter(ctx)
	if len(s.c.Snapshots.Schedules) > 0 {
		go s.snapshotScheduler(ctx, s.c.Snapshots.Schedules)
	}
}
