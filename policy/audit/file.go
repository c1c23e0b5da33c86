package audit

import (
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// FileSink appends records to a file and rotates it by size. A rotated file
// is renamed to "<path>.<seq of its first record, 20 digits>", so that name
// order is chain order and `modelguard audit verify path.* path` checks the
// whole set; the first record of the new file chains to the last record of
// the rotated one, which is fsynced before the rename.
type FileSink struct {
	path     string
	maxBytes int64
	maxFiles int // rotated files kept; 0 keeps all
	log      *slog.Logger

	f        *appendFile
	firstSeq uint64 // seq of the active file's first record; 0 while empty

	anchor   *anchorFile // also the trail's lock
	lastSeq  uint64      // the last record written, for the anchor
	lastHash digest
}

// NewFileSink returns a sink on path rotating at maxBytes (0: never) and
// keeping maxFiles rotated files (0: all). The writer opens it.
func NewFileSink(path string, maxBytes int64, maxFiles int, log *slog.Logger) *FileSink {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &FileSink{path: path, maxBytes: maxBytes, maxFiles: maxFiles, log: log}
}

// Name implements Sink.
func (s *FileSink) Name() string { return "file" }

// recover locks the trail (its anchor file), opens the active file,
// quarantines a torn last record and returns the last record of the trail:
// the active file's, or the newest rotated file's when the active one holds
// no complete record (a crash between rotation and the first write). A
// trail that ends before its anchor lost records from its end: refused.
func (s *FileSink) recover(check checkFunc) (recovered, error) {
	anchor, a, anchored, err := openAnchor(s.path)
	if err != nil {
		return recovered{}, err
	}
	r, err := s.open(check)
	if err == nil && anchored {
		err = checkAnchor(r, a, AnchorPath(s.path))
	}
	if err != nil {
		if s.f != nil {
			s.f.close()
			s.f = nil
		}
		anchor.close()
		return r, err
	}
	s.anchor, s.lastSeq, s.lastHash = anchor, r.seq, r.hash
	return r, nil
}

// checkAnchor compares the tail the trail recovered with its anchor.
func checkAnchor(r recovered, a Anchor, name string) error {
	switch {
	case !r.found || r.seq < a.Seq:
		return fmt.Errorf("records deleted from the end of the trail: it ends at seq %d, but %s says seq %d was written; check it with `modelguard audit verify -anchor %s`, then move the trail and its anchor aside to start a new one", r.seq, name, a.Seq, name)
	case r.seq == a.Seq && hex.EncodeToString(r.hash[:]) != a.Hash:
		return fmt.Errorf("the last record of the trail (seq %d) is not the one %s names: the trail was replaced or edited", r.seq, name)
	}
	return nil
}

func (s *FileSink) open(check checkFunc) (recovered, error) {
	var r recovered
	osf, err := os.OpenFile(s.path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return r, err
	}
	t, err := readTail(osf)
	if err == nil {
		r.quarantined, err = quarantine(s.path, osf, t)
		r.torn = t.size - t.end
	}
	if err != nil {
		osf.Close()
		return r, err
	}
	last, from := t.last, s.path
	if last == nil {
		rotated, err := s.rotated()
		if err != nil {
			osf.Close()
			return r, err
		}
		if len(rotated) > 0 {
			from = rotated[len(rotated)-1].path
			if last, err = lastLineOf(from); err != nil {
				osf.Close()
				return r, err
			}
		}
	}
	if last != nil {
		if r.seq, r.hash, err = check(last); err != nil {
			osf.Close()
			return r, fmt.Errorf("the last record of %s does not verify (edited, or audit.key changed): %w; check the trail with `modelguard audit verify`, then move it aside to start a new one", from, err)
		}
		r.found = true
	}
	if t.last != nil {
		// The active file's first seq names it at rotation.
		first, err := firstLine(osf)
		if err == nil {
			s.firstSeq, _, err = lineSeqHash(first)
		}
		if err != nil {
			osf.Close()
			return r, fmt.Errorf("first record of %s: %w", s.path, err)
		}
	}
	s.f = &appendFile{f: osf, size: t.end, synced: t.end}
	return r, nil
}

// lastLineOf returns the last line of a rotated file, which must be whole:
// files are fsynced before they are rotated.
func lastLineOf(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	t, err := readTail(f)
	if err != nil {
		return nil, err
	}
	if t.end != t.size {
		return nil, fmt.Errorf("%s: rotated file ends with a torn record", path)
	}
	return t.last, nil
}

// Write implements Sink. It rotates before a record that would take the
// active file over maxBytes.
func (s *FileSink) Write(recs []Line) (int, error) {
	if s.f == nil {
		return 0, errors.New("audit file sink not opened")
	}
	n := 0
	for n < len(recs) {
		j, size := n, s.f.size
		for j < len(recs) && (size == 0 || s.maxBytes <= 0 || size+int64(len(recs[j].Data)) <= s.maxBytes) {
			size += int64(len(recs[j].Data))
			j++
		}
		if j == n {
			if err := s.rotate(); err != nil {
				return n, fmt.Errorf("rotate %s: %w", s.path, err)
			}
			continue
		}
		if err := s.f.write(recs[n:j]); err != nil {
			return n, fmt.Errorf("write %s: %w", s.path, err)
		}
		last := recs[j-1]
		if _, h, err := lineSeqHash(last.Data); err == nil {
			s.lastSeq, s.lastHash = last.Seq, h
		}
		if s.firstSeq == 0 {
			s.firstSeq = recs[n].Seq
		}
		n = j
	}
	return n, nil
}

// Sync implements Sink.
func (s *FileSink) Sync() error {
	if s.f == nil {
		return nil
	}
	if err := s.f.sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", s.path, err)
	}
	if err := s.anchor.set(s.lastSeq, s.lastHash); err != nil {
		return fmt.Errorf("anchor %s: %w", AnchorPath(s.path), err)
	}
	return nil
}

// beginSync implements backgroundSyncer: the active file's fsync runs on
// another goroutine while the writer goes on writing; finish, on the writer
// goroutine, applies its result and moves the anchor to the last record it
// made durable. After a rotation meanwhile the rotated file was fsynced
// whole before it was closed (the descriptor stays valid until the fsync
// returns).
func (s *FileSink) beginSync() (run func() error, finish func(error) error) {
	f := s.f
	if f == nil {
		return nil, nil
	}
	p, ok := f.syncPoint()
	if !ok {
		return nil, nil
	}
	seq, hash := s.lastSeq, s.lastHash
	return f.syncFile, func(err error) error {
		durable := true
		if s.f == f {
			durable, err = f.syncedTo(p, err)
		} else {
			err = nil // rotated meanwhile: fsynced whole
		}
		if err != nil {
			return fmt.Errorf("fsync %s: %w", s.path, err)
		}
		if !durable {
			return nil
		}
		if err := s.anchor.set(seq, hash); err != nil {
			return fmt.Errorf("anchor %s: %w", AnchorPath(s.path), err)
		}
		return nil
	}
}

// Close implements Sink.
func (s *FileSink) Close() error {
	if s.f == nil {
		return nil
	}
	err := s.Sync()
	return errors.Join(err, s.f.close(), s.anchor.close())
}

// rotate makes the active file durable, renames it after its first record
// and starts a new one.
func (s *FileSink) rotate() error {
	if err := s.f.sync(); err != nil {
		return err
	}
	name := rotatedName(s.path, s.firstSeq)
	if _, err := os.Lstat(name); err == nil {
		return fmt.Errorf("%s already exists: refusing to overwrite a rotated file", name)
	}
	if err := os.Rename(s.path, name); err != nil {
		return err
	}
	osf, err := os.OpenFile(s.path, os.O_RDWR|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		// Put the old file back so the trail stays where it was.
		return errors.Join(err, os.Rename(name, s.path))
	}
	if err := syncDir(filepath.Dir(s.path)); err != nil {
		osf.Close()
		return errors.Join(err, os.Remove(s.path), os.Rename(name, s.path))
	}
	s.f.close()
	s.f, s.firstSeq = &appendFile{f: osf}, 0
	s.prune()
	return nil
}

func rotatedName(path string, firstSeq uint64) string {
	return fmt.Sprintf("%s.%020d", path, firstSeq)
}

// rotatedFile is one rotated file of the trail.
type rotatedFile struct {
	path     string
	firstSeq uint64
}

// rotated lists the rotated files of the trail, oldest first.
func (s *FileSink) rotated() ([]rotatedFile, error) {
	dir, base := filepath.Split(s.path)
	if dir == "" {
		dir = "."
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []rotatedFile
	for _, e := range entries {
		suffix, ok := strings.CutPrefix(e.Name(), base+".")
		if !ok || len(suffix) != 20 || !e.Type().IsRegular() {
			continue
		}
		seq, err := strconv.ParseUint(suffix, 10, 64)
		if err != nil {
			continue
		}
		out = append(out, rotatedFile{path: filepath.Join(dir, e.Name()), firstSeq: seq})
	}
	slices.SortFunc(out, func(a, b rotatedFile) int { return strings.Compare(a.path, b.path) })
	return out, nil
}

// prune removes the oldest rotated files beyond maxFiles.
func (s *FileSink) prune() {
	if s.maxFiles <= 0 {
		return
	}
	files, err := s.rotated()
	if err != nil {
		s.log.Warn("audit rotation: cannot list rotated files", "error", err)
		return
	}
	for len(files) > s.maxFiles {
		if err := os.Remove(files[0].path); err != nil {
			s.log.Warn("audit rotation: cannot remove an old file", "file", files[0].path, "error", err)
			return
		}
		s.log.Info("audit rotation: removed the oldest file (audit.max_files)", "file", files[0].path)
		files = files[1:]
	}
}

// linesAfter calls fn with every record line whose seq is above after, in
// order, from the rotated files and the active file. It serves to fill a
// spool that fell behind the file.
func (s *FileSink) linesAfter(after uint64, check checkFunc, fn func(line []byte) error) error {
	rotated, err := s.rotated()
	if err != nil {
		return err
	}
	paths := make([]string, 0, len(rotated)+1)
	for i, r := range rotated {
		if i+1 < len(rotated) && rotated[i+1].firstSeq <= after+1 {
			continue // wholly at or below after
		}
		paths = append(paths, r.path)
	}
	paths = append(paths, s.path)
	for _, p := range paths {
		if err := eachLine(p, func(line []byte) error {
			seq, _, err := check(line)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			if seq > after {
				return fn(line)
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// eachLine calls fn with each complete line of the file at path.
func eachLine(path string, fn func(line []byte) error) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for len(data) > 0 {
		i := slices.Index(data, '\n')
		if i < 0 {
			return nil
		}
		if err := fn(data[:i+1]); err != nil {
			return err
		}
		data = data[i+1:]
	}
	return nil
}
