package audit

import (
	"context"
	"path/filepath"
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
