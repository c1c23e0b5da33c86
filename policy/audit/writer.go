package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/modelguard/modelguard/policy/metrics"
)

// Line is one encoded record, with its newline. Data is valid only during
// the Sink call that receives it.
type Line struct {
	Seq  uint64
	Data []byte
}

// Sink stores encoded records in chain order. The writer calls it from one
// goroutine at a time.
type Sink interface {
	// Name labels the sink in metrics and logs.
	Name() string
	// Write appends recs and returns how many of them it appended whole;
	// on error the writer calls it again with the rest. A sink must not
	// keep a partial record of the ones it did not count.
	Write(recs []Line) (int, error)
	// Sync makes every record written so far durable.
	Sync() error
	// Close syncs and releases the sink.
	Close() error
}

// checkFunc checks one record line and returns its seq and hash.
type checkFunc func(line []byte) (uint64, digest, error)

// recovered is the end of the trail a sink found at start.
type recovered struct {
	found       bool
	seq         uint64
	hash        digest
	quarantined string // where a torn last record was moved, "" if none
	torn        int64
}

// recoverer is a sink that keeps the trail across restarts.
type recoverer interface {
	recover(check checkFunc) (recovered, error)
}

// Errors Admit and Record return.
var (
	ErrUnavailable = errors.New("audit trail unavailable: its queue is full or a sink is failing")
	ErrClosed      = errors.New("audit trail closed")
)

// Settings tune a Writer; zero values take the defaults.
type Settings struct {
	// FlushInterval is the group commit period: records are written as soon
	// as the writer takes them, and fsynced together at most this long
	// after the first of them. Default 100ms.
	FlushInterval time.Duration
	// QueueSize bounds the records waiting for the writer. Default 10000.
	QueueSize int
	// Block makes Admit wait up to BlockTimeout for room instead of
	// refusing at once (audit.on_full: block).
	Block bool
	// BlockTimeout bounds Admit's wait with Block, and Record's wait for
	// room for a decision already admitted. Default 1s.
	BlockTimeout time.Duration
	// Key makes the chain keyed (HMAC-SHA256); at least MinKeyBytes.
	Key []byte
}

// Options are the Writer's collaborators; all are optional.
type Options struct {
	Logger  *slog.Logger
	Metrics *metrics.Metrics
	// Now stamps events that carry no time; nil means time.Now.
	Now func() time.Time
}

// maxBatch bounds the records taken from the queue in one write.
const maxBatch = 1024

// Writer is the asynchronous audit writer. Record queues an event (copying
// it; no goroutine or allocation per record); one goroutine encodes and
// chains the records, writes each batch to every sink at once and fsyncs
// them every FlushInterval (group commit). A sink that fails stalls the
// writer, which retries it with backoff and never skips a record; while it
// is stalled or its queue is full, Admit refuses, so that gateways deny
// requests (503) instead of serving them without a record.
type Writer struct {
	s       Settings
	sinks   []Sink
	log     *slog.Logger
	metrics *metrics.Metrics
	now     func() time.Time

	written    []prometheus.Counter
	syncTime   []prometheus.Observer
	writeErrs  []prometheus.Counter
	syncErrs   []prometheus.Counter
	lostQueue  prometheus.Counter
	lostClosed prometheus.Counter

	q       chan Event
	mu      sync.RWMutex // Record holds it shared, Shutdown exclusively
	closed  atomic.Bool
	stalled atomic.Bool
	waiters atomic.Int32
	spaceMu sync.Mutex
	space   chan struct{} // closed when room appears; nil when none waits

	closing   chan struct{}
	abort     chan struct{} // Shutdown's deadline passed: stop waiting and retrying
	abortOnce sync.Once
	stopped   chan struct{}
	once      sync.Once
	closeErr  error // set by the writer goroutine before stopped closes
	result    error // Shutdown's answer

	// writeThrough: Record writes the line itself before returning (Open).
	writeThrough bool
	kick         chan struct{}

	// Owned by the goroutine that writes (the loop, or Record under wmu in
	// write-through mode).
	wmu     sync.Mutex
	hash    *chainHash
	seq     uint64
	prev    digest
	batch   []Event
	buf     []byte
	ends    []int
	lines   []Line
	done    []int
	dirty   bool
	lastErr error
}

// NewWriter recovers the chain from the sinks that keep one (the file sink,
// else the HTTP spool: the last record is checked under the key, a torn
// last record is quarantined and an audit_recovered event recorded), then
// starts the writer.
func NewWriter(s Settings, opts Options, sinks ...Sink) (*Writer, error) {
	return newWriter(s, opts, false, sinks)
}

func newWriter(s Settings, opts Options, writeThrough bool, sinks []Sink) (*Writer, error) {
	if len(s.Key) > 0 && len(s.Key) < MinKeyBytes {
		return nil, fmt.Errorf("audit key of %d bytes is too weak: need at least %d", len(s.Key), MinKeyBytes)
	}
	if s.FlushInterval <= 0 {
		s.FlushInterval = DefaultFlushInterval
	}
	if s.QueueSize <= 0 {
		s.QueueSize = DefaultQueueSize
	}
	if s.BlockTimeout <= 0 {
		s.BlockTimeout = DefaultBlockTimeout
	}
	w := &Writer{
		s: s, sinks: sinks, log: opts.Logger, metrics: opts.Metrics, now: opts.Now,
		hash: newChainHash(s.Key), writeThrough: writeThrough,
		closing: make(chan struct{}), abort: make(chan struct{}), stopped: make(chan struct{}),
		kick: make(chan struct{}, 1), done: make([]int, len(sinks)),
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	if w.metrics == nil {
		w.metrics = metrics.New(nil)
	}
	if w.now == nil {
		w.now = time.Now
	}
	if !writeThrough {
		w.q = make(chan Event, s.QueueSize)
	}
	for _, k := range sinks {
		w.written = append(w.written, w.metrics.AuditRecords.WithLabelValues(k.Name()))
		w.syncTime = append(w.syncTime, w.metrics.AuditSyncDuration.WithLabelValues(k.Name()))
		w.writeErrs = append(w.writeErrs, w.metrics.AuditSinkErrors.WithLabelValues(k.Name(), "write"))
		w.syncErrs = append(w.syncErrs, w.metrics.AuditSinkErrors.WithLabelValues(k.Name(), "sync"))
	}
	w.lostQueue = w.metrics.AuditLost.WithLabelValues("queue_full")
	w.lostClosed = w.metrics.AuditLost.WithLabelValues("closed")

	notes, err := w.recover()
	if err != nil {
		for _, k := range sinks {
			k.Close()
		}
		return nil, err
	}
	go w.run()
	for _, e := range notes {
		if err := w.Record(&e); err != nil {
			w.Shutdown(context.Background())
			return nil, err
		}
	}
	return w, nil
}

// recover sets the chain's tail from the sinks and returns the events to
// record about what it found.
func (w *Writer) recover() ([]Event, error) {
	check := func(line []byte) (uint64, digest, error) {
		e, sum, scratch, err := checkLine(line, w.hash, w.buf)
		w.buf = scratch
		return e.Seq, sum, err
	}
	var (
		file  *FileSink
		spool *HTTPSink
		notes []Event
		tails = map[Sink]recovered{}
	)
	for _, k := range w.sinks {
		r, ok := k.(recoverer)
		if !ok {
			continue
		}
		rec, err := r.recover(check)
		if err != nil {
			return nil, &SinkError{Sink: k.Name(), Err: err}
		}
		tails[k] = rec
		switch k := k.(type) {
		case *FileSink:
			file = k
		case *HTTPSink:
			spool = k
		}
		if rec.quarantined != "" {
			w.log.Warn("audit: a torn last record (a write cut short by a crash) was quarantined; the chain continues from the record before it",
				"sink", k.Name(), "bytes", rec.torn, "quarantine", rec.quarantined)
			notes = append(notes, Event{Kind: KindRecovered, Outcome: "quarantined",
				Detail: fmt.Sprintf("torn last record of %d bytes in the %s sink", rec.torn, k.Name()), File: rec.quarantined})
		}
	}
	var tail recovered
	switch {
	case file != nil:
		tail = tails[file]
		if spool != nil {
			if err := spool.align(tails[spool], tail, file, check); err != nil {
				return nil, &SinkError{Sink: spool.Name(), Err: err}
			}
		}
	case spool != nil:
		tail = tails[spool]
	}
	if spool != nil {
		if err := spool.start(); err != nil {
			return nil, &SinkError{Sink: spool.Name(), Err: err}
		}
	}
	w.seq, w.prev = tail.seq, tail.hash
	return notes, nil
}

// SinkError is a sink's failure to open at start.
type SinkError struct {
	Sink string
	Err  error
}

func (e *SinkError) Error() string { return fmt.Sprintf("audit %s sink: %v", e.Sink, e.Err) }
func (e *SinkError) Unwrap() error { return e.Err }

// Admit reports whether the trail can take a record now: nil, or
// ErrUnavailable while the queue is full or a sink is failing. With Block it
// first waits up to BlockTimeout (and ctx) for that to change. Gateways
// call it before allowing a request, through policy.Engine.
func (w *Writer) Admit(ctx context.Context) error {
	if w == nil || w.ready() {
		return nil
	}
	if w.closed.Load() {
		return ErrClosed
	}
	if !w.s.Block {
		return ErrUnavailable
	}
	w.waiters.Add(1)
	defer w.waiters.Add(-1)
	t := time.NewTimer(w.s.BlockTimeout)
	defer t.Stop()
	for {
		room := w.roomSignal()
		if w.ready() {
			return nil
		}
		select {
		case <-room:
		case <-t.C:
			return ErrUnavailable
		case <-ctx.Done():
			return ErrUnavailable
		}
	}
}

func (w *Writer) ready() bool {
	return !w.stalled.Load() && !w.closed.Load() && (w.writeThrough || len(w.q) < cap(w.q))
}

func (w *Writer) roomSignal() <-chan struct{} {
	w.spaceMu.Lock()
	defer w.spaceMu.Unlock()
	if w.space == nil {
		w.space = make(chan struct{})
	}
	return w.space
}

// wake releases Admit calls waiting for room.
func (w *Writer) wake() {
	if w.waiters.Load() == 0 {
		return
	}
	w.spaceMu.Lock()
	if w.space != nil {
		close(w.space)
		w.space = nil
	}
	w.spaceMu.Unlock()
}

// Record queues e (stamping e.Time when zero). When the queue is full it
// waits up to BlockTimeout for room: the decision was admitted, so its
// record must not be dropped for a burst. A record that still cannot be
// queued, or arrives after Shutdown, is counted in
// modelguard_audit_records_lost_total and logged, and an error returned.
func (w *Writer) Record(e *Event) error {
	if w == nil {
		return nil
	}
	if e.Time.IsZero() {
		e.Time = w.now()
	}
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed.Load() {
		w.lostClosed.Inc()
		w.log.Error("audit record lost: the trail is closed", "kind", e.Kind, "decision_id", e.DecisionID)
		return ErrClosed
	}
	if w.writeThrough {
		return w.writeOne(e)
	}
	select {
	case w.q <- *e:
		return nil
	default:
	}
	t := time.NewTimer(w.s.BlockTimeout)
	defer t.Stop()
	select {
	case w.q <- *e:
		return nil
	case <-w.abort:
		w.lostClosed.Inc()
		w.log.Error("audit record lost: shutdown ended while it waited for room", "kind", e.Kind, "decision_id", e.DecisionID)
		return ErrClosed
	case <-t.C:
		w.lostQueue.Inc()
		w.log.Error("audit record lost: the queue stayed full", "kind", e.Kind, "decision_id", e.DecisionID, "waited", w.s.BlockTimeout.String())
		return fmt.Errorf("%w: no room in the queue within %v", ErrUnavailable, w.s.BlockTimeout)
	}
}

// writeOne writes one record before returning (write-through mode). A
// failure leaves the chain as it was: the record is counted as lost.
func (w *Writer) writeOne(e *Event) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	seq, prev := w.seq, w.prev
	w.batch = append(w.batch[:0], *e)
	w.encode()
	if err := w.writeSinks(); err != nil {
		w.seq, w.prev = seq, prev
		w.metrics.AuditLost.WithLabelValues("write_failed").Inc()
		w.log.Error("audit record lost: write failed", "kind", e.Kind, "decision_id", e.DecisionID, "error", err)
		return err
	}
	w.dirty = true
	select {
	case w.kick <- struct{}{}:
	default:
	}
	return nil
}

// run is the writer goroutine.
func (w *Writer) run() {
	defer close(w.stopped)
	timer := time.NewTimer(w.s.FlushInterval)
	timer.Stop()
	armed := false
	arm := func() {
		if !armed {
			timer.Reset(w.s.FlushInterval)
			armed = true
		}
	}
	for {
		select {
		case e := <-w.q:
			w.batch = append(w.batch[:0], e)
			w.fill(maxBatch)
			if !w.commit() {
				w.giveUp()
				return
			}
			arm()
		case <-w.kick:
			arm()
		case <-timer.C:
			armed = false
			if !w.syncAll() {
				w.giveUp()
				return
			}
		case <-w.closing:
			for len(w.q) > 0 {
				w.batch = w.batch[:0]
				w.fill(maxBatch)
				if !w.commit() {
					w.giveUp()
					return
				}
			}
			if !w.syncAll() {
				w.giveUp()
				return
			}
			w.closeSinks()
			return
		}
		if w.q != nil {
			w.metrics.AuditQueueDepth.Set(float64(len(w.q)))
		}
		w.wake()
	}
}

// fill adds queued events to the batch, without waiting, up to n.
func (w *Writer) fill(n int) {
	for len(w.batch) < n {
		select {
		case e := <-w.q:
			w.batch = append(w.batch, e)
		default:
			return
		}
	}
}

// commit encodes the batch and writes it to every sink, retrying until
// they all took it; false if the writer was aborted first.
func (w *Writer) commit() bool {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	w.encode()
	for attempt := 0; ; attempt++ {
		err := w.writeSinks()
		if err == nil {
			w.dirty = true
			return true
		}
		if !w.pause(attempt, err) {
			return false
		}
		// Make what was written durable before retrying: a full spool
		// seals its segment that way, so that delivery can drain it.
		for i, k := range w.sinks {
			if err := k.Sync(); err != nil {
				w.syncErrs[i].Inc()
			}
		}
	}
}

// encode chains and encodes the batch into lines.
func (w *Writer) encode() {
	if cap(w.buf) > maxKeptBuffer {
		w.buf = nil // after a burst of long records
	}
	w.buf, w.ends, w.lines = w.buf[:0], w.ends[:0], w.lines[:0]
	first := w.seq + 1
	for i := range w.batch {
		w.seq++
		w.buf, w.prev = appendRecord(w.buf, &w.batch[i], w.seq, &w.prev, w.hash)
		w.ends = append(w.ends, len(w.buf))
	}
	start := 0
	for i, end := range w.ends {
		w.lines = append(w.lines, Line{Seq: first + uint64(i), Data: w.buf[start:end]})
		start = end
	}
	clear(w.done)
	clear(w.batch) // drop references to the events' strings
}

// writeSinks writes the lines each sink has not taken yet.
func (w *Writer) writeSinks() error {
	var errs []error
	for i, k := range w.sinks {
		if w.done[i] == len(w.lines) {
			continue
		}
		n, err := k.Write(w.lines[w.done[i]:])
		w.done[i] += n
		w.written[i].Add(float64(n))
		if err != nil {
			w.writeErrs[i].Inc()
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// syncAll makes every sink durable, retrying those that fail; false if the
// writer was aborted first.
func (w *Writer) syncAll() bool {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if !w.dirty {
		return true
	}
	pending := make([]bool, len(w.sinks)) // once per flush interval
	for i := range pending {
		pending[i] = true
	}
	for attempt := 0; ; attempt++ {
		var errs []error
		for i, k := range w.sinks {
			if !pending[i] {
				continue
			}
			start := time.Now()
			err := k.Sync()
			w.syncTime[i].Observe(time.Since(start).Seconds())
			if err != nil {
				w.syncErrs[i].Inc()
				errs = append(errs, err)
				continue
			}
			pending[i] = false
		}
		if err := errors.Join(errs...); err != nil {
			if !w.pause(attempt, err) {
				return false
			}
			continue
		}
		w.dirty = false
		w.metrics.AuditSyncedSeq.Set(float64(w.seq))
		if w.stalled.Swap(false) {
			w.log.Info("audit trail recovered: requests are admitted again", "seq", w.seq)
			w.wake()
		}
		return true
	}
}

// pause marks the writer stalled after a sink failure and waits before
// the next attempt; false if the writer was aborted meanwhile.
func (w *Writer) pause(attempt int, err error) bool {
	w.lastErr = err
	if !w.stalled.Swap(true) {
		w.log.Error("audit sink failing: requests are denied until it recovers; retrying", "error", err)
	}
	delay := backoff(10*time.Millisecond, time.Second, attempt)
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.abort:
		return false
	}
}

// giveUp ends the writer after Shutdown's deadline passed with a sink still
// failing: whatever was not written is counted as lost.
func (w *Writer) giveUp() {
	lost := len(w.lines)
	for _, d := range w.done {
		lost = min(lost, d)
	}
	lost = len(w.lines) - lost
	if w.q != nil {
		lost += len(w.q)
		for len(w.q) > 0 {
			<-w.q
		}
	}
	w.metrics.AuditLost.WithLabelValues("shutdown").Add(float64(lost))
	w.closeErr = fmt.Errorf("audit: %d records not written at shutdown: %w", lost, w.lastErr)
	w.log.Error("audit trail closed with records not written", "records", lost, "error", w.lastErr)
	w.closeSinks()
}

func (w *Writer) closeSinks() {
	var errs []error
	for _, k := range w.sinks {
		if err := k.Close(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k.Name(), err))
		}
	}
	w.closeErr = errors.Join(append([]error{w.closeErr}, errs...)...)
}

// abortGrace is how long Shutdown still waits, once its context has ended,
// for the writer to count what it could not write; a sink call that hangs
// beyond it is abandoned.
const abortGrace = time.Second

// Shutdown stops taking records, writes and fsyncs everything queued and
// closes the sinks. If ctx ends first while a sink is failing, what remains
// is counted as lost and reported in the error; a sink call that hangs is
// abandoned. It is safe to call more than once.
func (w *Writer) Shutdown(ctx context.Context) error {
	if w == nil {
		return nil
	}
	w.once.Do(func() {
		w.closed.Store(true) // new Records refuse
		w.wake()
		// Wait for the Records in flight (they hold the lock shared), so that
		// nothing is queued after the writer's last drain.
		inFlight := make(chan struct{})
		go func() {
			w.mu.Lock()
			w.mu.Unlock()
			close(inFlight)
		}()
		hung := errors.New("audit: shutdown deadline passed while a sink call hung: records may not be flushed")
		if !w.await(ctx, inFlight) {
			w.result = hung
			return
		}
		close(w.closing)
		if !w.await(ctx, w.stopped) {
			if w.q != nil {
				w.metrics.AuditLost.WithLabelValues("shutdown").Add(float64(len(w.q)))
			}
			w.result = hung
			return
		}
		w.result = w.closeErr
	})
	return w.result
}

// await waits for done. Once ctx ends it aborts the writer's waits and
// retries, and waits abortGrace more; false if done has not come.
func (w *Writer) await(ctx context.Context, done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	case <-ctx.Done():
	}
	w.stop()
	t := time.NewTimer(abortGrace)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// stop aborts waits and retries once Shutdown's deadline has passed.
func (w *Writer) stop() { w.abortOnce.Do(func() { close(w.abort) }) }

// Close is Shutdown with a 10 second bound.
func (w *Writer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return w.Shutdown(ctx)
}
