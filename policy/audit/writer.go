package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
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

// backgroundSyncer is a sink whose fsync can run off the writer goroutine,
// so that writes, and the Records waiting for them, do not wait for an
// fsync (~1 ms here, at times 50 ms). beginSync, called on the writer
// goroutine, has no effect of its own: it returns the fsync, safe to run
// on another goroutine beside Write, and finish, which the writer calls
// with its result and which returns the sink's error. A nil run means the
// sink must be synced with Sync this time.
type backgroundSyncer interface {
	beginSync() (run func() error, finish func(error) error)
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

// Durability is the point at which Record returns: what a decision's answer
// waits for.
type Durability string

const (
	// DurabilityWrite (the default) returns once the record has been
	// written to every sink: handed to the operating system, so that a
	// process crash cannot lose it. The writer fsyncs every FlushInterval.
	DurabilityWrite Durability = "write"
	// DurabilityFsync returns once the record has been fsynced, which also
	// survives a power loss: the writer fsyncs each batch as soon as it is
	// written, and the records arriving meanwhile share the next fsync.
	DurabilityFsync Durability = "fsync"
	// DurabilityAsync returns once the record is queued: a crash loses the
	// records still queued.
	DurabilityAsync Durability = "async"
)

// Settings tune a Writer; zero values take the defaults.
type Settings struct {
	// Durability is what Record waits for. Default DurabilityWrite.
	Durability Durability
	// FlushInterval is the group commit period: records are written as soon
	// as the writer takes them, and fsynced together at most this long
	// after the first of them (with DurabilityFsync, at once). Default 100ms.
	FlushInterval time.Duration
	// QueueSize bounds the records waiting for the writer. Default 10000.
	QueueSize int
	// Block makes Admit wait up to BlockTimeout for room instead of
	// refusing at once (audit.on_full: block).
	Block bool
	// BlockTimeout bounds Admit's wait with Block, and Record's wait for
	// room for a decision already admitted and for its record to be
	// written. Default 1s.
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

// Writer is the audit writer. Record queues an event (copying it; no
// goroutine per record) and waits, as Settings.Durability says, until the
// record is written or fsynced; one goroutine encodes and chains the
// records, writes each batch to every sink at once and fsyncs them (group
// commit: the records that arrive while one batch is written wait together
// for the next). A sink that fails stalls the writer, which retries it with
// backoff and never skips a record; while it is stalled or its queue is
// full, Admit refuses, so that gateways deny requests (503) instead of
// serving them without a record.
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

	q       queue
	kick    chan struct{} // the queue has records for the writer
	mu      sync.RWMutex  // Record holds it shared while queueing, Shutdown exclusively
	closed  atomic.Bool
	stalled atomic.Bool
	waiters atomic.Int32
	spaceMu sync.Mutex
	space   chan struct{} // closed when room appears; nil when none waits

	// Tickets (queue positions) of the last record written to every sink
	// and of the last one fsynced; progress is closed when either moves or
	// the writer stalls.
	writtenTo  atomic.Uint64
	syncedTo   atomic.Uint64
	progressMu sync.Mutex
	progress   chan struct{}
	timers     sync.Pool // of *time.Timer, stopped, for awaitDurable

	closing   chan struct{}
	abort     chan struct{} // Shutdown's deadline passed: stop waiting and retrying
	abortOnce sync.Once
	stopped   chan struct{}
	once      sync.Once
	closeErr  error // set by the writer goroutine before stopped closes
	result    error // Shutdown's answer

	// bgDone receives the results of the fsyncs running in the background.
	bgDone chan []error

	// Owned by the writer goroutine.
	bg      *backgroundSync // the fsyncs running in the background, nil if none
	hash    *chainHash
	seq     uint64
	prev    digest
	batch   []Event
	taken   uint64 // ticket of the last record in batch
	buf     []byte
	ends    []int
	lines   []Line
	done    []int
	dirty   bool
	lastErr error
}

// queue is the writer's bounded FIFO. Unlike a channel it numbers the
// records it takes in (tickets), so that Record can wait for the writer to
// have written its own record; a mutex and a ring keep that allocation-free.
type queue struct {
	mu    sync.Mutex
	ring  []Event
	head  int
	n     int
	in    uint64       // tickets handed out: the last record's
	depth atomic.Int64 // n, for readers that do not lock
}

// push adds e and returns its ticket; ok is false when the queue is full.
func (q *queue) push(e *Event) (ticket uint64, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == len(q.ring) {
		return 0, false
	}
	q.ring[(q.head+q.n)%len(q.ring)] = *e
	q.n++
	q.in++
	q.depth.Store(int64(q.n))
	return q.in, true
}

// take moves up to max records into dst and returns it with the ticket of
// the last record taken.
func (q *queue) take(dst []Event, max int) ([]Event, uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for ; q.n > 0 && len(dst) < max; q.n-- {
		dst = append(dst, q.ring[q.head])
		q.ring[q.head] = Event{} // drop references to the event's strings
		q.head = (q.head + 1) % len(q.ring)
	}
	q.depth.Store(int64(q.n))
	return dst, q.in - uint64(q.n)
}

func (q *queue) len() int { return int(q.depth.Load()) }

// NewWriter recovers the chain from the sinks that keep one (the file sink,
// else the HTTP spool: the last record is checked under the key, a torn
// last record is quarantined and an audit_recovered event recorded), then
// starts the writer.
func NewWriter(s Settings, opts Options, sinks ...Sink) (*Writer, error) {
	if len(s.Key) > 0 && len(s.Key) < MinKeyBytes {
		return nil, fmt.Errorf("audit key of %d bytes is too weak: need at least %d", len(s.Key), MinKeyBytes)
	}
	switch s.Durability {
	case "":
		s.Durability = DefaultDurability
	case DurabilityWrite, DurabilityFsync, DurabilityAsync:
	default:
		return nil, fmt.Errorf("audit durability %q: want write, fsync or async", s.Durability)
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
		hash: newChainHash(s.Key), q: queue{ring: make([]Event, s.QueueSize)},
		kick: make(chan struct{}, 1), progress: make(chan struct{}),
		closing: make(chan struct{}), abort: make(chan struct{}), stopped: make(chan struct{}),
		bgDone: make(chan []error, 1),
		done:   make([]int, len(sinks)),
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
	return !w.stalled.Load() && !w.closed.Load() && w.q.len() < len(w.q.ring)
}

func (w *Writer) roomSignal() <-chan struct{} {
	w.spaceMu.Lock()
	defer w.spaceMu.Unlock()
	if w.space == nil {
		w.space = make(chan struct{})
	}
	return w.space
}

// wake releases Admit and Record calls waiting for room.
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

// Record stores e (stamping e.Time when zero) and returns once it is as
// durable as Settings.Durability says: written to every sink (write),
// fsynced (fsync), or queued (async). It waits up to BlockTimeout for room
// in the queue, since the decision was admitted, and as long again for the
// writer; with on_full: deny it stops waiting as soon as a sink fails. A
// record that cannot be queued, or arrives after Shutdown, is counted in
// modelguard_audit_records_lost_total and logged. On any error the caller
// must not act on the decision as recorded: gateways deny it (503).
func (w *Writer) Record(e *Event) error {
	if w == nil {
		return nil
	}
	ticket, err := w.enqueue(e, true)
	if err != nil || w.s.Durability == DurabilityAsync {
		return err
	}
	return w.awaitDurable(ticket, e)
}

// Offer queues e without waiting, for records that acknowledge nothing
// (denials): while the trail is full they are counted in
// modelguard_audit_records_lost_total and logged, never waited for, so
// that a denial is answered at once.
func (w *Writer) Offer(e *Event) error {
	if w == nil {
		return nil
	}
	_, err := w.enqueue(e, false)
	return err
}

// enqueue queues e, waiting up to BlockTimeout for room when wait is set,
// and returns its ticket.
func (w *Writer) enqueue(e *Event, wait bool) (uint64, error) {
	if e.Time.IsZero() {
		e.Time = w.now()
	}
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed.Load() {
		w.lostClosed.Inc()
		w.log.Error("audit record lost: the trail is closed", "kind", e.Kind, "decision_id", e.DecisionID)
		return 0, ErrClosed
	}
	ticket, err := w.push(e, wait)
	switch {
	case errors.Is(err, ErrClosed):
		w.lostClosed.Inc()
		w.log.Error("audit record lost: shutdown ended while it waited for room", "kind", e.Kind, "decision_id", e.DecisionID)
	case err != nil:
		w.lostQueue.Inc()
		w.log.Error("audit record lost: the queue is full", "kind", e.Kind, "decision_id", e.DecisionID, "result", e.Result)
	}
	return ticket, err
}

func (w *Writer) push(e *Event, wait bool) (uint64, error) {
	ticket, ok := w.q.push(e)
	if !ok && wait {
		w.waiters.Add(1)
		defer w.waiters.Add(-1)
		t := time.NewTimer(w.s.BlockTimeout)
		defer t.Stop()
		for !ok {
			room := w.roomSignal()
			if ticket, ok = w.q.push(e); ok {
				break
			}
			select {
			case <-room:
			case <-w.abort:
				return 0, ErrClosed
			case <-t.C:
				return 0, fmt.Errorf("%w: no room in the queue within %v", ErrUnavailable, w.s.BlockTimeout)
			}
		}
	}
	if !ok {
		return 0, ErrUnavailable
	}
	w.metrics.AuditQueueDepth.Set(float64(w.q.len()))
	select {
	case w.kick <- struct{}{}:
	default:
	}
	return ticket, nil
}

// awaitDurable waits until the record with ticket is as durable as Durability
// says. It gives up after BlockTimeout, at Shutdown's deadline, and, with
// on_full: deny, as soon as a sink fails: the record then stays queued or
// in a batch being retried, and is written once the sink recovers.
func (w *Writer) awaitDurable(ticket uint64, e *Event) error {
	reached := &w.writtenTo
	if w.s.Durability == DurabilityFsync {
		reached = &w.syncedTo
	}
	var t *time.Timer // taken only once the record must be waited for
	defer func() { w.putTimer(t) }()
	for {
		progress := w.progressSignal()
		if reached.Load() >= ticket {
			return nil
		}
		if w.stalled.Load() && !w.s.Block {
			return w.notRecorded(e, "a sink is failing", ErrUnavailable)
		}
		if t == nil {
			t = w.timer()
		}
		select {
		case <-progress:
		case <-t.C:
			return w.notRecorded(e, "not written within block_timeout", ErrUnavailable)
		case <-w.abort:
			return w.notRecorded(e, "shutdown ended first", ErrClosed)
		}
	}
}

// notRecorded reports a record queued but not yet durable when its caller
// stopped waiting. It is not lost: the writer writes it when it can.
func (w *Writer) notRecorded(e *Event, why string, err error) error {
	w.log.Error("audit record not durable in time: the decision is denied, though the trail may still record it as given",
		"kind", e.Kind, "decision_id", e.DecisionID, "why", why)
	return fmt.Errorf("%w: record %s", err, why)
}

// timer returns a running timer of BlockTimeout for awaitDurable, from
// the timers earlier calls put back: most records of an allowed request
// wait, and a new timer is two allocations.
func (w *Writer) timer() *time.Timer {
	if t, ok := w.timers.Get().(*time.Timer); ok {
		t.Reset(w.s.BlockTimeout)
		return t
	}
	return time.NewTimer(w.s.BlockTimeout)
}

// putTimer stops t and keeps it for another call. Since Go 1.23 a stopped
// timer's channel holds no stale tick, so a reset timer fires only for its
// own wait.
func (w *Writer) putTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
		w.timers.Put(t)
	}
}

func (w *Writer) progressSignal() <-chan struct{} {
	w.progressMu.Lock()
	defer w.progressMu.Unlock()
	return w.progress
}

// advance wakes the Records waiting for the writer.
func (w *Writer) advance() {
	w.progressMu.Lock()
	close(w.progress)
	w.progress = make(chan struct{})
	w.progressMu.Unlock()
}

// run is the writer goroutine.
func (w *Writer) run() {
	defer close(w.stopped)
	timer := time.NewTimer(w.s.FlushInterval)
	timer.Stop()
	armed := false
	for {
		select {
		case <-w.kick:
			if !w.drain(false) {
				w.giveUp()
				return
			}
			if w.dirty && !armed {
				timer.Reset(w.s.FlushInterval)
				armed = true
			}
		case <-timer.C:
			armed = false
			if !w.periodicSync() {
				w.giveUp()
				return
			}
		case errs := <-w.bgDone:
			if !w.endBackgroundSync(errs) {
				w.giveUp()
				return
			}
			// Records written meanwhile wait for the next fsync.
			if w.dirty && !armed {
				timer.Reset(w.s.FlushInterval)
				armed = true
			}
		case <-w.closing:
			if w.bg != nil && !w.endBackgroundSync(<-w.bgDone) {
				w.giveUp()
				return
			}
			if !w.drain(true) || !w.syncAll() {
				w.giveUp()
				return
			}
			w.closeSinks()
			return
		}
	}
}

// drain writes a batch from the queue, fsyncing it with DurabilityFsync,
// and asks for another turn while records remain (so that the flush timer
// gets its turns under steady load); with all, it writes until the queue is
// empty. false if the writer was aborted.
func (w *Writer) drain(all bool) bool {
	if !all {
		// Group commit: let the callers that are ready to run queue their
		// records before taking a batch, so that they share its write.
		// Without this the writer, woken by the first record, took it alone:
		// one write call per record on a server pinned to one CPU
		// (BenchmarkRecordCallers, -cpu 1).
		runtime.Gosched()
	}
	for {
		w.batch, w.taken = w.q.take(w.batch[:0], maxBatch)
		w.metrics.AuditQueueDepth.Set(float64(w.q.len()))
		if len(w.batch) == 0 {
			return true
		}
		w.wake()
		if !w.commit() {
			return false
		}
		w.writtenTo.Store(w.taken)
		if w.s.Durability != DurabilityFsync {
			w.advance()
		} else if !w.syncAll() {
			return false
		}
		if !all {
			if w.q.len() > 0 {
				select {
				case w.kick <- struct{}{}:
				default:
				}
			}
			return true
		}
	}
}

// commit encodes the batch and writes it to every sink, retrying until
// they all took it; false if the writer was aborted first.
func (w *Writer) commit() bool {
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

// periodicSync is the flush timer's fsync. Unless Records wait for fsyncs
// (DurabilityFsync), it runs in the background when every sink can
// (backgroundSyncer): the writer goes on writing meanwhile, so that no
// Record waits for it. One runs at a time; the timer is armed again when
// it ends if records were written meanwhile. false if the writer was
// aborted.
func (w *Writer) periodicSync() bool {
	switch {
	case !w.dirty, w.bg != nil:
		return true
	case w.s.Durability != DurabilityFsync && w.beginBackgroundSync():
		return true
	}
	return w.syncAll()
}

// backgroundSync is a group of fsyncs running in the background: what they
// make durable (the writer's ticket and seq when they began) and how each
// sink applies its result.
type backgroundSync struct {
	ticket, seq uint64
	finish      []func(error) error
}

// beginBackgroundSync starts fsyncing every sink in the background; false
// when a sink cannot.
func (w *Writer) beginBackgroundSync() bool {
	runs := make([]func() error, len(w.sinks))
	finish := make([]func(error) error, len(w.sinks))
	for i, k := range w.sinks {
		b, ok := k.(backgroundSyncer)
		if !ok {
			return false
		}
		if runs[i], finish[i] = b.beginSync(); runs[i] == nil {
			return false
		}
	}
	w.bg = &backgroundSync{ticket: w.writtenTo.Load(), seq: w.seq, finish: finish}
	w.dirty = false
	go func() {
		errs := make([]error, len(runs))
		for i, run := range runs {
			start := time.Now()
			errs[i] = run()
			w.syncTime[i].Observe(time.Since(start).Seconds())
		}
		w.bgDone <- errs
	}()
	return true
}

// endBackgroundSync applies the results of the background fsyncs. After a
// failure the sinks rewrite what may not be durable, and the writer syncs
// them itself, retrying and stalling the trail until they succeed; false
// if it was aborted meanwhile.
func (w *Writer) endBackgroundSync(errs []error) bool {
	bg := w.bg
	w.bg = nil
	var failed []error
	for i, finish := range bg.finish {
		if err := finish(errs[i]); err != nil {
			w.syncErrs[i].Inc()
			failed = append(failed, err)
		}
	}
	if len(failed) > 0 {
		w.log.Error("audit fsync failed; syncing again", "error", errors.Join(failed...))
		w.dirty = true
		return w.syncAll()
	}
	w.syncedThrough(bg.ticket, bg.seq)
	return true
}

// syncAll makes every sink durable, retrying those that fail; false if the
// writer was aborted first.
func (w *Writer) syncAll() bool {
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
		w.syncedThrough(w.writtenTo.Load(), w.seq)
		return true
	}
}

// syncedThrough records that every record up to ticket (seq) is durable.
func (w *Writer) syncedThrough(ticket, seq uint64) {
	w.syncedTo.Store(ticket)
	w.metrics.AuditSyncedSeq.Set(float64(seq))
	w.advance()
	if w.stalled.Swap(false) {
		w.log.Info("audit trail recovered: requests are admitted again", "seq", seq)
		w.wake()
	}
}

// pause marks the writer stalled after a sink failure and waits before
// the next attempt; false if the writer was aborted meanwhile.
func (w *Writer) pause(attempt int, err error) bool {
	w.lastErr = err
	if !w.stalled.Swap(true) {
		w.log.Error("audit sink failing: requests are denied until it recovers; retrying", "error", err)
		w.advance() // Records waiting with on_full: deny stop waiting
	}
	delay := backoff(10*time.Millisecond, maxRetryDelay, attempt)
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.abort:
		return false
	}
}

// maxRetryDelay bounds the wait between attempts on a failing sink, so that
// the trail resumes soon after the cause is fixed (disk space freed).
const maxRetryDelay = 200 * time.Millisecond

// giveUp ends the writer after Shutdown's deadline passed with a sink still
// failing: whatever was not written is counted as lost.
func (w *Writer) giveUp() {
	lost := len(w.lines)
	for _, d := range w.done {
		lost = min(lost, d)
	}
	lost = len(w.lines) - lost
	for {
		var n int
		w.batch, _ = w.q.take(w.batch[:0], maxBatch)
		if n = len(w.batch); n == 0 {
			break
		}
		lost += n
	}
	clear(w.batch)
	w.metrics.AuditQueueDepth.Set(0)
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
			w.metrics.AuditLost.WithLabelValues("shutdown").Add(float64(w.q.len()))
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
