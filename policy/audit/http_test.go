package audit

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/modelguard/modelguard/policy/metrics"
	"github.com/modelguard/modelguard/test/testkit"
)

// receiver is an audit endpoint that can be down (503) and keeps every
// record it acknowledged, by seq and hash.
type receiver struct {
	t        *testing.T
	srv      *httptest.Server
	up       atomic.Bool
	failures atomic.Int64
	mu       sync.Mutex
	bySeq    map[uint64][][]byte // seq -> distinct lines received
	posts    int
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t, bySeq: map[uint64][][]byte{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	if !r.up.Load() {
		r.failures.Add(1)
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	if req.Header.Get("Content-Encoding") != "gzip" || req.Header.Get("Content-Type") != "application/x-ndjson" ||
		req.Header.Get("Authorization") != "Bearer tok" {
		r.t.Errorf("request headers %v", req.Header)
	}
	zr, err := gzip.NewReader(req.Body)
	if err != nil {
		r.t.Errorf("body is not gzip: %v", err)
		return
	}
	body, err := io.ReadAll(zr)
	if err != nil {
		r.t.Errorf("gzip body: %v", err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.posts++
	for _, line := range bytes.SplitAfter(body, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		seq, _, err := lineSeqHash(line)
		if err != nil {
			r.t.Errorf("received %q: %v", line, err)
			continue
		}
		if !slices.ContainsFunc(r.bySeq[seq], func(b []byte) bool { return bytes.Equal(b, line) }) {
			r.bySeq[seq] = append(r.bySeq[seq], bytes.Clone(line))
		}
	}
}

// has reports whether every seq from 1 to n arrived.
func (r *receiver) has(n uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for s := uint64(1); s <= n; s++ {
		if len(r.bySeq[s]) == 0 {
			return false
		}
	}
	return true
}

// trail writes what arrived, de-duplicated, in seq order, to a file; a seq
// that arrived with two different contents fails the test.
func (r *receiver) trail(t *testing.T) string {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var seqs []uint64
	for s, lines := range r.bySeq {
		if len(lines) != 1 {
			t.Errorf("seq %d arrived with %d different contents", s, len(lines))
		}
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	var all []byte
	for _, s := range seqs {
		all = append(all, r.bySeq[s][0]...)
	}
	path := filepath.Join(t.TempDir(), "received.jsonl")
	os.WriteFile(path, all, 0o600)
	return path
}

func (r *receiver) sink(spool string, m *metrics.Metrics) *HTTPSink {
	return NewHTTPSink(HTTPSettings{URL: r.srv.URL, Token: "tok", SpoolDir: spool, MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}, nil, m)
}

func spoolSegments(t *testing.T, dir string) int {
	t.Helper()
	segs, err := (&HTTPSink{s: HTTPSettings{SpoolDir: dir}}).segments()
	if err != nil {
		t.Fatal(err)
	}
	return len(segs)
}

// The endpoint is down, then up: records wait in the spool and every one of
// them arrives, at least once, in a chain that verifies.
func TestHTTPSinkDownThenUp(t *testing.T) {
	rcv := newReceiver(t)
	m := metrics.New(nil)
	spool := filepath.Join(t.TempDir(), "spool")
	w := newTestWriter(t, Settings{FlushInterval: 2 * time.Millisecond}, m, rcv.sink(spool, m))
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Go(func() {
			for i := range 100 {
				w.Record(decision(fmt.Sprintf("%d-%d", g, i)))
			}
		})
	}
	wg.Wait()
	testkit.Eventually(t, "failed deliveries", func() bool { return rcv.failures.Load() >= 3 })
	if testutil.ToFloat64(m.AuditSpoolBytes) == 0 || spoolSegments(t, spool) == 0 {
		t.Fatal("nothing spooled while the endpoint is down")
	}
	rcv.up.Store(true)
	testkit.Eventually(t, "every record delivered", func() bool { return rcv.has(300) })
	testkit.Eventually(t, "the spool to drain", func() bool { return testutil.ToFloat64(m.AuditSpoolBytes) == 0 && spoolSegments(t, spool) == 0 })
	if err := w.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if sum, err := VerifyFiles([]string{rcv.trail(t)}, VerifyOptions{}); err != nil || sum.Records != 300 {
		t.Fatalf("received trail: %+v %v", sum, err)
	}
	if got := testutil.ToFloat64(m.AuditHTTPDelivered); got < 300 {
		t.Errorf("delivered counter %v", got)
	}
	if got := testutil.ToFloat64(m.AuditSinkErrors.WithLabelValues("http", "send")); got < 3 {
		t.Errorf("send errors counted: %v", got)
	}
}

// Undelivered records survive a restart and are sent by the next run, whose
// records continue the chain.
func TestHTTPSpoolSurvivesRestart(t *testing.T) {
	rcv := newReceiver(t)
	spool := filepath.Join(t.TempDir(), "spool")
	w := newTestWriter(t, Settings{}, nil, rcv.sink(spool, nil))
	for i := range 50 {
		w.Record(decision(fmt.Sprint(i)))
	}
	if err := w.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if spoolSegments(t, spool) == 0 {
		t.Fatal("nothing left in the spool after a shutdown with the endpoint down")
	}
	rcv.up.Store(true)
	w = newTestWriter(t, Settings{}, nil, rcv.sink(spool, nil))
	for i := range 50 {
		w.Record(decision(fmt.Sprint(50 + i)))
	}
	// A graceful stop with the endpoint up delivers what is left.
	if err := w.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !rcv.has(100) || spoolSegments(t, spool) != 0 {
		t.Fatal("records left undelivered after a graceful stop with the endpoint up")
	}
	if sum, err := VerifyFiles([]string{rcv.trail(t)}, VerifyOptions{}); err != nil || sum.Records != 100 {
		t.Fatalf("received trail: %+v %v", sum, err)
	}
}

// A full spool stalls the writer, so requests are refused, until the
// endpoint takes records again; nothing is lost.
func TestHTTPSpoolFull(t *testing.T) {
	rcv := newReceiver(t)
	spool := filepath.Join(t.TempDir(), "spool")
	sink := NewHTTPSink(HTTPSettings{URL: rcv.srv.URL, Token: "tok", SpoolDir: spool, SpoolMaxBytes: 4096,
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}, nil, nil)
	w := newTestWriter(t, Settings{}, nil, sink)
	ctx := context.Background()
	for i := range 60 {
		w.Record(decision(fmt.Sprint(i)))
	}
	testkit.Eventually(t, "admission refused with a full spool", func() bool { return w.Admit(ctx) != nil })
	if sink.SpoolBytes() > 4096 {
		t.Errorf("spool holds %d bytes, over its cap", sink.SpoolBytes())
	}
	rcv.up.Store(true)
	testkit.Eventually(t, "every record delivered", func() bool { return rcv.has(60) })
	testkit.Eventually(t, "admission again", func() bool { return w.Admit(ctx) == nil })
}

// With a file and an endpoint, the spool follows the file across crashes:
// records it lacks are copied from the file; records it holds that the file
// lost are dropped, never sent.
func TestHTTPSpoolFollowsFile(t *testing.T) {
	dir := t.TempDir()
	path, spool := filepath.Join(dir, "audit.jsonl"), filepath.Join(dir, "spool")
	rcv := newReceiver(t)
	// run records n events in a run of the server; a run with HTTP up stays
	// until the receiver has every seq up to want.
	run := func(withHTTP bool, n int, tag string, want uint64) {
		sinks := []Sink{NewFileSink(path, 0, 0, nil)}
		if withHTTP {
			sinks = append(sinks, rcv.sink(spool, nil))
		}
		w := newTestWriter(t, Settings{}, nil, sinks...)
		for i := range n {
			w.Record(decision(fmt.Sprintf("%s%d", tag, i)))
		}
		if withHTTP && rcv.up.Load() {
			testkit.Eventually(t, "the run's records delivered", func() bool { return rcv.has(want) })
		}
		if err := w.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}

	run(true, 10, "a", 0) // endpoint down: spooled
	run(false, 5, "b", 0) // as if the spool write was lost in a crash
	rcv.up.Store(true)
	run(true, 5, "c", 20) // copies b's records, then c's
	fileSum, err := VerifyFiles([]string{path}, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifyFiles([]string{rcv.trail(t)}, VerifyOptions{})
	if err != nil || got != fileSum {
		t.Fatalf("received %+v %v, want the file's trail %+v", got, err, fileSum)
	}

	// Records in the spool's unsealed segment beyond the file's last record
	// (the file lost them) are dropped: the next run reuses their seqs.
	data, _ := os.ReadFile(path)
	seq, prev, _ := lineSeqHash(data[bytes.LastIndexByte(data[:len(data)-1], '\n')+1:])
	ghost, _ := appendRecord(nil, &Event{Kind: KindDecision, DecisionID: "ghost", Time: time.Unix(1, 0)}, seq+1, &prev, newChainHash(nil))
	appendBytes(t, filepath.Join(spool, spoolActive), ghost)
	run(true, 3, "d", 23)
	if _, err := VerifyFiles([]string{rcv.trail(t)}, VerifyOptions{}); err != nil { // a ghost would show as two contents for one seq
		t.Fatal(err)
	}
}

// A spool in use by one writer refuses a second one at start.
func TestHTTPSpoolLock(t *testing.T) {
	rcv := newReceiver(t)
	spool := filepath.Join(t.TempDir(), "spool")
	w := newTestWriter(t, Settings{}, nil, rcv.sink(spool, nil))
	w.Record(decision("1"))
	if _, err := NewWriter(Settings{}, Options{}, rcv.sink(spool, nil)); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second writer on one spool: %v", err)
	}
	if err := w.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	w2 := newTestWriter(t, Settings{}, nil, rcv.sink(spool, nil))
	if err := w2.Record(decision("2")); err != nil {
		t.Fatalf("after the first writer stopped: %v", err)
	}
}
