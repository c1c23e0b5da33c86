package audit

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
)

// An anchor is the seq and hash of the last record known fsynced, kept in
// a file next to the trail (<output>-anchor, a name outside the
// <output>.* of rotated files) and rewritten in place after each fsync.
// A chain cannot show records deleted from its end; the anchor can:
// `modelguard audit verify -anchor` and the writer at start refuse a trail
// that ends before it. The anchor file is also the trail's lock: the
// writer holds an exclusive flock on it, so that a second writer on the
// same trail, which would fork the chain, is refused at start.
type Anchor struct {
	Seq  uint64
	Hash string // hex
}

// anchorLen is the size of an anchor file: 20 digits, a space, 64 hex
// digits, a newline. A fixed size lets each update overwrite the last.
const anchorLen = 20 + 1 + 64 + 1

// AnchorPath is the anchor file of the trail whose active file is path.
func AnchorPath(path string) string { return path + "-anchor" }

// ReadAnchor reads an anchor file.
func ReadAnchor(path string) (Anchor, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Anchor{}, err
	}
	a, ok, err := parseAnchor(b)
	if err == nil && !ok {
		err = errors.New("empty: no record was anchored yet")
	}
	if err != nil {
		return Anchor{}, fmt.Errorf("anchor %s: %w", path, err)
	}
	return a, nil
}

// parseAnchor decodes an anchor file's content; ok is false when empty.
func parseAnchor(b []byte) (a Anchor, ok bool, err error) {
	if len(b) == 0 {
		return a, false, nil
	}
	if len(b) != anchorLen || b[20] != ' ' || b[anchorLen-1] != '\n' {
		return a, false, errors.New("not an anchor (want <seq, 20 digits> <hash, 64 hex digits>)")
	}
	if a.Seq, err = strconv.ParseUint(string(b[:20]), 10, 64); err != nil {
		return a, false, errors.New("not an anchor: bad seq")
	}
	var d digest
	if _, err := hex.Decode(d[:], b[21:anchorLen-1]); err != nil {
		return a, false, errors.New("not an anchor: bad hash")
	}
	a.Hash = string(b[21 : anchorLen-1])
	return a, true, nil
}

// anchorFile is the writer's open, locked anchor.
type anchorFile struct {
	f   *os.File
	at  uint64 // seq the file holds
	buf [anchorLen]byte
}

// openAnchor opens and locks the anchor of the trail at path, and returns
// what it holds (ok false when empty).
func openAnchor(path string) (*anchorFile, Anchor, bool, error) {
	name := AnchorPath(path)
	f, err := lockFile(name, path)
	if err != nil {
		return nil, Anchor{}, false, err
	}
	b, err := io.ReadAll(io.LimitReader(f, anchorLen+1))
	var (
		a  Anchor
		ok bool
	)
	if err == nil {
		a, ok, err = parseAnchor(b)
	}
	if err != nil {
		f.Close()
		return nil, Anchor{}, false, fmt.Errorf("%s: %w", name, err)
	}
	return &anchorFile{f: f, at: a.Seq}, a, ok, nil
}

// lockFile opens (creating) name and takes an exclusive flock on it, so
// that one writer at a time uses the trail it guards; another process, or
// another writer in this one, is refused.
func lockFile(name, trail string) (*os.File, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("the trail %s is in use: another modelguard holds the lock on %s; two writers on one trail break its chain, so give each server (and each Kong plugin server) its own audit.output and audit.spool_dir", trail, name)
		}
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	return f, nil
}

// set records seq and hash as the last fsynced record. It is not fsynced
// itself: a power loss may leave an older anchor, which only checks less.
func (a *anchorFile) set(seq uint64, hash digest) error {
	if seq <= a.at {
		return nil
	}
	b := fmt.Appendf(a.buf[:0], "%020d %x\n", seq, hash[:])
	if _, err := a.f.WriteAt(b, 0); err != nil {
		return err
	}
	a.at = seq
	return nil
}

// close releases the lock.
func (a *anchorFile) close() error { return a.f.Close() }
