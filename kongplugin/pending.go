package kongplugin

import (
	"container/list"
	"sync"
	"time"

	"github.com/modelguard/modelguard/policy"
)

// Bounds on decisions waiting for their log phase. Kong runs the log phase
// once the response is over, which for a streamed answer can take minutes;
// a lost log phase (a Kong worker killed mid-request) must not leak. The
// byte bound counts bodies kept for audit.body_sha256.
const (
	defaultPendingMax   = 65536
	defaultPendingBytes = 64 << 20
	defaultPendingAge   = 15 * time.Minute
)

// decisionRecorder writes a decision's audit event; *policy.Engine is one.
type decisionRecorder interface {
	RecordDecision(req *policy.Request, d *policy.Decision, status int, latency time.Duration) error
}

// entry is what the log phase needs to record one decision.
type entry struct {
	id  string
	at  time.Time
	rec decisionRecorder
	req *policy.Request
	d   *policy.Decision
	el  *list.Element
}

// pending holds decisions between the access and the log phase, bounded in
// number and age. An entry leaves exactly once: taken by its log phase, or
// expired and returned to the caller to record with the decision's own
// status, so every decision is audited once.
type pending struct {
	mu       sync.Mutex
	byID     map[string]*entry
	order    list.List // of *entry, oldest first
	bytes    int       // bodies held
	max      int
	maxBytes int
	maxAge   time.Duration
}

func newPending(max, maxBytes int, maxAge time.Duration) *pending {
	return &pending{byID: map[string]*entry{}, max: max, maxBytes: maxBytes, maxAge: maxAge}
}

// put adds e (whose at is now) and returns the entries it pushed out: those
// older than maxAge, and the oldest beyond max entries or maxBytes.
func (p *pending) put(e *entry) (expired []*entry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if old := p.byID[e.id]; old != nil {
		p.remove(old)
	}
	e.el = p.order.PushBack(e)
	p.byID[e.id] = e
	p.bytes += len(e.req.Body)
	cutoff := e.at.Add(-p.maxAge)
	for front := p.order.Front(); front != nil; front = p.order.Front() {
		oldest := front.Value.(*entry)
		if p.order.Len() <= p.max && p.bytes <= p.maxBytes && !oldest.at.Before(cutoff) {
			break
		}
		p.remove(oldest)
		expired = append(expired, oldest)
	}
	return expired
}

// take removes and returns the entry for id if ok accepts it, or nil.
func (p *pending) take(id string, ok func(*entry) bool) *entry {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.byID[id]
	if e == nil || !ok(e) {
		return nil
	}
	p.remove(e)
	return e
}

// drain removes and returns every entry, oldest first.
func (p *pending) drain() []*entry {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*entry, 0, len(p.byID))
	for front := p.order.Front(); front != nil; front = p.order.Front() {
		e := front.Value.(*entry)
		p.remove(e)
		out = append(out, e)
	}
	return out
}

func (p *pending) remove(e *entry) {
	p.order.Remove(e.el)
	delete(p.byID, e.id)
	p.bytes -= len(e.req.Body)
}

// replace swaps the decision of a waiting entry (the access phase failed
// after saving it).
func (p *pending) replace(id string, d *policy.Decision) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := p.byID[id]; e != nil {
		e.d = d
	}
}

func (p *pending) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.byID)
}
