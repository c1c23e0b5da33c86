package audit

import (
	"context"
	"crypto/sha256"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

func benchEvent() Event {
	return Event{Time: time.Now(), Kind: KindDecision, DecisionID: "0123456789abcdef0123456789abcdef", RequestID: "req-1",
		Gateway: "envoy", Subject: "alice", AuthMethod: "api_key", KeyID: "alice-laptop", Model: "gpt-4o-mini",
		Operation: "chat", Method: "POST", Path: "/v1/chat/completions", SourceAddress: "10.0.0.7:51000",
		Result: "allow", Status: 200, Reason: "allowed", PolicyRevision: "4f1c2a", LatencyMicros: 42}
}

// BenchmarkFileSink is the audit trail's throughput: records queued from
// parallel goroutines, chained, written and fsynced in groups (every 100ms,
// the default) to a file on this machine. The timed region includes the
// final flush, so every record counted is durable.
func BenchmarkFileSink(b *testing.B) {
	path := filepath.Join(b.TempDir(), "audit.jsonl")
	w, err := NewWriter(Settings{BlockTimeout: time.Minute}, Options{}, NewFileSink(path, 0, 0, nil))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		e := benchEvent()
		for pb.Next() {
			if err := w.Record(&e); err != nil {
				b.Error(err)
				return
			}
		}
	})
	if err := w.Shutdown(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkEncode is the writer's cost per record: canonical encoding and
// the chain hash, plain and keyed.
func BenchmarkEncode(b *testing.B) {
	for _, tc := range []struct {
		name string
		key  []byte
	}{{"sha256", nil}, {"hmac", make([]byte, 32)}} {
		b.Run(tc.name, func(b *testing.B) {
			e := benchEvent()
			c := newChainHash(tc.key)
			var (
				buf  []byte
				prev digest
			)
			b.ReportAllocs()
			for b.Loop() {
				buf, prev = appendRecord(buf[:0], &e, 1, &prev, c)
			}
			b.SetBytes(int64(len(buf)))
		})
	}
}

// countingSink counts the writes a sink gets: one per batch.
type countingSink struct {
	Sink
	writes atomic.Int64
}

// recover opens the file sink (a new file: nothing to recover).
func (s *countingSink) recover(check checkFunc) (recovered, error) {
	return s.Sink.(recoverer).recover(check)
}

func (s *countingSink) Write(recs []Line) (int, error) {
	s.writes.Add(1)
	return s.Sink.Write(recs)
}

// BenchmarkRecordCallers is Record with the default durability (each
// caller waits for its record's write) from 50 callers, as many as the
// checks a gateway keeps in flight, each doing ~20us of other work (a
// decision) between records. Run with -cpu 1 it is a server pinned to one
// CPU; records/write is how many records the writer groups in one write.
func BenchmarkRecordCallers(b *testing.B) {
	sink := &countingSink{Sink: NewFileSink(filepath.Join(b.TempDir(), "audit.jsonl"), 0, 0, nil)}
	w, err := NewWriter(Settings{BlockTimeout: time.Minute}, Options{}, sink)
	if err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(max(1, 50/runtime.GOMAXPROCS(0)))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		e := benchEvent()
		var work [1024]byte
		for pb.Next() {
			for range 8 { // ~20us on this machine
				sum := sha256.Sum256(work[:])
				copy(work[:], sum[:])
			}
			if err := w.Record(&e); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if err := w.Shutdown(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/float64(sink.writes.Load()), "records/write")
}
