//go:build race

package dtl_test

// raceBuild: the race detector makes the host simulation about ten times
// slower, so the suite (which runs with -race) runs fewer of its seeds.
const raceBuild = true
