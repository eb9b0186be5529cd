//go:build !race

package dtl_test

const raceBuild = false
