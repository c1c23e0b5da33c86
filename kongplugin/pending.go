package kongplugin

import (
	"container/list"
	"sync"
	"time"

	"github.com/modelguard/modelguard/policy"
)

// Bounds on decisions waiting for their log phase. Kong runs the log phase
// once the response is over, which for a streamed answer can take minutes;
// a lost log phase (a Kong worker killed mid-request) must not leak.
const (
	defaultPendingMax = 65536
	defaultPendingAge = 15 * time.Minute
)

// completionRecorder writes the record the log phase adds to a decision's;
// *policy.Engine is one.
type completionRecorder interface {
	RecordCompletion(d *policy.Decision, c policy.Completion) error
}

// entry is what the log phase needs to complete one decision's record.
type entry struct {
	id  string
	at  time.Time
	rec completionRecorder
	d   *policy.Decision // as the plugin last answered
	// unread are the parts of the request access did not read (PartTarget,
	// PartSourceAddress), so that the decision record lacks them: the
	// completion record adds them from kong.log.serialize.
	unread policy.Part
	el     *list.Element
}

// pending holds decisions between the access and the log phase, bounded in
// number and age. Their records are already in the trail (the access phase
// writes them); an entry leaves exactly once: taken by its log phase, which
// adds the completion record, or pushed out or drained and returned to the
// caller, and then the decision has no completion record.
type pending struct {
	mu     sync.Mutex
	byID   map[string]*entry
	order  list.List // of *entry, oldest first
	max    int
	maxAge time.Duration
}

func newPending(max int, maxAge time.Duration) *pending {
	return &pending{byID: map[string]*entry{}, max: max, maxAge: maxAge}
}

// put adds e (whose at is now) and returns the entries it pushed out: those
// older than maxAge, and the oldest beyond max entries.
func (p *pending) put(e *entry) (expired []*entry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if old := p.byID[e.id]; old != nil {
		p.remove(old)
	}
	e.el = p.order.PushBack(e)
	p.byID[e.id] = e
	cutoff := e.at.Add(-p.maxAge)
	for front := p.order.Front(); front != nil; front = p.order.Front() {
		oldest := front.Value.(*entry)
		if p.order.Len() <= p.max && !oldest.at.Before(cutoff) {
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
}

// replace swaps the decision of a waiting entry (the access phase failed
// after saving it): its completion record then says how the plugin
// answered.
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
