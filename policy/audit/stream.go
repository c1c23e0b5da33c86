package audit

import (
	"fmt"
	"io"
)

// StreamSink writes records to a stream such as stdout, for a log agent to
// collect. It cannot fsync a pipe and cannot recover the chain at start: a
// stream trail starts a new chain (seq 1) at every start.
type StreamSink struct {
	name string
	w    io.Writer
	buf  []byte
}

// NewStreamSink returns a sink named name (the metrics label) on w.
func NewStreamSink(name string, w io.Writer) *StreamSink { return &StreamSink{name: name, w: w} }

// Name implements Sink.
func (s *StreamSink) Name() string { return s.name }

// Write implements Sink with one write call per batch. A failed write may
// leave a partial line on the stream; the records are written again whole.
func (s *StreamSink) Write(recs []Line) (int, error) {
	s.buf = s.buf[:0]
	for _, r := range recs {
		s.buf = append(s.buf, r.Data...)
	}
	if _, err := s.w.Write(s.buf); err != nil {
		return 0, fmt.Errorf("write %s: %w", s.name, err)
	}
	if cap(s.buf) > maxKeptBuffer {
		s.buf = nil
	}
	return len(recs), nil
}

// Sync implements Sink: a stream is flushed by every write.
func (s *StreamSink) Sync() error { return nil }

// Close implements Sink; the stream belongs to the caller.
func (s *StreamSink) Close() error { return nil }
