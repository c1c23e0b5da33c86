//go:build race

package test

// raceFlags build the plugin binary with the race detector when the tests
// run with it, so that races in the plugin server fail the tests too.
var raceFlags = []string{"-race"}
