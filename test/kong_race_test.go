//go:build race

package test

// raceFlags build the plugin binary with the race detector when the tests
// run with it, so that races in the plugin server fail the tests too.
var raceFlags = []string{"-race"}

// raceSlowdown is how much slower the race detector makes the server
// (5-10x, Go's documentation says): the Envoy harness's ext_authz timeout
// is the shipped one times this.
const raceSlowdown = 10
