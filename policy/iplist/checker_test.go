package iplist

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/modelguard/modelguard/test/testkit"
)

func open(t *testing.T, lists []ListSettings) *Checker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c, err := Open(ctx, Settings{Lists: lists}, "", Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	deny := testkit.WriteFile(t, dir, "deny.txt", "# bad actors\n203.0.113.0/24\n2001:db8:bad::/48  # a v6 range\n198.51.100.7\n10.9.9.9/8\n")
	allow := testkit.WriteFile(t, dir, "allow.txt", "10.0.0.0/8\n2001:db8::/32\n203.0.113.5\n")
	both := open(t, []ListSettings{{Name: "threats", File: deny, Action: ActionDeny}, {Name: "corp", File: allow, Action: ActionAllow}})
	denyOnly := open(t, []ListSettings{{Name: "threats", File: deny, Action: ActionDeny}})

	for _, tc := range []struct {
		c        *Checker
		addr     string
		want     Verdict
		denyOnly bool
	}{
		{both, "10.1.2.3:5000", Verdict{Reason: ReasonDenied, List: "threats"}, false}, // 10.9.9.9/8 is 10.0.0.0/8: deny wins
		{both, "203.0.113.5:1", Verdict{Reason: ReasonDenied, List: "threats"}, false},
		{both, "[2001:db8:1::1]:443", Verdict{List: "corp"}, false},
		{both, "[2001:db8:bad::1]:443", Verdict{Reason: ReasonDenied, List: "threats"}, false},
		{both, "192.0.2.1:80", Verdict{Reason: ReasonNotAllowed}, false},
		{both, "", Verdict{Reason: ReasonUnknown}, false},
		{both, "not-an-address", Verdict{Reason: ReasonUnknown}, false},
		{denyOnly, "198.51.100.7:9", Verdict{Reason: ReasonDenied, List: "threats"}, true},
		{denyOnly, "198.51.100.8:9", Verdict{}, true},
		{denyOnly, "[::ffff:198.51.100.7]:9", Verdict{Reason: ReasonDenied, List: "threats"}, true}, // mapped form unmapped
		{denyOnly, "198.51.100.7", Verdict{Reason: ReasonDenied, List: "threats"}, true},            // bare address
		{denyOnly, "[fe80::1%eth0]:9", Verdict{}, true},
	} {
		if got := tc.c.Check(tc.addr); got != tc.want {
			t.Errorf("Check(%q) (deny only %v) = %+v, want %+v", tc.addr, tc.denyOnly, got, tc.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ data, want string }{
		{"10.0.0.0/8\nfoo\n", "f.txt:2: not an IP address or CIDR prefix"},
		{"10.0.0.0/33\n", "f.txt:1: not an IP address or CIDR prefix"},
		{"::ffff:10.0.0.0/104\n", "f.txt:1: IPv4-mapped IPv6 prefix"},
		{"fe80::1%eth0\n", "f.txt:1: an address with a zone"},
		{"10.0.0.1", "does not end with a newline"},
	} {
		if _, _, err := parse("f.txt", []byte(tc.data)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parse(%q) = %v, want %q", tc.data, err, tc.want)
		}
	}
	if _, n, err := parse("f.txt", []byte("\n# only comments\n  \n10.0.0.1 # one\n")); err != nil || n != 1 {
		t.Errorf("comments and blanks: n=%d err=%v", n, err)
	}
}

func TestOpenRefusesBadFile(t *testing.T) {
	dir := t.TempDir()
	f := testkit.WriteFile(t, dir, "deny.txt", "10.0.0.0/8\n300.1.1.1\n")
	_, err := Open(context.Background(), Settings{Lists: []ListSettings{{Name: "x", File: f, Action: ActionDeny}}}, "", Options{})
	if err == nil || !strings.Contains(err.Error(), "lists[0].file: "+f+":2: not an IP address") {
		t.Fatalf("Open = %v", err)
	}
}

func TestReloadKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	f := testkit.WriteFile(t, dir, "deny.txt", "192.0.2.0/24\n")
	var (
		mu      sync.Mutex
		reloads []error
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := Open(ctx, Settings{Lists: []ListSettings{{Name: "feed", File: f, Action: ActionDeny}}}, "", Options{
		OnReload: func(list, file string, err error) {
			mu.Lock()
			defer mu.Unlock()
			reloads = append(reloads, err)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(reloads) }

	testkit.ReplaceFile(t, dir, "deny.txt", "198.51.100.0/24\n")
	testkit.Eventually(t, "new list in force", func() bool { return c.Check("198.51.100.1:1").Reason == ReasonDenied })
	if v := c.Check("192.0.2.1:1"); v.Reason != "" {
		t.Fatalf("removed prefix still denied: %+v", v)
	}

	before := count()
	testkit.ReplaceFile(t, dir, "deny.txt", "198.51.100.0/24\nbogus\n203.0.113.0/24\n")
	testkit.Eventually(t, "refusal reported", func() bool { return count() > before })
	mu.Lock()
	last := reloads[len(reloads)-1]
	mu.Unlock()
	if last == nil || !strings.Contains(last.Error(), ":2: not an IP address") {
		t.Fatalf("refused reload error = %v", last)
	}
	if c.Check("198.51.100.1:1").Reason != ReasonDenied || c.Check("203.0.113.1:1").Reason != "" {
		t.Fatal("a refused file changed the list in force")
	}

	// A missing file (mid-edit) keeps the list too.
	if err := os.Remove(f); err != nil {
		t.Fatal(err)
	}
	c.reload()
	if c.Check("198.51.100.1:1").Reason != ReasonDenied {
		t.Fatal("a missing file emptied the list")
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	testkit.WriteFile(t, dir, "a.txt", "10.0.0.1\n")
	errs := Settings{Lists: []ListSettings{
		{Name: "a", File: "a.txt", Action: ActionDeny},
		{Name: "a", File: "missing.txt", Action: "block"},
		{Name: "Bad Name", Action: ActionAllow},
	}}.Validate(dir)
	testkit.WantErrors(t, errs, 5,
		`lists[1].name: "a" is used by another list`,
		`lists[1].action: "block" is not one of deny, allow`,
		"lists[1].file: open "+filepath.Join(dir, "missing.txt"),
		"lists[2].name: must be",
		"lists[2].file: required",
	)
}

// million writes a list of n distinct prefixes, a mix of IPv4 /24../32 and
// IPv6 /48../64, as threat feeds hold.
func million(tb testing.TB, n int) string {
	var b strings.Builder
	for i := range n {
		if i%4 == 3 {
			fmt.Fprintf(&b, "2001:db8:%x:%x::/%d\n", i>>16, i&0xffff, 48+i%17)
		} else {
			fmt.Fprintf(&b, "%d.%d.%d.%d/%d\n", 1+i>>24&0x7f, i>>16&0xff, i>>8&0xff, i&0xff, 24+i%9)
		}
	}
	return testkit.WriteFile(tb, tb.TempDir(), "feed.txt", b.String())
}

// BenchmarkLoad loads a million-prefix file (the target: < 2 s).
func BenchmarkLoad(b *testing.B) {
	f := million(b, 1_000_000)
	s := ListSettings{Name: "feed", File: f, Action: ActionDeny}
	for b.Loop() {
		if _, err := load(s, f); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheck matches addresses against a million prefixes (target:
// < 1 µs), hits and misses, IPv4 and IPv6.
func BenchmarkCheck(b *testing.B) {
	f := million(b, 1_000_000)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := Open(ctx, Settings{Lists: []ListSettings{{Name: "feed", File: f, Action: ActionDeny}}}, "", Options{})
	if err != nil {
		b.Fatal(err)
	}
	addrs := []string{"1.0.1.7:5000", "100.200.1.1:5000", "[2001:db8:0:3::1]:443", "[2001:db9::1]:443"}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c.Check(addrs[i&3])
		i++
	}
}
