//go:build !race

package test

// raceFlags: see kong_race_test.go.
var raceFlags []string

// raceSlowdown: see kong_race_test.go.
const raceSlowdown = 1
