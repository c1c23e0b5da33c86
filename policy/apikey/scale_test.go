package apikey

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The key-scale benchmarks load, reload and look up line-format files of
// 10k, 100k and 1M keys. They generate their files, so they run only with
// -bench (go test -run '^$' -bench Keys -benchtime 5x ./policy/apikey/).
var scaleSizes = []struct {
	name string
	n    int
}{{"10k", 10_000}, {"100k", 100_000}, {"1M", 1_000_000}}

// scaleKey is the i-th benchmark key.
func scaleKey(i int) string { return fmt.Sprintf("mg_scale%038d", i) }

// scaleLine is the line for the i-th key: every tenth expires, every
// hundredth is disabled, so every field is parsed.
func scaleLine(i int, disabled bool) string {
	var b strings.Builder
	b.WriteString(Hash(scaleKey(i)))
	fmt.Fprintf(&b, " key-%07d user-%07d roles=chat-user", i, i)
	if i%10 == 0 {
		b.WriteString(",reader expires=2099-01-01T00:00:00Z")
	}
	if disabled || i%100 == 1 {
		b.WriteString(" disabled")
	}
	b.WriteByte('\n')
	return b.String()
}

// scaleReason is what Lookup says of the i-th key.
func scaleReason(i int) string {
	if i%100 == 1 {
		return ReasonDisabled
	}
	return "ok"
}

// writeScaleFile writes a line-format file with n keys and returns its path
// and content.
func writeScaleFile(tb testing.TB, dir string, n int) (string, []byte) {
	tb.Helper()
	var buf bytes.Buffer
	buf.Grow(n * 110)
	buf.WriteString("# generated for the key-scale benchmarks\n")
	for i := range n {
		buf.WriteString(scaleLine(i, false))
	}
	path := filepath.Join(dir, "keys.txt")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path, buf.Bytes()
}

func BenchmarkKeysLoad(b *testing.B) {
	for _, sz := range scaleSizes {
		b.Run(sz.name, func(b *testing.B) {
			path, data := writeScaleFile(b, b.TempDir(), sz.n)
			b.SetBytes(int64(len(data)))
			var cpu cpuMeter
			for b.Loop() {
				cpu.start()
				set, err := Load(path)
				cpu.stop()
				if err != nil || set.Len() != sz.n {
					b.Fatalf("Load: %v", err)
				}
			}
			cpu.report(b)
		})
	}
}

// BenchmarkKeysLoadYAML is the same load from YAML, for comparison.
func BenchmarkKeysLoadYAML(b *testing.B) {
	for _, sz := range scaleSizes[:2] {
		b.Run(sz.name, func(b *testing.B) {
			var buf strings.Builder
			buf.WriteString("keys:\n")
			for i := range sz.n {
				buf.WriteString(Entry(fmt.Sprintf("key-%07d", i), fmt.Sprintf("user-%07d", i), []string{"chat-user"}, scaleKey(i)))
			}
			path := filepath.Join(b.TempDir(), "keys.yaml")
			if err := os.WriteFile(path, []byte(buf.String()), 0o600); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(buf.Len()))
			var cpu cpuMeter
			for b.Loop() {
				cpu.start()
				if _, err := Load(path); err != nil {
					b.Fatal(err)
				}
				cpu.stop()
			}
			cpu.report(b)
		})
	}
}

// BenchmarkKeysReload measures applying one changed key to a Store in force:
// the file is rewritten outside the timer, and the timer covers the reload
// (the watch adds its 100 ms debounce on top).
func BenchmarkKeysReload(b *testing.B) {
	for _, sz := range scaleSizes {
		b.Run(sz.name+"/append", func(b *testing.B) {
			benchReload(b, sz.n, func(data []byte, i int) ([]byte, int, string) {
				k := sz.n + i
				return append(data, scaleLine(k, false)...), k, scaleReason(k)
			})
		})
		b.Run(sz.name+"/revoke", func(b *testing.B) {
			// Each round revokes one more key in the middle of the file.
			benchReload(b, sz.n, func(data []byte, i int) ([]byte, int, string) {
				k := sz.n/2 + i
				return revokeLine(data, k), k, ReasonDisabled
			})
		})
	}
}

// revokeLine returns data with the k-th key's line marked disabled.
func revokeLine(data []byte, k int) []byte {
	line := []byte(scaleLine(k, false))
	at := bytes.Index(data, line)
	return bytes.Join([][]byte{data[:at], []byte(scaleLine(k, true)), data[at+len(line):]}, nil)
}

func benchReload(b *testing.B, n int, edit func(data []byte, i int) ([]byte, int, string)) {
	path, data := writeScaleFile(b, b.TempDir(), n)
	s, err := Open(stopped(b), path, Options{})
	if err != nil {
		b.Fatal(err)
	}
	var cpu cpuMeter
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		var key int
		var want string
		data, key, want = edit(data, i)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		cpu.start()
		if err := s.reload(); err != nil {
			b.Fatal(err)
		}
		cpu.stop()
		b.StopTimer()
		if got := reasonOf(s, scaleKey(key)); got != want {
			b.Fatalf("key %d: %s after the reload, want %s", key, got, want)
		}
		b.StartTimer()
	}
	b.StopTimer()
	cpu.report(b)
}

func BenchmarkKeysLookup(b *testing.B) {
	for _, sz := range scaleSizes {
		path, _ := writeScaleFile(b, b.TempDir(), sz.n)
		set, err := Load(path)
		if err != nil {
			b.Fatal(err)
		}
		now := time.Now()
		for _, bc := range []struct{ name, key string }{
			{"hit", scaleKey(sz.n / 2)},
			{"miss", "mg_nobody000000000000000000000000000000000000"},
			{"malformed", scaleKey(0) + "\n"},
		} {
			b.Run(sz.name+"/"+bc.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					_, _ = set.Lookup(bc.key, now)
				}
			})
		}
	}
}

// BenchmarkKeysMemory runs a child process per size that opens a Store on
// the file, then appends a key and revokes another, and reports its resident
// memory: steady after the load (after a GC returned free memory to the
// system), the peak during the load, and the peak during the two reloads.
func BenchmarkKeysMemory(b *testing.B) {
	for _, sz := range scaleSizes {
		b.Run(sz.name, func(b *testing.B) {
			var m memReport
			for b.Loop() {
				// A fresh file: the child appends and revokes.
				path, _ := writeScaleFile(b, b.TempDir(), sz.n)
				cmd := exec.Command(os.Args[0], "-test.run=^TestKeysMemoryChild$", "-test.v")
				cmd.Env = append(os.Environ(), "MODELGUARD_KEYS_MEMORY_FILE="+path, "MODELGUARD_KEYS_MEMORY_N="+strconv.Itoa(sz.n))
				out, err := cmd.CombinedOutput()
				if err != nil {
					b.Fatalf("child: %v\n%s", err, out)
				}
				_, js, ok := strings.Cut(string(out), "MEMORY ")
				if !ok {
					b.Fatalf("child reported nothing:\n%s", out)
				}
				js, _, _ = strings.Cut(js, "\n")
				if err := json.Unmarshal([]byte(js), &m); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(m.SteadyMB, "steady-MB")
			b.ReportMetric(m.LoadPeakMB, "load-peak-MB")
			b.ReportMetric(m.ReloadPeakMB, "reload-peak-MB")
			b.ReportMetric(m.HeapMB, "heap-MB")
		})
	}
}

type memReport struct {
	SteadyMB, LoadPeakMB, ReloadPeakMB, HeapMB float64
}

// TestKeysMemoryChild is the child of BenchmarkKeysMemory; it skips unless
// that benchmark started it.
func TestKeysMemoryChild(t *testing.T) {
	path := os.Getenv("MODELGUARD_KEYS_MEMORY_FILE")
	if path == "" {
		t.Skip("run by BenchmarkKeysMemory")
	}
	n, _ := strconv.Atoi(os.Getenv("MODELGUARD_KEYS_MEMORY_N"))
	s, err := Open(stopped(t), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var m memReport
	m.LoadPeakMB = procStatusMB(t, "VmHWM")
	settle()
	m.SteadyMB = procStatusMB(t, "VmRSS")
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.HeapMB = float64(ms.HeapAlloc) / (1 << 20)

	// Writing 5 to clear_refs resets VmHWM (Linux 4.0+), so the next peak is
	// the reloads' alone.
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(scaleLine(n, false)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := s.reload(); err != nil {
		t.Fatal(err)
	}
	m.ReloadPeakMB = procStatusMB(t, "VmHWM")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, revokeLine(data, n/2), 0o600); err != nil {
		t.Fatal(err)
	}
	data = nil
	settle() // the edit's buffer is the benchmark's, not the reload's
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.reload(); err != nil {
		t.Fatal(err)
	}
	m.ReloadPeakMB = max(m.ReloadPeakMB, procStatusMB(t, "VmHWM"))
	if reasonOf(s, scaleKey(n)) != "ok" || reasonOf(s, scaleKey(n/2)) != ReasonDisabled {
		t.Fatal("the reloads did not apply")
	}
	js, _ := json.Marshal(m)
	fmt.Printf("MEMORY %s\n", js)
}

// settle collects garbage and returns free memory to the system, as the
// runtime's background scavenger does over time in a server.
func settle() {
	runtime.GC()
	debug.FreeOSMemory()
}

func procStatusMB(t *testing.T, field string) float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			if err != nil {
				t.Fatal(err)
			}
			return float64(kb) / 1024
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// stopped is a context that has ended, so that a Store does not watch and
// the caller drives its reloads.
func stopped(tb testing.TB) context.Context {
	ctx, cancel := context.WithCancel(tb.Context())
	cancel()
	return ctx
}

// cpuMeter sums the process's CPU time (all threads, the garbage collector's
// included) over the measured sections: on a shared machine wall time also
// counts waiting for a core.
type cpuMeter struct {
	at, total time.Duration
	n         int
}

func cpuNow() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (m *cpuMeter) start() { m.at = cpuNow() }
func (m *cpuMeter) stop()  { m.total += cpuNow() - m.at; m.n++ }
func (m *cpuMeter) report(b *testing.B) {
	if m.n > 0 {
		b.ReportMetric(float64(m.total.Milliseconds())/float64(m.n), "cpu-ms/op")
	}
}
