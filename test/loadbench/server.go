package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/modelguard/modelguard/test/noopauthz"
)

// runNoop serves the no-op server on addr until interrupted.
func runNoop(addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s := noopauthz.Serve(lis)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	s.Stop()
	return nil
}

// server is one server process pinned to the server CPU.
type server struct {
	name string
	addr string
	cmd  *exec.Cmd
	conn *grpc.ClientConn
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func start(o options, name, addr, bin string, args ...string) (*server, error) {
	cmd := exec.Command("taskset", append([]string{"-c", o.serverCPU, bin}, args...)...)
	cmd.Dir = o.dir
	// Logs go to a file: calls cut off at the end of a run are logged as
	// errors and would drown the results.
	logFile, err := os.OpenFile(filepath.Join(o.dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	s := &server{name: name, addr: addr, cmd: cmd}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("%s did not listen on %s (see %s)", name, addr, logFile.Name())
		}
		time.Sleep(50 * time.Millisecond)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		s.stop()
		return nil, err
	}
	s.conn = conn
	return s, nil
}

// expectAllowed sends the request in file once and requires an allow, so
// that the load measures allowed requests.
func (s *server) expectAllowed(file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	req := &authv3.CheckRequest{}
	if err := proto.Unmarshal(b, req); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(s.conn).Check(ctx, req)
	if err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	if c := resp.GetStatus().GetCode(); c != 0 {
		return fmt.Errorf("%s denied the benchmark request (%s): %v", s.name, filepath.Base(file), resp.GetDeniedResponse())
	}
	return nil
}

// sample is one measured ghz run.
type sample struct {
	rps      float64
	p50, p99 time.Duration
	calls    int64
	wall     time.Duration // ghz's whole run
	// CPU time the server and ghz spent during the run, and the time
	// their CPUs were busy with anything (other processes, the kernel).
	serverCPU, ghzCPU         time.Duration
	serverCPUBusy, ghzCPUBusy time.Duration
}

// others is the share of the server's and of ghz's CPU that went to
// anything else during the run: other work on the machine disturbed it.
func (r sample) others() (server, ghz float64) {
	share := func(busy, own time.Duration) float64 { return max(0, float64(busy-own)/float64(r.wall)) }
	return share(r.serverCPUBusy, r.serverCPU), share(r.ghzCPUBusy, r.ghzCPU)
}

// serverBusy and ghzBusy are the share of their one CPU each used.
func (r sample) serverBusy() float64 { return float64(r.serverCPU) / float64(r.wall) }
func (r sample) ghzBusy() float64    { return float64(r.ghzCPU) / float64(r.wall) }

// cpuPerCall is the server's CPU time per call: what its throughput would
// be limited by if the load generator could drive it to a full CPU.
func (r sample) cpuPerCall() time.Duration {
	if r.calls == 0 {
		return 0
	}
	return r.serverCPU / time.Duration(r.calls)
}

// ghzPerCall is ghz's CPU time per call: when ghz limits the run, its
// throughput is one CPU over this.
func (r sample) ghzPerCall() time.Duration {
	if r.calls == 0 {
		return 0
	}
	return r.ghzCPU / time.Duration(r.calls)
}

// saturation thresholds: a process using at least this share of its CPU is
// taken to be what limits the run.
const busy = 0.9

// limit names what bounded a run at full load: the server ("server"),
// ghz ("ghz": the server had CPU to spare while ghz used its whole CPU),
// or neither (something else on the machine took CPU from both).
func (r sample) limit() string {
	switch {
	case r.serverBusy() >= busy:
		return "server"
	case r.ghzBusy() >= busy:
		return "ghz"
	default:
		return "neither"
	}
}

// load runs ghz with the request in file, after an unmeasured warm-up:
// unbounded when rps is 0, else at that fixed rate.
func (s *server) load(o options, file string, rps float64) (sample, error) {
	if o.warmup > 0 {
		if _, err := s.ghz(o, file, rps, o.warmup); err != nil {
			return sample{}, err
		}
	}
	r, err := s.ghz(o, file, rps, o.duration)
	if err != nil {
		return sample{}, err
	}
	label := "max"
	if rps > 0 {
		label = fmt.Sprintf("%.0f/s", rps)
	}
	os, og := r.others()
	fmt.Printf("  %-10s %-16s %-7s %6.0f req/s  p50 %8s  p99 %9s  server CPU %3.0f%% (%s/call)  ghz CPU %3.0f%%  others %2.0f%% / %2.0f%%\n",
		s.name, filepath.Base(file), label, r.rps, ms(r.p50), ms(r.p99),
		100*r.serverBusy(), us(r.cpuPerCall()), 100*r.ghzBusy(), 100*os, 100*og)
	return r, nil
}

func (s *server) ghz(o options, file string, rps float64, d time.Duration) (sample, error) {
	args := []string{"-c", o.ghzCPU, o.ghz, "--insecure",
		"--call", "envoy.service.auth.v3.Authorization.Check",
		"--binary-file", file,
		"-c", strconv.Itoa(o.concurrency), "--connections", strconv.Itoa(o.connections),
		"-z", d.String(), "--duration-stop", "ignore", "-O", "json",
		// ghz runs as many Go threads as --cpus says (default 2), not as
		// taskset allows: more than its pinned CPUs only adds switching.
		"--cpus", strconv.Itoa(len(cpuList(o.ghzCPU))),
		// The request is fixed bytes: without these, ghz builds a Go
		// template function map for every call (a third of its CPU).
		"--disable-template-functions", "--disable-template-data",
	}
	if rps > 0 {
		args = append(args, "--rps", strconv.Itoa(int(rps)))
	}
	cmd := exec.Command("taskset", append(args, s.addr)...)
	cmd.Env = append(os.Environ(), strings.Fields(o.ghzEnv)...)
	cmd.Stderr = os.Stderr
	before, err := processCPU(s.cmd.Process.Pid)
	if err != nil {
		return sample{}, err
	}
	busyBefore, err := cpusBusy()
	if err != nil {
		return sample{}, err
	}
	began := time.Now()
	out, err := cmd.Output()
	wall := time.Since(began)
	if err != nil {
		return sample{}, fmt.Errorf("ghz against %s: %w", s.name, err)
	}
	after, err := processCPU(s.cmd.Process.Pid)
	if err != nil {
		return sample{}, err
	}
	busyAfter, err := cpusBusy()
	if err != nil {
		return sample{}, err
	}
	var rep struct {
		Count   int64   `json:"count"`
		RPS     float64 `json:"rps"`
		Latency []struct {
			Percentage int           `json:"percentage"`
			Latency    time.Duration `json:"latency"`
		} `json:"latencyDistribution"`
		Status map[string]int `json:"statusCodeDistribution"`
		Errors map[string]int `json:"errorDistribution"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		return sample{}, fmt.Errorf("ghz output: %w", err)
	}
	for code, n := range rep.Status {
		if code != "OK" && n > 0 {
			return sample{}, fmt.Errorf("%s: %d calls ended %s (errors: %v)", s.name, n, code, rep.Errors)
		}
	}
	r := sample{
		rps: rep.RPS, calls: rep.Count, wall: wall,
		serverCPU:     after - before,
		ghzCPU:        cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(),
		serverCPUBusy: busyAfter.of(o.serverCPU) - busyBefore.of(o.serverCPU),
		ghzCPUBusy:    busyAfter.of(o.ghzCPU) - busyBefore.of(o.ghzCPU),
	}
	for _, l := range rep.Latency {
		switch l.Percentage {
		case 50:
			r.p50 = l.Latency
		case 99:
			r.p99 = l.Latency
		}
	}
	if r.p99 == 0 {
		return sample{}, errors.New("ghz reported no p99")
	}
	return r, nil
}

// userHZ is the unit of the CPU times in /proc/PID/stat (USER_HZ, 100 on
// every Linux architecture Go supports).
const userHZ = 100

// processCPU is the user and system CPU time the process has used so far,
// all its threads included.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(string(b))
}

// parseStatCPU reads utime and stime (fields 14 and 15) from a
// /proc/PID/stat line. The command name (field 2) is in parentheses and may
// hold spaces, so fields are counted after its closing parenthesis.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc stat line without a command name: %q", stat)
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc stat line too short: %q", stat)
	}
	var ticks int64
	for _, s := range f[11:13] { // utime, stime: fields 14 and 15 of the line
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc stat CPU time %q: %w", s, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// busyTimes is each CPU's busy time so far (all but idle and iowait), by
// its number as /proc/stat names it ("cpu0" is "0").
type busyTimes map[string]time.Duration

// of is the busy time of the CPUs in list, a taskset CPU list ("0",
// "0,2"; ranges are not read and count as nothing).
func (b busyTimes) of(list string) time.Duration {
	var t time.Duration
	for _, c := range cpuList(list) {
		t += b[c]
	}
	return t
}

// cpuList is the CPUs of a taskset CPU list ("0", "0,2"; a range counts
// as one entry that names no CPU).
func cpuList(list string) []string { return strings.Split(list, ",") }

func cpusBusy() (busyTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil, err
	}
	return parseProcStat(string(b))
}

// parseProcStat reads the per-CPU lines of /proc/stat: "cpuN user nice
// system idle iowait irq softirq steal ...", in USER_HZ ticks.
func parseProcStat(stat string) (busyTimes, error) {
	out := busyTimes{}
	for line := range strings.Lines(stat) {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		var busy int64
		for i, v := range f[1:] {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("/proc/stat %s: %w", f[0], err)
			}
			if i != 3 && i != 4 && i < 8 { // not idle, iowait, guest
				busy += n
			}
		}
		out[strings.TrimPrefix(f[0], "cpu")] = time.Duration(busy) * time.Second / userHZ
	}
	if len(out) == 0 {
		return nil, errors.New("/proc/stat has no per-CPU lines")
	}
	return out, nil
}

func (s *server) stop() error {
	if s.conn != nil {
		s.conn.Close()
	}
	if s.cmd.Process == nil {
		return nil
	}
	s.cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case <-done:
		return nil
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-done
		return fmt.Errorf("%s did not stop", s.name)
	}
}
