package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/modelguard/modelguard/policy/metrics"
	"github.com/modelguard/modelguard/test/testkit"
)

// memSink keeps records in memory; it can hold writes at a gate and fail
// writes and syncs on demand.
type memSink struct {
	mu      sync.Mutex
	data    []byte
	synced  int // len(data) at the last Sync
	syncs   int
	gate    chan struct{} // when set, Write waits for it to close
	entered chan struct{} // receives once per Write call, if set
	failW   atomic.Bool
	failS   atomic.Bool
}

func (m *memSink) Name() string { return "mem" }

func (m *memSink) Write(recs []Line) (int, error) {
	if m.entered != nil {
		select {
		case m.entered <- struct{}{}:
		default:
		}
	}
	if m.gate != nil {
		<-m.gate
	}
	if m.failW.Load() {
		return 0, errors.New("injected write failure")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range recs {
		m.data = append(m.data, r.Data...)
	}
	return len(recs), nil
}

func (m *memSink) Sync() error {
	if m.failS.Load() {
		return errors.New("injected sync failure")
	}
	m.mu.Lock()
	m.syncs++
	m.synced = len(m.data)
	m.mu.Unlock()
	return nil
}

func (m *memSink) Close() error { return nil }

// verify checks what the sink holds as one trail.
func (m *memSink) verify(t *testing.T) Summary {
	t.Helper()
	m.mu.Lock()
	data := bytes.Clone(m.data)
	m.mu.Unlock()
	path := filepath.Join(t.TempDir(), "mem.jsonl")
	os.WriteFile(path, data, 0o600)
	sum, err := VerifyFiles([]string{path}, VerifyOptions{})
	if err != nil {
		t.Fatalf("the sink's trail does not verify: %v", err)
	}
	return sum
}

func newTestWriter(t *testing.T, s Settings, m *metrics.Metrics, sinks ...Sink) *Writer {
	t.Helper()
	if s.FlushInterval == 0 {
		s.FlushInterval = time.Millisecond
	}
	w, err := NewWriter(s, Options{Metrics: m}, sinks...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		w.Shutdown(ctx)
	})
	return w
}

func decision(id string) *Event {
	return &Event{Kind: KindDecision, DecisionID: id, Result: "allow", Status: 200, Reason: "allowed"}
}

// A full queue refuses admission; a record of an admitted decision waits for
// room, and one that still finds none is counted as lost.
func TestWriterQueueFull(t *testing.T) {
	m := metrics.New(nil)
	sink := &memSink{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	w := newTestWriter(t, Settings{Durability: DurabilityAsync, QueueSize: 2, BlockTimeout: 10 * time.Millisecond}, m, sink)
	ctx := context.Background()
	if err := w.Admit(ctx); err != nil {
		t.Fatalf("Admit with an empty queue: %v", err)
	}
	if err := w.Record(decision("1")); err != nil {
		t.Fatal(err)
	}
	<-sink.entered // the writer holds record 1 in a blocked write
	for _, id := range []string{"2", "3"} {
		if err := w.Record(decision(id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Admit(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Admit with a full queue = %v, want ErrUnavailable", err)
	}
	if err := w.Record(decision("4")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Record with a full queue = %v", err)
	}
	if got := testutil.ToFloat64(m.AuditLost.WithLabelValues("queue_full")); got != 1 {
		t.Errorf("lost records counted: %v, want 1", got)
	}
	close(sink.gate)
	testkit.Eventually(t, "admission once the queue drains", func() bool { return w.Admit(ctx) == nil })
	if err := w.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if sum := sink.verify(t); sum.Records != 3 {
		t.Errorf("%d records, want 3", sum.Records)
	}
}

// With on_full: block, Admit waits for room instead of refusing.
func TestWriterBlockMode(t *testing.T) {
	sink := &memSink{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	w := newTestWriter(t, Settings{Durability: DurabilityAsync, QueueSize: 1, Block: true, BlockTimeout: time.Minute}, nil, sink)
	w.Record(decision("1"))
	<-sink.entered
	w.Record(decision("2")) // the queue is full
	admitted := make(chan error, 1)
	go func() { admitted <- w.Admit(context.Background()) }()
	close(sink.gate)
	if err := <-admitted; err != nil {
		t.Fatalf("blocked Admit = %v, want nil once room appears", err)
	}

	// A wait that ends without room refuses: by timeout or by the request's context.
	sink2 := &memSink{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	w2 := newTestWriter(t, Settings{Durability: DurabilityAsync, QueueSize: 1, Block: true, BlockTimeout: 20 * time.Millisecond}, nil, sink2)
	w2.Record(decision("1"))
	<-sink2.entered
	w2.Record(decision("2"))
	if err := w2.Admit(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Admit after block_timeout = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w2.Admit(ctx); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Admit with an ended context = %v", err)
	}
	close(sink2.gate)
}

// A failing sink stalls the writer, which refuses admission, retries and
// loses nothing; its failures are counted.
func TestWriterRetriesFailingSink(t *testing.T) {
	for _, op := range []string{"write", "sync"} {
		t.Run(op, func(t *testing.T) {
			m := metrics.New(nil)
			sink := &memSink{}
			fail := &sink.failW
			if op == "sync" {
				fail = &sink.failS
			}
			fail.Store(true)
			w := newTestWriter(t, Settings{}, m, sink)
			ctx := context.Background()
			for i := range 20 {
				w.Record(decision(fmt.Sprint(i)))
			}
			testkit.Eventually(t, "the writer to stall", func() bool { return errors.Is(w.Admit(ctx), ErrUnavailable) })
			fail.Store(false)
			testkit.Eventually(t, "the writer to recover", func() bool { return w.Admit(ctx) == nil })
			if err := w.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			if sum := sink.verify(t); sum.Records != 20 {
				t.Errorf("%d records, want 20", sum.Records)
			}
			if got := testutil.ToFloat64(m.AuditSinkErrors.WithLabelValues("mem", op)); got < 1 {
				t.Errorf("%s errors counted: %v", op, got)
			}
		})
	}
}

func TestWriterShutdown(t *testing.T) {
	ctx := context.Background()
	m := metrics.New(nil)
	sink := &memSink{}
	// No periodic flush: only the shutdown writes and syncs.
	w := newTestWriter(t, Settings{FlushInterval: time.Hour}, m, sink)
	for i := range 100 {
		w.Record(decision(fmt.Sprint(i)))
	}
	if err := w.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if sum := sink.verify(t); sum.Records != 100 || sink.syncs == 0 {
		t.Errorf("after shutdown: %d records, %d syncs", sum.Records, sink.syncs)
	}
	if got := testutil.ToFloat64(m.AuditSyncedSeq); got != 100 {
		t.Errorf("synced seq %v, want 100", got)
	}
	if err := w.Record(decision("late")); !errors.Is(err, ErrClosed) {
		t.Errorf("Record after Shutdown = %v", err)
	}
	if err := w.Admit(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Admit after Shutdown = %v", err)
	}
	if got := testutil.ToFloat64(m.AuditLost.WithLabelValues("closed")); got != 1 {
		t.Errorf("records lost after close: %v", got)
	}
	if err := w.Shutdown(ctx); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

// A sink still failing when Shutdown's deadline ends: what was not written
// is counted and reported, never silently dropped.
func TestWriterShutdownGivesUp(t *testing.T) {
	m := metrics.New(nil)
	sink := &memSink{}
	sink.failW.Store(true)
	w := newTestWriter(t, Settings{}, m, sink)
	for i := range 3 {
		w.Record(decision(fmt.Sprint(i)))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := w.Shutdown(ctx)
	if err == nil {
		t.Fatal("Shutdown reported success with a failing sink")
	}
	if got := testutil.ToFloat64(m.AuditLost.WithLabelValues("shutdown")); got != 3 {
		t.Errorf("lost at shutdown: %v, want 3 (%v)", got, err)
	}
}

// A Record waiting for room does not hold Shutdown past its deadline: it
// gives up, counted as lost.
func TestWriterShutdownReleasesWaitingRecord(t *testing.T) {
	m := metrics.New(nil)
	sink := &memSink{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	defer close(sink.gate)
	w := newTestWriter(t, Settings{Durability: DurabilityAsync, QueueSize: 1, BlockTimeout: time.Hour}, m, sink)
	w.Record(decision("1"))
	<-sink.entered
	w.Record(decision("2")) // the queue is full
	waiting := make(chan error, 1)
	go func() { waiting <- w.Record(decision("3")) }()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Shutdown(ctx); err == nil {
		t.Error("Shutdown reported success with records stuck behind a hung sink")
	}
	if err := <-waiting; !errors.Is(err, ErrClosed) {
		t.Errorf("the waiting Record returned %v, want ErrClosed", err)
	}
	if got := testutil.ToFloat64(m.AuditLost.WithLabelValues("closed")); got != 1 {
		t.Errorf("lost records counted: %v", got)
	}
}

func TestWriterConcurrentRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	w := openFileWriter(t, path, Settings{QueueSize: 64, BlockTimeout: time.Minute}, 0, 0)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				if err := w.Record(decision(fmt.Sprintf("%d-%d", g, i))); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if sum, err := VerifyFiles([]string{path}, VerifyOptions{}); err != nil || sum.Records != 1600 {
		t.Fatalf("%+v %v", sum, err)
	}
}

// holds reports whether the sink's data, and its synced part, contain the
// record of decision id.
func (m *memSink) holds(id string) (written, synced bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	needle := []byte(`"decision_id":"` + id + `"`)
	return bytes.Contains(m.data, needle), bytes.Contains(m.data[:m.synced], needle)
}

// Record returns when its record is as durable as the setting says: written,
// fsynced, or (async) merely queued while the sink is still held.
func TestWriterDurability(t *testing.T) {
	for _, tc := range []struct {
		d                   Durability
		wantWritten, synced bool
	}{{DurabilityWrite, true, false}, {DurabilityFsync, true, true}, {DurabilityAsync, false, false}} {
		t.Run(string(tc.d), func(t *testing.T) {
			sink := &memSink{}
			if tc.d == DurabilityAsync {
				sink.gate = make(chan struct{})
				defer close(sink.gate)
			}
			// No periodic fsync to race with: only fsync mode syncs.
			w := newTestWriter(t, Settings{Durability: tc.d, FlushInterval: time.Hour, BlockTimeout: time.Hour}, nil, sink)
			for i := range 50 {
				id := fmt.Sprint(i)
				if err := w.Record(decision(id)); err != nil {
					t.Fatal(err)
				}
				written, synced := sink.holds(id)
				if written != tc.wantWritten || (tc.synced && !synced) {
					t.Fatalf("record %d when Record returned: written %v, synced %v", i, written, synced)
				}
			}
		})
	}
}

// Many Records wait on one write (group commit): concurrent callers all
// return with their records written, in far fewer writes than records.
func TestWriterGroupCommit(t *testing.T) {
	for _, d := range []Durability{DurabilityWrite, DurabilityFsync} {
		t.Run(string(d), func(t *testing.T) {
			sink := &memSink{entered: make(chan struct{}, 1<<16)}
			w := newTestWriter(t, Settings{Durability: d, BlockTimeout: time.Hour}, nil, sink)
			var wg sync.WaitGroup
			for g := range 16 {
				wg.Go(func() {
					for i := range 100 {
						id := fmt.Sprintf("%d-%d", g, i)
						if err := w.Record(decision(id)); err != nil {
							t.Error(err)
							return
						}
						if written, synced := sink.holds(id); !written || (d == DurabilityFsync && !synced) {
							t.Errorf("%s returned before its record was durable", id)
							return
						}
					}
				})
			}
			wg.Wait()
			if writes := len(sink.entered); writes >= 1600 {
				t.Errorf("%d writes for 1600 records: no grouping", writes)
			}
		})
	}
}

// While a sink fails, with on_full: deny, a Record waiting for its write
// gives up at once (the gateway answers 503) instead of waiting out
// block_timeout; a denial's record (Offer) never waits, and one that finds
// the queue full is counted and refused at once.
func TestWriterStalledAnswersAtOnce(t *testing.T) {
	m := metrics.New(nil)
	sink := &memSink{}
	sink.failW.Store(true)
	w := newTestWriter(t, Settings{QueueSize: 4, BlockTimeout: time.Hour}, m, sink)
	if err := w.Record(decision("allowed")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Record on a failing sink = %v, want ErrUnavailable", err)
	}
	for i := range 4 {
		w.Offer(decision(fmt.Sprint("denied-", i)))
	}
	if err := w.Offer(decision("one too many")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Offer with a full queue = %v", err)
	}
	if got := testutil.ToFloat64(m.AuditLost.WithLabelValues("queue_full")); got < 1 {
		t.Errorf("denials not recorded: counted %v", got)
	}
	sink.failW.Store(false)
	testkit.Eventually(t, "the writer to resume", func() bool { return w.Admit(context.Background()) == nil })
	if err := w.Record(decision("after")); err != nil {
		t.Fatal(err)
	}
	if written, _ := sink.holds("allowed"); !written {
		t.Error("the record of the decision that gave up waiting was dropped; the writer must keep it")
	}
}

// The queue depth gauge follows the queue while the writer is stuck in a
// write: it is not only updated between batches.
func TestWriterQueueDepthIsLive(t *testing.T) {
	m := metrics.New(nil)
	sink := &memSink{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	w := newTestWriter(t, Settings{Durability: DurabilityAsync, QueueSize: 100}, m, sink)
	w.Record(decision("first"))
	<-sink.entered // the writer holds it in a blocked write
	for i := range 30 {
		w.Record(decision(fmt.Sprint(i)))
	}
	if got := testutil.ToFloat64(m.AuditQueueDepth); got != 30 {
		t.Errorf("queue depth %v while 30 records wait, want 30", got)
	}
	close(sink.gate)
	if err := w.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.AuditQueueDepth); got != 0 {
		t.Errorf("queue depth %v after the drain", got)
	}
}

// Open's writer writes through: the line is in the file when Record returns.
func TestOpenWritesThrough(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	w, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := range 3 {
		w.Record(decision(fmt.Sprint(i)))
		if sum, err := VerifyFiles([]string{path}, VerifyOptions{}); err != nil || sum.Records != uint64(i+1) {
			t.Fatalf("after Record %d: %+v %v", i, sum, err)
		}
	}
	if w, err := Open("off"); w != nil || err != nil {
		t.Errorf("Open(off) = %v, %v", w, err)
	}
}

func TestNewWriterRefusesWeakKey(t *testing.T) {
	if _, err := NewWriter(Settings{Key: make([]byte, 31)}, Options{}, &memSink{}); err == nil {
		t.Fatal("a 31-byte key was accepted")
	}
}

// heldSyncSink is a memSink whose fsyncs, in the background or not, wait
// while hold is open and fail while fail is set.
type heldSyncSink struct {
	*memSink
	hold     chan struct{} // closed: fsyncs go through
	fsyncing chan struct{} // receives when an fsync starts
	fail     atomic.Bool
}

func (s *heldSyncSink) fsync() error {
	s.fsyncing <- struct{}{}
	<-s.hold
	if s.fail.Load() {
		return errors.New("injected fsync failure")
	}
	return nil
}

func (s *heldSyncSink) Sync() error {
	if err := s.fsync(); err != nil {
		return err
	}
	return s.memSink.Sync()
}

func (s *heldSyncSink) beginSync() (func() error, func(error) error) {
	s.mu.Lock()
	n := len(s.data)
	s.mu.Unlock()
	return s.fsync, func(err error) error {
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.synced = max(s.synced, n)
		s.syncs++
		s.mu.Unlock()
		return nil
	}
}

// The periodic fsync runs beside writes: a Record (durability write) made
// while an fsync is slow returns without waiting for it. A failed
// background fsync stalls the trail until an fsync succeeds, and every
// record ends up durable.
func TestWriterFsyncBesideWrites(t *testing.T) {
	m := metrics.New(nil)
	sink := &heldSyncSink{memSink: &memSink{}, hold: make(chan struct{}), fsyncing: make(chan struct{}, 64)}
	// On a writer that fsyncs inline, Record("during") waits out BlockTimeout.
	w := newTestWriter(t, Settings{BlockTimeout: 10 * time.Second}, m, sink)
	if err := w.Record(decision("before")); err != nil {
		t.Fatal(err)
	}
	<-sink.fsyncing // the flush timer's fsync has begun, and is held
	if err := w.Record(decision("during")); err != nil {
		t.Fatalf("a Record waited for an fsync: %v", err)
	}
	if written, synced := sink.holds("during"); !written || synced {
		t.Fatalf("during the fsync: written %v, synced %v", written, synced)
	}

	sink.fail.Store(true)
	sink.hold <- struct{}{} // the held fsync fails,
	sink.hold <- struct{}{} // and so does the writer's own next one
	testkit.Eventually(t, "the trail to stall", func() bool { return w.Admit(context.Background()) != nil })
	sink.fail.Store(false)
	close(sink.hold)
	testkit.Eventually(t, "the trail to recover", func() bool { return w.Admit(context.Background()) == nil })
	testkit.Eventually(t, "every record fsynced", func() bool {
		_, synced := sink.holds("during")
		return synced
	})
	if got := testutil.ToFloat64(m.AuditSinkErrors.WithLabelValues("mem", "sync")); got < 1 {
		t.Errorf("the failed fsync was not counted: %v", got)
	}
	sink.verify(t)
}
