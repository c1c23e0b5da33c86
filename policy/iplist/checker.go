package iplist

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/modelguard/modelguard/policy/field"
	"github.com/modelguard/modelguard/policy/watch"
)

// Reasons of the verdicts that refuse an address.
const (
	ReasonDenied     = "ip_denied"      // in a deny list
	ReasonNotAllowed = "ip_not_allowed" // allow lists exist and none holds it
	ReasonUnknown    = "ip_unknown"     // the gateway gave no usable address
)

// Verdict is the outcome of a check.
type Verdict struct {
	// Reason is "" when the address may proceed, else one of the Reason
	// constants.
	Reason string
	// List names the list that decided: the deny list holding the address,
	// or the allow list admitting it ("" when no list holds it).
	List string
}

// Options are a Checker's collaborators; all are optional.
type Options struct {
	Logger *slog.Logger
	// OnReload is called after each reload attempt of a list file: err nil
	// when the new content is in force, else why it was refused (the
	// previous content stays).
	OnReload func(list, file string, err error)
}

// Checker holds the lists in force. It is safe for concurrent use; a
// reload swaps an immutable snapshot, so a check takes no lock.
type Checker struct {
	settings []ListSettings
	paths    []string
	lists    atomic.Pointer[[]*list]
	anyAllow bool
	// seen is the hash of each file's content last examined, so that a
	// refused edit is reported once, not at every event in its directory.
	seen     [][32]byte
	log      *slog.Logger
	onReload func(list, file string, err error)
	mu       sync.Mutex // serialises reloads
}

// Open loads every list of validated settings (files relative to dir) and
// watches their directories until ctx ends. A list that does not load
// fails Open with its file and line.
func Open(ctx context.Context, s Settings, dir string, opts Options) (*Checker, error) {
	c := &Checker{settings: s.Lists, log: opts.Logger, onReload: opts.OnReload}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	lists := make([]*list, len(s.Lists))
	var dirs []string
	for i, ls := range s.Lists {
		p := resolve(dir, ls.File)
		l, err := load(ls, p)
		if err != nil {
			return nil, &field.Error{Path: fmt.Sprintf("lists[%d].file", i), Err: err}
		}
		lists[i] = l
		c.seen = append(c.seen, l.sum)
		c.paths = append(c.paths, p)
		c.anyAllow = c.anyAllow || l.allow
		if d := filepath.Dir(p); !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
		c.log.Info("ip list loaded", "list", ls.Name, "file", p, "prefixes", l.size)
	}
	c.lists.Store(&lists)
	err := watch.Dirs(ctx, dirs, watch.Options{}, c.reload, func(err error) {
		// Events may have been lost (inotify overflow): re-read to be sure.
		c.log.Warn("ip list watch error", "error", err)
		c.reload()
	})
	if err != nil {
		return nil, fmt.Errorf("ip lists: %w", err)
	}
	c.reload() // a file may have changed before the watch started
	return c, nil
}

// Check judges a client address as the gateway gave it ("ip:port" or
// "ip"). It does not allocate.
func (c *Checker) Check(address string) Verdict {
	a, ok := parseAddr(address)
	if !ok {
		return Verdict{Reason: ReasonUnknown}
	}
	var allowedBy string
	for _, l := range *c.lists.Load() {
		if !l.table.Contains(a) {
			continue
		}
		if !l.allow {
			return Verdict{Reason: ReasonDenied, List: l.name}
		}
		if allowedBy == "" {
			allowedBy = l.name
		}
	}
	if c.anyAllow && allowedBy == "" {
		return Verdict{Reason: ReasonNotAllowed}
	}
	return Verdict{List: allowedBy}
}

// parseAddr reads "ip:port", "[ipv6]:port" or a bare address, unmapped
// (::ffff:10.0.0.1 is 10.0.0.1) and without zone.
func parseAddr(s string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}

// reload re-reads every list file and swaps in those that changed and
// parse; a file that fails keeps its previous content in force.
func (c *Checker) reload() {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := *c.lists.Load()
	next := slices.Clone(cur)
	changed := false
	for i, ls := range c.settings {
		p := c.paths[i]
		data, err := os.ReadFile(p)
		var l *list
		if err == nil {
			sum := sha256.Sum256(data)
			if sum == c.seen[i] {
				continue
			}
			c.seen[i] = sum
			if sum == cur[i].sum { // back to the content in force after a refused edit
				c.report(ls.Name, p, nil)
				continue
			}
			l, err = build(ls, p, data, sum)
		} else {
			// A missing file is most likely mid-edit: keep the list in force.
			err = fmt.Errorf("read ip list: %w", err)
			c.seen[i] = [32]byte{}
		}
		if err != nil {
			c.log.Error("ip list reload refused, keeping the list in force", "list", ls.Name, "file", p, "error", err)
			c.report(ls.Name, p, err)
			continue
		}
		next[i], changed = l, true
		c.log.Info("ip list reloaded", "list", ls.Name, "file", p, "prefixes", l.size, "previous", cur[i].size)
		c.report(ls.Name, p, nil)
	}
	if changed {
		c.lists.Store(&next)
	}
}

func (c *Checker) report(name, file string, err error) {
	if c.onReload != nil {
		c.onReload(name, file, err)
	}
}
