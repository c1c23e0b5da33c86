// Command loadbench compares modelguard with a no-op ext_authz server under
// the same load ("make bench"): the same CheckRequest bytes (a 1 KiB OpenAI
// chat body, the example RBAC policy, audit to a file), sent by ghz with 50
// concurrent calls over 4 connections, the servers pinned to one CPU and ghz
// to the other.
//
// The no-op answers every check with a fixed allow shaped like
// modelguard's (test/noopauthz): ghz decodes answers as dynamic messages,
// ~40% of its CPU against modelguard, and an empty answer made the
// throughput ratio mostly a ratio of ghz's decoding work.
//
// One run on a shared 2-core machine says little: the no-op's throughput
// moved by 30% between back-to-back runs. So it measures in rounds, each
// running the no-op and modelguard back to back on each workload (which
// goes first alternates from round to round), every run after its own
// warm-up, and reports the median of the per-round ratios with their
// spread. Then it measures latency at a fixed rate: half the no-op's median
// throughput, the same rate for both servers in every round.
//
// It also reads the CPU time each server and ghz used in every run: when
// ghz used its whole CPU while the server did not, the run measured ghz,
// not the server. The server's CPU time per call is what its throughput
// would be if the load generator were not the limit; the ratio of those is
// printed beside the throughput ratio.
//
// ghz runs with GOGC=off and GOMEMLIMIT=1GiB unless -ghz-env says
// otherwise: it keeps ~75 MB of live heap and at its default GOGC collects
// it every ~0.4 s, 35-75 ms a cycle on its one CPU, delaying the calls in
// flight (the no-op's p99 was ~25 ms against a p50 of ~1 ms); with the
// limit it collects every few seconds. It also runs with --cpus set to the
// CPUs it is pinned to (its default, 2, only adds thread switching on one
// CPU) and with template data and functions off: the request is fixed
// bytes, and ghz otherwise builds a template function map for every call,
// a third of its CPU at a fixed rate. Both servers get the same ghz.
//
// It is a benchmark tool, never shipped. Run it through scripts/loadbench.sh,
// which builds modelguard and installs the pinned ghz.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

type options struct {
	modelguard, ghz   string
	duration, warmup  time.Duration
	rounds            int
	serverCPU, ghzCPU string
	ghzEnv            string
	concurrency       int
	connections       int
	dir               string
}

func main() {
	var o options
	serveNoop := flag.String("serve-noop", "", "internal: serve the no-op server on this address")
	flag.StringVar(&o.modelguard, "modelguard", "bin/modelguard", "modelguard binary")
	flag.StringVar(&o.ghz, "ghz", "ghz", "ghz binary (v0.121.0)")
	flag.IntVar(&o.rounds, "rounds", 5, "rounds: each measures both servers on each workload")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "measured time per run")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured load before each run")
	flag.StringVar(&o.serverCPU, "server-cpu", "0", "CPUs the servers are pinned to, comma-separated (taskset -c)")
	flag.StringVar(&o.ghzCPU, "ghz-cpu", "1", "CPUs ghz is pinned to, comma-separated (taskset -c)")
	flag.StringVar(&o.ghzEnv, "ghz-env", "GOGC=off GOMEMLIMIT=1GiB", "environment variables for ghz, space-separated")
	flag.IntVar(&o.concurrency, "c", 50, "concurrent calls")
	flag.IntVar(&o.connections, "connections", 4, "gRPC connections")
	flag.StringVar(&o.dir, "dir", "", "working directory, new or empty (default: a temporary one, removed at exit)")
	flag.Parse()
	if *serveNoop != "" {
		if err := runNoop(*serveNoop); err != nil {
			fmt.Fprintln(os.Stderr, "loadbench:", err)
			os.Exit(1)
		}
		return
	}
	if o.rounds < 1 {
		fmt.Fprintln(os.Stderr, "loadbench: -rounds must be at least 1")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "loadbench:", err)
		os.Exit(1)
	}
}

// workload is one request file and what the runs on it measured, by
// server (noop, modelguard) and round.
type workload struct {
	name, file string
	max        [2][]sample
	rate       float64 // the fixed rate: half the no-op's median throughput
	fixed      [2][]sample
}

const (
	noop = iota
	mg
)

func run(o options) error {
	if o.dir == "" {
		d, err := os.MkdirTemp("", "modelguard-loadbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		o.dir = d
	}
	files, err := writeWorkloads(o.dir)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}

	fmt.Printf("loadbench: %d rounds; ghz -c %d --connections %d (%s), %v per run after %v warm-up; servers on CPU %s, ghz on CPU %s; load average %s\n",
		o.rounds, o.concurrency, o.connections, o.ghzEnv, o.duration, o.warmup, o.serverCPU, o.ghzCPU, loadAverage())
	noopAddr, mgAddr := freeAddr(), freeAddr()
	if err := writeConfig(o.dir, mgAddr); err != nil {
		return err
	}
	// Both servers run throughout on the server CPU (the idle one costs
	// nothing), so that either can go first in a round.
	var servers [2]*server
	defer func() {
		for _, s := range servers {
			if s != nil {
				s.stop()
			}
		}
	}()
	if servers[noop], err = start(o, "noop", noopAddr, self, "-serve-noop", noopAddr); err != nil {
		return err
	}
	if servers[mg], err = start(o, "modelguard", mgAddr, o.modelguard, "serve", "-config", filepath.Join(o.dir, "config.yaml")); err != nil {
		return err
	}
	ws := []*workload{
		{name: "RS256 JWT + schema + RBAC + audit", file: files.jwt},
		{name: "API key + schema + RBAC + audit", file: files.apiKey},
	}
	for _, w := range ws {
		for _, s := range servers {
			if err := s.expectAllowed(w.file); err != nil {
				return err
			}
		}
	}

	// pair measures both servers on w in round r, alternating which goes
	// first so that a drift in the machine's load favours neither.
	pair := func(r int, w *workload, rps float64, into *[2][]sample) error {
		order := [2]int{noop, mg}
		if r%2 == 1 {
			order = [2]int{mg, noop}
		}
		for _, i := range order {
			smp, err := servers[i].load(o, w.file, rps)
			if err != nil {
				return err
			}
			into[i] = append(into[i], smp)
		}
		return nil
	}
	for r := range o.rounds {
		fmt.Printf("round %d of %d, full load\n", r+1, o.rounds)
		for _, w := range ws {
			if err := pair(r, w, 0, &w.max); err != nil {
				return err
			}
		}
	}
	for _, w := range ws {
		w.rate = median(rates(w.max[noop])) / 2
	}
	for r := range o.rounds {
		fmt.Printf("round %d of %d, fixed rate\n", r+1, o.rounds)
		for _, w := range ws {
			if err := pair(r, w, w.rate, &w.fixed); err != nil {
				return err
			}
		}
	}
	fmt.Printf("load average at the end %s\n\n", loadAverage())
	report(os.Stdout, ws)
	return nil
}

// loadAverage is the machine's 1, 5 and 15 minute load averages.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) + " ms" }
func us(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e3, 'f', 0, 64) + " us" }
