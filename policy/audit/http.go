package audit

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/modelguard/modelguard/policy/metrics"
)

// HTTPSettings configure an HTTPSink.
type HTTPSettings struct {
	// URL receives POSTs of gzip-compressed JSON lines.
	URL string
	// Token, when set, is sent as "Authorization: Bearer <token>".
	Token string
	// Timeout bounds one POST; default 10s.
	Timeout time.Duration
	// SpoolDir holds records until the endpoint acknowledges them.
	SpoolDir string
	// SpoolMaxBytes caps the spool; when full, Write fails, so the writer
	// stalls and requests are denied until the endpoint catches up.
	// Default 1 GiB.
	SpoolMaxBytes int64
	// Client sends the POSTs; nil is a default client.
	Client *http.Client
	// MinBackoff and MaxBackoff bound the delay between failed POSTs,
	// doubling from one to the other; defaults 100ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// MaxBatchBytes bounds the uncompressed records of one POST (one spool
	// segment is always sent whole); default 1 MiB.
	MaxBatchBytes int
}

// Spool file names: the segment being written, sealed segments named after
// their first seq (20 digits, so name order is chain order), and the state
// (seq and hash of the last sealed record), which keeps the chain when every
// segment has been delivered and removed.
const (
	spoolActive = "active.ndjson"
	spoolLock   = "lock" // held while a writer uses the spool
	spoolSuffix = ".ndjson"
	spoolState  = "chain.state"
)

// HTTPSink delivers records to an HTTP endpoint at least once. Every record
// is first appended to a segment file in the spool directory, which is
// fsynced and sealed at each flush; a sender goroutine POSTs sealed segments
// in order (batched, gzip), removes them once the endpoint answers 2xx, and
// retries failures with exponential backoff, so records wait on disk while
// the endpoint is down and are drained when it is back. Each record carries
// its seq and hash: receivers de-duplicate on hash.
type HTTPSink struct {
	s   HTTPSettings
	log *slog.Logger

	delivered  prometheus.Counter
	sendErrors prometheus.Counter
	spoolGauge prometheus.Gauge

	// Writer side (one goroutine).
	lock        *os.File // the spool's lock, held from recover to Close
	active      *appendFile
	activeFirst uint64
	lastLine    []byte // last record written to active, for the state file

	spoolBytes atomic.Int64 // sealed segments + active
	healthy    atomic.Bool  // no POST failed since the last success
	notify     chan struct{}
	cancel     context.CancelFunc
	sending    sync.WaitGroup
}

// NewHTTPSink returns a sink for s; the writer opens its spool and starts
// delivery.
func NewHTTPSink(s HTTPSettings, log *slog.Logger, m *metrics.Metrics) *HTTPSink {
	if s.Timeout <= 0 {
		s.Timeout = DefaultHTTPTimeout
	}
	if s.SpoolMaxBytes <= 0 {
		s.SpoolMaxBytes = DefaultSpoolMaxBytes
	}
	if s.Client == nil {
		s.Client = &http.Client{Timeout: s.Timeout}
	}
	if s.MinBackoff <= 0 {
		s.MinBackoff = 100 * time.Millisecond
	}
	if s.MaxBackoff < s.MinBackoff {
		s.MaxBackoff = max(30*time.Second, s.MinBackoff)
	}
	if s.MaxBatchBytes <= 0 {
		s.MaxBatchBytes = 1 << 20
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if m == nil {
		m = metrics.New(nil)
	}
	h := &HTTPSink{s: s, log: log, notify: make(chan struct{}, 1),
		delivered:  m.AuditHTTPDelivered,
		sendErrors: m.AuditSinkErrors.WithLabelValues("http", "send"),
		spoolGauge: m.AuditSpoolBytes,
	}
	h.healthy.Store(true) // until a POST fails
	return h
}

// Name implements Sink.
func (h *HTTPSink) Name() string { return "http" }

// ErrSpoolFull is returned by HTTPSink.Write while the spool is at its cap.
var ErrSpoolFull = errors.New("audit spool full: the HTTP endpoint is not taking records")

// recover opens the spool: it quarantines a torn record in the active
// segment, seals it, and returns the last record the spool knows of (the
// active segment's, the newest sealed segment's, or the state file's).
func (h *HTTPSink) recover(check checkFunc) (recovered, error) {
	var r recovered
	if err := os.MkdirAll(h.s.SpoolDir, 0o700); err != nil {
		return r, err
	}
	lock, err := lockFile(filepath.Join(h.s.SpoolDir, spoolLock), h.s.SpoolDir)
	if err != nil {
		return r, err
	}
	h.lock = lock // the writer closes a sink whose recovery failed
	path := filepath.Join(h.s.SpoolDir, spoolActive)
	osf, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return r, err
	}
	t, err := readTail(osf)
	if err == nil {
		r.quarantined, err = quarantine(path, osf, t)
		r.torn = t.size - t.end
	}
	if err != nil {
		osf.Close()
		return r, err
	}
	h.active = &appendFile{f: osf, size: t.end, synced: t.end}
	if t.last != nil {
		first, err := firstLine(osf)
		if err == nil {
			h.activeFirst, _, err = lineSeqHash(first)
		}
		if err != nil {
			return r, fmt.Errorf("spool segment %s: %w", path, err)
		}
		h.lastLine = t.last
	}
	segs, err := h.segments()
	if err != nil {
		return r, err
	}
	last := t.last
	if last == nil && len(segs) > 0 {
		if last, err = lastLineOf(segs[len(segs)-1].path); err != nil {
			return r, err
		}
	}
	if last != nil {
		if r.seq, r.hash, err = check(last); err != nil {
			return r, fmt.Errorf("the last record of the spool does not verify (edited, or audit.key changed): %w", err)
		}
		r.found = true
	} else if r.seq, r.hash, r.found, err = h.readState(); err != nil {
		return r, err
	}
	var total int64
	for _, s := range segs {
		total += s.size
	}
	h.addSpool(total + t.end)
	return r, nil
}

// align makes the spool agree with the trail's tail as the primary sink
// (the file) recovered it: records the spool holds beyond it were never
// fsynced by the file and are dropped from the unsealed segment; records it
// lacks (a crash between the two writes) are copied from the file. A spool
// that never held a record starts at the tail: adding an endpoint does not
// resend the history.
func (h *HTTPSink) align(spool, primary recovered, file *FileSink, check checkFunc) error {
	switch {
	case !spool.found:
		return h.writeState(primary.seq, primary.hash)
	case spool.seq == primary.seq && spool.hash != primary.hash:
		return fmt.Errorf("the spool's last record (seq %d) is not the trail's: it belongs to another trail; let it deliver, then move it aside", spool.seq)
	case spool.seq > primary.seq:
		return h.trimActive(primary.seq, check)
	case spool.seq < primary.seq:
		var recs []Line
		err := file.linesAfter(spool.seq, check, func(line []byte) error {
			seq, _, _ := check(line)
			recs = append(recs, Line{Seq: seq, Data: bytes.Clone(line)})
			return nil
		})
		if err != nil {
			return fmt.Errorf("copy records the spool lacks from %s: %w", file.path, err)
		}
		if _, err := h.writeRecs(recs, true); err != nil {
			return err
		}
		h.log.Warn("audit spool was behind the file: records copied", "records", len(recs))
	}
	return nil
}

// trimActive drops records above seq from the active segment. Sealed
// segments never hold such records: they are sealed after the file's fsync.
func (h *HTTPSink) trimActive(seq uint64, check checkFunc) error {
	path := filepath.Join(h.s.SpoolDir, spoolActive)
	var (
		keep int64
		last []byte
	)
	err := eachLine(path, func(line []byte) error {
		s, _, err := check(line)
		if err != nil {
			return err
		}
		if s <= seq {
			keep += int64(len(line))
			last = append(last[:0], line...)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if keep == h.active.size {
		return fmt.Errorf("the spool is ahead of the trail (seq %d) beyond its unsealed records: it belongs to another trail; let it deliver, then move it aside", seq)
	}
	if err := h.active.f.Truncate(keep); err != nil {
		return err
	}
	if err := h.active.f.Sync(); err != nil {
		return err
	}
	h.addSpool(keep - h.active.size)
	h.active.size, h.active.synced = keep, keep
	h.lastLine = last
	if keep == 0 {
		h.activeFirst = 0
	}
	h.log.Warn("audit spool held records the file lost in a crash: dropped", "after_seq", seq)
	return nil
}

// start seals what recovery left in the active segment and starts delivery.
func (h *HTTPSink) start() error {
	if err := h.seal(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.sending.Add(1)
	go h.send(ctx)
	return nil
}

// Write implements Sink: it appends to the active segment as many records
// as the spool cap allows (at least one into an empty spool).
func (h *HTTPSink) Write(recs []Line) (int, error) {
	return h.writeRecs(recs, false)
}

func (h *HTTPSink) writeRecs(recs []Line, ignoreCap bool) (int, error) {
	if h.active == nil {
		if err := h.openActive(); err != nil {
			return 0, err
		}
	}
	n, room := 0, h.s.SpoolMaxBytes-h.spoolBytes.Load()
	for n < len(recs) && (ignoreCap || int64(len(recs[n].Data)) <= room || h.spoolBytes.Load() == 0 && n == 0) {
		room -= int64(len(recs[n].Data))
		n++
	}
	if n > 0 {
		before := h.active.size
		if err := h.active.write(recs[:n]); err != nil {
			return 0, fmt.Errorf("spool: %w", err)
		}
		h.addSpool(h.active.size - before)
		if h.activeFirst == 0 {
			h.activeFirst = recs[0].Seq
		}
		h.lastLine = append(h.lastLine[:0], recs[n-1].Data...)
	}
	if n < len(recs) {
		return n, ErrSpoolFull
	}
	return n, nil
}

// Sync implements Sink: it fsyncs the active segment and seals it, so that
// the sender may deliver it.
func (h *HTTPSink) Sync() error {
	if h.active == nil {
		return nil
	}
	if err := h.active.sync(); err != nil {
		return fmt.Errorf("spool: fsync: %w", err)
	}
	return h.seal()
}

// seal renames a non-empty, durable active segment after its first seq,
// records the chain state, and wakes the sender.
func (h *HTTPSink) seal() error {
	if h.active == nil || h.active.size == 0 {
		return nil
	}
	if err := h.active.sync(); err != nil {
		return err
	}
	seq, sum, err := lineSeqHash(h.lastLine)
	if err != nil {
		return err
	}
	if err := h.writeState(seq, sum); err != nil {
		return err
	}
	name := filepath.Join(h.s.SpoolDir, fmt.Sprintf("%020d%s", h.activeFirst, spoolSuffix))
	if err := os.Rename(filepath.Join(h.s.SpoolDir, spoolActive), name); err != nil {
		return fmt.Errorf("spool: seal: %w", err)
	}
	h.active.close()
	h.active, h.activeFirst = nil, 0
	if err := syncDir(h.s.SpoolDir); err != nil {
		return err
	}
	select {
	case h.notify <- struct{}{}:
	default:
	}
	return h.openActive()
}

func (h *HTTPSink) openActive() error {
	a, err := openAppend(filepath.Join(h.s.SpoolDir, spoolActive))
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	h.active = a
	return nil
}

// Close implements Sink: it seals the active segment and, while the
// endpoint answers, gives delivery up to one POST timeout to drain the
// spool; then it stops delivery. Undelivered segments stay in the spool for
// the next start.
func (h *HTTPSink) Close() error {
	err := h.Sync()
	for deadline := time.Now().Add(h.s.Timeout); h.cancel != nil && h.healthy.Load() && h.spoolBytes.Load() > h.activeBytes() && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if h.cancel != nil {
		h.cancel()
		h.sending.Wait()
	}
	if h.active != nil {
		err = errors.Join(err, h.active.close())
	}
	if h.lock != nil {
		err = errors.Join(err, h.lock.Close())
	}
	return err
}

func (h *HTTPSink) activeBytes() int64 {
	if h.active == nil {
		return 0
	}
	return h.active.size
}

// SpoolBytes is the size of the records not yet acknowledged.
func (h *HTTPSink) SpoolBytes() int64 { return h.spoolBytes.Load() }

func (h *HTTPSink) addSpool(n int64) {
	h.spoolGauge.Set(float64(h.spoolBytes.Add(n)))
}

// writeState records the chain's last sealed record durably.
func (h *HTTPSink) writeState(seq uint64, sum digest) error {
	path := filepath.Join(h.s.SpoolDir, spoolState)
	tmp := path + ".tmp"
	if err := writeDurable(tmp, []byte(strconv.FormatUint(seq, 10)+" "+hex.EncodeToString(sum[:])+"\n")); err != nil {
		return fmt.Errorf("spool state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("spool state: %w", err)
	}
	return nil
}

func (h *HTTPSink) readState() (uint64, digest, bool, error) {
	path := filepath.Join(h.s.SpoolDir, spoolState)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, digest{}, false, nil
	}
	if err != nil {
		return 0, digest{}, false, err
	}
	var sum digest
	seqText, hashText, ok := strings.Cut(strings.TrimSuffix(string(data), "\n"), " ")
	seq, err := strconv.ParseUint(seqText, 10, 64)
	if n, herr := hex.Decode(sum[:], []byte(hashText)); !ok || err != nil || herr != nil || n != len(sum) {
		return 0, digest{}, false, fmt.Errorf("%s: malformed spool state", path)
	}
	return seq, sum, true, nil
}

// lineSeqHash reads seq and hash from a line this package encoded.
func lineSeqHash(line []byte) (uint64, digest, error) {
	var sum digest
	rest, ok := bytes.CutPrefix(line, []byte(`{"seq":`))
	i := bytes.IndexByte(rest, ',')
	if !ok || i < 0 || len(line) < hashTail {
		return 0, sum, errors.New("not a record")
	}
	seq, err := strconv.ParseUint(string(rest[:i]), 10, 64)
	if err != nil {
		return 0, sum, errors.New("not a record")
	}
	h := line[len(line)-hashTail+len(hashPrefix) : len(line)-len(hashSuffix)]
	if _, err := hex.Decode(sum[:], h); err != nil {
		return 0, sum, errors.New("not a record")
	}
	return seq, sum, nil
}

// segment is one sealed spool file.
type segment struct {
	path string
	size int64
}

// segments lists the sealed segments, oldest first.
func (h *HTTPSink) segments() ([]segment, error) {
	entries, err := os.ReadDir(h.s.SpoolDir)
	if err != nil {
		return nil, err
	}
	var out []segment
	for _, e := range entries {
		name := e.Name()
		if len(name) != 20+len(spoolSuffix) || !strings.HasSuffix(name, spoolSuffix) || !e.Type().IsRegular() {
			continue
		}
		if _, err := strconv.ParseUint(name[:20], 10, 64); err != nil {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return nil, err
		}
		out = append(out, segment{path: filepath.Join(h.s.SpoolDir, name), size: info.Size()})
	}
	slices.SortFunc(out, func(a, b segment) int { return strings.Compare(a.path, b.path) })
	return out, nil
}

// send delivers sealed segments in order until ctx ends.
func (h *HTTPSink) send(ctx context.Context) {
	defer h.sending.Done()
	var (
		body     bytes.Buffer
		zbuf     bytes.Buffer
		zw       = gzip.NewWriter(&zbuf)
		failures int
	)
	for ctx.Err() == nil {
		segs, err := h.segments()
		if err != nil {
			h.log.Error("audit spool: cannot list segments", "error", err)
		}
		if len(segs) == 0 || err != nil {
			select {
			case <-h.notify:
			case <-ctx.Done():
			case <-time.After(h.s.MaxBackoff): // a safety net; seals notify
			}
			continue
		}
		body.Reset()
		var sent []segment
		for _, s := range segs {
			if len(sent) > 0 && body.Len()+int(s.size) > h.s.MaxBatchBytes {
				break
			}
			data, err := os.ReadFile(s.path)
			if err != nil {
				h.log.Error("audit spool: cannot read a segment", "file", s.path, "error", err)
				break
			}
			body.Write(data)
			sent = append(sent, s)
		}
		err = errors.New("no segment readable")
		if len(sent) > 0 {
			err = h.post(ctx, body.Bytes(), &zbuf, zw)
		}
		h.healthy.Store(err == nil)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			h.sendErrors.Inc()
			delay := backoff(h.s.MinBackoff, h.s.MaxBackoff, failures)
			failures++
			h.log.Warn("audit delivery failed; records stay spooled", "error", err, "retry_in", delay.String(), "spool_bytes", h.spoolBytes.Load())
			select {
			case <-time.After(delay):
			case <-ctx.Done():
			}
			continue
		}
		if failures > 0 {
			h.log.Info("audit delivery recovered", "after_failures", failures)
		}
		failures = 0
		h.delivered.Add(float64(bytes.Count(body.Bytes(), []byte{'\n'})))
		for _, s := range sent {
			if err := os.Remove(s.path); err != nil {
				// It would be sent again: receivers de-duplicate.
				h.log.Error("audit spool: cannot remove a delivered segment", "file", s.path, "error", err)
				continue
			}
			h.addSpool(-s.size)
		}
	}
}

// post sends one batch of record lines, gzip-compressed.
func (h *HTTPSink) post(ctx context.Context, lines []byte, zbuf *bytes.Buffer, zw *gzip.Writer) error {
	zbuf.Reset()
	zw.Reset(zbuf)
	if _, err := zw.Write(lines); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	first, _, err := lineSeqHash(lines[:bytes.IndexByte(lines, '\n')+1])
	if err != nil {
		return fmt.Errorf("spool segment: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, h.s.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.s.URL, bytes.NewReader(zbuf.Bytes()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	req.Header.Set("Content-Encoding", "gzip")
	req.Header.Set("X-Modelguard-Audit-First-Seq", strconv.FormatUint(first, 10))
	req.Header.Set("X-Modelguard-Audit-Records", strconv.Itoa(bytes.Count(lines, []byte{'\n'})))
	if h.s.Token != "" {
		req.Header.Set("Authorization", "Bearer "+h.s.Token)
	}
	resp, err := h.s.Client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("endpoint answered %s", resp.Status)
	}
	return nil
}

// backoff is min doubled per failure, capped at max, with ±20% jitter so
// that many instances do not retry in step.
func backoff(lo, hi time.Duration, failures int) time.Duration {
	d := hi
	if failures < 32 && lo<<failures < hi {
		d = lo << failures
	}
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}
