package audit

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
)

// maxLineBytes bounds one record when reading a trail back. Records are a
// few hundred bytes; a longer line is damage, not data.
const maxLineBytes = 16 << 20

// VerifyOptions configure a Verifier.
type VerifyOptions struct {
	// Key verifies a keyed trail (HMAC-SHA256); nil verifies a plain
	// SHA-256 chain.
	Key []byte
	// Partial accepts a set that starts after the first record of the trail
	// (its oldest files were removed): the first record's prev is taken as
	// given instead of requiring seq 1 and a zero prev.
	Partial bool
	// Anchor, when set, is the trail's anchor (ReadAnchor): the trail must
	// reach its seq, and the record there must have its hash. This finds
	// records deleted from the end, which the chain alone cannot show.
	Anchor *Anchor
}

// Summary describes a trail that verified.
type Summary struct {
	Files             int
	Records           uint64
	FirstSeq, LastSeq uint64
	// FirstPrev is the prev of the first record (zeros at the start of a
	// trail); LastHash the hash of the last one. Compare LastHash with an
	// anchor kept elsewhere to detect records removed from the end, which a
	// chain alone cannot show.
	FirstPrev, LastHash string
	Keyed               bool
}

// VerifyError names the first record that does not verify.
type VerifyError struct {
	File    string
	Line    int
	Problem string
}

func (e *VerifyError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Problem) }

// Verifier checks the files of a trail, in chain order, one after another.
type Verifier struct {
	opts    VerifyOptions
	hash    *chainHash
	sum     Summary
	prev    digest
	started bool
	scratch []byte
	file    string // where the last record was read
	line    int
}

// NewVerifier returns a Verifier for one set of files.
func NewVerifier(opts VerifyOptions) *Verifier {
	return &Verifier{opts: opts, hash: newChainHash(opts.Key), sum: Summary{Keyed: len(opts.Key) > 0}}
}

// Check reads the next file of the set and returns a *VerifyError for the
// first record that is edited, missing, out of order, inserted or
// truncated, or an error reading r.
func (v *Verifier) Check(name string, r io.Reader) error {
	v.sum.Files++
	br := bufio.NewReaderSize(r, 64<<10)
	var long []byte
	for n := 1; ; n++ {
		line, err := br.ReadSlice('\n')
		for errors.Is(err, bufio.ErrBufferFull) && len(long) <= maxLineBytes {
			long = append(long, line...)
			line, err = br.ReadSlice('\n')
		}
		if long != nil {
			line = append(long, line...)
			long = nil
		}
		if len(line) > maxLineBytes {
			return &VerifyError{name, n, fmt.Sprintf("not a record: longer than %d bytes", maxLineBytes)}
		}
		switch {
		case errors.Is(err, io.EOF) && len(line) == 0:
			return nil
		case errors.Is(err, io.EOF):
			return &VerifyError{name, n, "truncated record: the last line has no end (a write cut short; the server quarantines it at its next start)"}
		case err != nil:
			return fmt.Errorf("%s: %w", name, err)
		}
		if problem := v.record(line); problem != "" {
			return &VerifyError{name, n, problem}
		}
		v.file, v.line = name, n
	}
}

// record checks one line against the chain so far and advances it.
func (v *Verifier) record(line []byte) string {
	e, sum, scratch, err := checkLine(line, v.hash, v.scratch)
	v.scratch = scratch
	switch {
	case errors.Is(err, errHashMismatch) && v.sum.Keyed:
		return err.Error() + " under this key"
	case errors.Is(err, errHashMismatch):
		return err.Error() + " (a keyed trail needs its key: -key-file or -key-env)"
	case err != nil:
		return err.Error()
	}
	var prev digest
	hex.Decode(prev[:], []byte(e.Prev)) // checkLine checked it
	switch want := v.sum.LastSeq + 1; {
	case !v.started && !v.opts.Partial && (e.Seq != 1 || prev != digest{}):
		return fmt.Sprintf("records deleted before this one: the trail starts at seq %d, want seq 1 with a zero prev (use -partial for a set whose oldest files were removed)", e.Seq)
	case !v.started:
		v.sum.FirstSeq, v.sum.FirstPrev = e.Seq, e.Prev
	case e.Seq > want:
		return fmt.Sprintf("record deleted or moved: seq %d, want %d", e.Seq, want)
	case e.Seq < want:
		return fmt.Sprintf("record inserted, duplicated or moved: seq %d, want %d", e.Seq, want)
	case prev != v.prev:
		return "chain broken: prev is not the hash of the record before (a record was inserted or replaced)"
	}
	if a := v.opts.Anchor; a != nil && e.Seq == a.Seq && hex.EncodeToString(sum[:]) != a.Hash {
		return fmt.Sprintf("record replaced: seq %d is not the record the anchor names", a.Seq)
	}
	v.started = true
	v.prev = sum
	v.sum.Records++
	v.sum.LastSeq = e.Seq
	return ""
}

// Summary returns what was verified so far, or an error if no record was
// seen: an empty trail proves nothing.
func (v *Verifier) Summary() (Summary, error) {
	if !v.started {
		return v.sum, errors.New("no records")
	}
	if a := v.opts.Anchor; a != nil && v.sum.LastSeq < a.Seq {
		return v.sum, &VerifyError{v.file, v.line + 1, fmt.Sprintf("records deleted from the end: the trail ends at seq %d, its anchor says seq %d was written", v.sum.LastSeq, a.Seq)}
	}
	s := v.sum
	s.LastHash = hex.EncodeToString(v.prev[:])
	return s, nil
}

// VerifyFiles checks files as one trail, in the order given (oldest first:
// for a rotated file sink, the rotated files in name order, then the active
// file).
func VerifyFiles(paths []string, opts VerifyOptions) (Summary, error) {
	v := NewVerifier(opts)
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return Summary{}, err
		}
		err = v.Check(p, f)
		f.Close()
		if err != nil {
			return Summary{}, err
		}
	}
	return v.Summary()
}
