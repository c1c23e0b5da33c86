// Package audit defines the audit event, one per decision, and writes events
// as JSON lines. Events never carry tokens, keys or request bodies.
package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Event is one audit record. It is the single definition of the audit
// schema; every gateway produces the same fields.
type Event struct {
	Time           time.Time `json:"time"`
	DecisionID     string    `json:"decision_id"`
	RequestID      string    `json:"request_id,omitempty"`
	Gateway        string    `json:"gateway"`
	Subject        string    `json:"subject,omitempty"`
	AuthMethod     string    `json:"auth_method,omitempty"`
	KeyID          string    `json:"key_id,omitempty"`
	Issuer         string    `json:"issuer,omitempty"`
	Model          string    `json:"model,omitempty"`
	Operation      string    `json:"operation,omitempty"`
	Method         string    `json:"method"`
	Path           string    `json:"path"`
	SourceAddress  string    `json:"source_address,omitempty"`
	Result         string    `json:"result"` // "allow" or "deny"
	Status         int       `json:"status"`
	Reason         string    `json:"reason"`
	PolicyRevision string    `json:"policy_revision,omitempty"`
	LatencyMicros  int64     `json:"latency_us"`
}

// Writer writes events as JSON lines to an io.Writer. It is safe for
// concurrent use; each event is written with a single Write call so lines
// from concurrent requests never interleave.
type Writer struct {
	mu  sync.Mutex
	w   io.Writer
	buf bytes.Buffer
	enc *json.Encoder
	c   io.Closer
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer {
	aw := &Writer{w: w}
	aw.enc = json.NewEncoder(&aw.buf)
	aw.enc.SetEscapeHTML(false)
	return aw
}

// Open returns the Writer for a configured output: "stdout", "off" (nil
// Writer, nothing recorded) or a file path opened for appending.
func Open(output string) (*Writer, error) {
	switch output {
	case "off":
		return nil, nil
	case "", "stdout":
		return NewWriter(os.Stdout), nil
	}
	f, err := os.OpenFile(output, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: open %s: %w", output, err)
	}
	w := NewWriter(f)
	w.c = f
	return w, nil
}

// Record writes one event.
func (w *Writer) Record(e *Event) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Reset()
	if err := w.enc.Encode(e); err != nil {
		return fmt.Errorf("audit: encode: %w", err)
	}
	if _, err := w.w.Write(w.buf.Bytes()); err != nil {
		return fmt.Errorf("audit: write: %w", err)
	}
	return nil
}

// Close closes the underlying file, if Open opened one.
func (w *Writer) Close() error {
	if w == nil || w.c == nil {
		return nil
	}
	return w.c.Close()
}
