package main

import (
	"testing"
	"time"

	"github.com/modelguard/modelguard/test/testkit"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestParseStatCPU(t *testing.T) {
	for _, c := range []struct {
		name, line string
		want       time.Duration
		err        bool
	}{
		{"plain", "4242 (modelguard) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 130 0 0 20 0 9 0 100 0 0", 3800 * time.Millisecond, false},
		{"spaces and parentheses in the name", "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 1 0 0", 70 * time.Millisecond, false},
		{"no name", "4242 S 1", 0, true},
		{"short", "1 (x) S 1 2 3", 0, true},
		{"not a number", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 x 4 0", 0, true},
	} {
		got, err := parseStatCPU(c.line)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("%s: parseStatCPU = %v, %v; want %v, error %v", c.name, got, err, c.want, c.err)
		}
	}
}

func TestLimit(t *testing.T) {
	s := func(server, ghz float64) sample {
		return sample{wall: time.Second, serverCPU: time.Duration(server * float64(time.Second)), ghzCPU: time.Duration(ghz * float64(time.Second))}
	}
	for _, c := range []struct {
		s    sample
		want string
	}{
		{s(0.98, 0.99), "server"},
		{s(0.70, 0.99), "ghz"},
		{s(0.60, 0.60), "neither"},
	} {
		if got := c.s.limit(); got != c.want {
			t.Errorf("limit of server %.2f, ghz %.2f = %s, want %s", c.s.serverBusy(), c.s.ghzBusy(), got, c.want)
		}
	}
}

func TestRatiosAndSpread(t *testing.T) {
	a := []sample{{rps: 70}, {rps: 60}, {rps: 90}}
	b := []sample{{rps: 100}, {rps: 100}, {rps: 100}}
	got := spread(ratios(a, b, func(s sample) float64 { return s.rps }))
	if want := "0.70 (0.60-0.90)"; got != want {
		t.Errorf("spread = %q, want %q", got, want)
	}
	if got := spread(nil); got != "-" {
		t.Errorf("spread(nil) = %q", got)
	}
}

func TestParseProcStat(t *testing.T) {
	stat := "cpu  300 0 100 5000 10 0 0 0 0 0\ncpu0 100 0 50 2500 5 0 0 0 0 0\ncpu1 200 0 50 2500 5 0 7 0 3 0\nintr 12345\n"
	b, err := parseProcStat(stat)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := b.of("0"), 1500*time.Millisecond; got != want {
		t.Errorf("cpu0 busy %v, want %v", got, want)
	}
	if got, want := b.of("1"), 2570*time.Millisecond; got != want {
		t.Errorf("cpu1 busy %v, want %v (guest time is in user already)", got, want)
	}
	if got, want := b.of("0,1"), 4070*time.Millisecond; got != want {
		t.Errorf("cpus 0,1 busy %v, want %v", got, want)
	}
	if _, err := parseProcStat("intr 1\n"); err == nil {
		t.Error("no per-CPU lines: no error")
	}
}

// The benchmark's body is the one the Go benchmarks use (testkit.ChatBody).
func TestChatBodyIsTestkits(t *testing.T) {
	for _, n := range []int{256, 1024, 4096} {
		if got, want := chatBody(n), testkit.ChatBody(n); string(got) != string(want) {
			t.Errorf("chatBody(%d):\n%s\ntestkit.ChatBody(%d):\n%s", n, got, n, want)
		}
	}
}
