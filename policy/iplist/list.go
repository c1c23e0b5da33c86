// Package iplist checks a client address against allow and deny lists of
// IPv4 and IPv6 CIDR prefixes loaded from files that reload live.
//
// Prefixes are held in github.com/gaissmai/bart's Lite table (a
// multibit trie with popcount-compressed nodes): a million prefixes load
// in well under a second and a lookup is a few dozen nanoseconds whatever
// the list's size, with no allocation; a sorted-range search (as
// go4.org/netipx's IPSet) needs a copy of every range per reload and a
// binary search per lookup, and a hand-written trie would repeat what bart
// already tests against every prefix length.
package iplist

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/gaissmai/bart"
)

// list is one loaded file: immutable once built.
type list struct {
	name  string
	allow bool
	table *bart.Lite
	size  int
	sum   [32]byte // of the file's content
}

// maxLine bounds one line of a list file.
const maxLine = 4096

// parse builds a table from a list file's content; errors name the file
// and line.
func parse(file string, data []byte) (*bart.Lite, int, error) {
	t := new(bart.Lite)
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 256), maxLine)
	var errs []error
	for line := 1; sc.Scan(); line++ {
		text := sc.Bytes()
		if i := bytes.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		text = bytes.TrimSpace(text)
		if len(text) == 0 {
			continue
		}
		p, err := parsePrefix(string(text))
		if err != nil {
			if errs = append(errs, fmt.Errorf("%s:%d: %w", file, line, err)); len(errs) == 10 {
				errs = append(errs, errors.New("(further errors not shown)"))
				break
			}
			continue
		}
		t.Insert(p)
		n++
	}
	if err := sc.Err(); err != nil {
		return nil, 0, fmt.Errorf("%s: %w", file, err)
	}
	if len(errs) > 0 {
		return nil, 0, errors.Join(errs...)
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		// A file being written may end mid-line: never read it cut short.
		return nil, 0, fmt.Errorf("%s: does not end with a newline (still being written?)", file)
	}
	return t, n, nil
}

// parsePrefix reads an address (a /32 or /128) or a CIDR prefix. Host bits
// are cleared (feeds often write 10.1.2.3/8). IPv4-mapped IPv6 forms and
// zones are refused: addresses are compared unmapped and without zone, so
// such an entry would never match as its author meant.
func parsePrefix(s string) (netip.Prefix, error) {
	var (
		p   netip.Prefix
		err error
	)
	if strings.Contains(s, "/") {
		p, err = netip.ParsePrefix(s)
	} else {
		var a netip.Addr
		if a, err = netip.ParseAddr(s); err == nil {
			if a.Zone() != "" {
				return p, errors.New("an address with a zone is not allowed")
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
	}
	if err != nil {
		return p, errors.New("not an IP address or CIDR prefix")
	}
	if p.Addr().Is4In6() {
		return p, errors.New("IPv4-mapped IPv6 prefix: write the IPv4 form")
	}
	return p.Masked(), nil
}

// load reads and parses one list file.
func load(s ListSettings, path string) (*list, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read ip list: %w", err)
	}
	return build(s, path, data, sha256.Sum256(data))
}

// build parses a list file's content, whose hash is sum.
func build(s ListSettings, path string, data []byte, sum [32]byte) (*list, error) {
	t, n, err := parse(path, data)
	if err != nil {
		return nil, err
	}
	return &list{name: s.Name, allow: s.Action == ActionAllow, table: t, size: n, sum: sum}, nil
}
