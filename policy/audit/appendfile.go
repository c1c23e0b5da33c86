package audit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// osFile is what appendFile needs of an *os.File; tests inject failures.
type osFile interface {
	io.Writer
	Truncate(size int64) error
	Sync() error
	Close() error
}

// appendFile appends whole records to a file and makes them durable. It
// keeps the bytes written since the last successful fsync: after a failed
// write or fsync (when the kernel may have dropped dirty pages) it truncates
// the file back to what is known durable and writes them again, so the file
// never keeps a partial record and nothing acknowledged is lost.
type appendFile struct {
	f        osFile
	size     int64 // bytes of complete records
	synced   int64 // bytes known durable
	unsynced []byte
	resync   bool // the bytes after synced are unknown: rewrite them first
	// rewrites counts rewrite calls: an fsync begun before one may not
	// cover the bytes rewritten since.
	rewrites uint64
}

// maxKeptBuffer bounds the capacity a buffer keeps between uses once the
// load that grew it is gone, so that one burst does not pin memory for ever.
const maxKeptBuffer = 8 << 20

func openAppend(path string) (*appendFile, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &appendFile{f: f, size: st.Size(), synced: st.Size()}, nil
}

// write appends recs with one write call.
func (a *appendFile) write(recs []Line) error {
	if a.resync {
		if err := a.rewrite(); err != nil {
			return err
		}
	}
	start := len(a.unsynced)
	for _, r := range recs {
		a.unsynced = append(a.unsynced, r.Data...)
	}
	if _, err := a.f.Write(a.unsynced[start:]); err != nil {
		a.unsynced = a.unsynced[:start]
		a.resync = true
		return err
	}
	a.size += int64(len(a.unsynced) - start)
	return nil
}

func (a *appendFile) rewrite() error {
	if err := a.f.Truncate(a.synced); err != nil {
		return fmt.Errorf("truncate to the last durable record: %w", err)
	}
	if _, err := a.f.Write(a.unsynced); err != nil {
		return err
	}
	a.size = a.synced + int64(len(a.unsynced))
	a.resync = false
	a.rewrites++
	return nil
}

// sync makes every record written durable.
func (a *appendFile) sync() error {
	if a.resync {
		if err := a.rewrite(); err != nil {
			return err
		}
	}
	if a.size == a.synced {
		return nil
	}
	if err := a.f.Sync(); err != nil {
		a.resync = true
		return err
	}
	a.synced = a.size
	a.dropSynced(len(a.unsynced))
	return nil
}

// dropSynced forgets the first n unsynced bytes, now durable. It keeps the
// buffer for the next interval unless a burst left it far larger than this
// interval needed.
func (a *appendFile) dropSynced(n int) {
	rest := len(a.unsynced) - n
	if cap(a.unsynced) > maxKeptBuffer && cap(a.unsynced) > 4*len(a.unsynced) {
		a.unsynced = append([]byte(nil), a.unsynced[n:]...)
		return
	}
	copy(a.unsynced, a.unsynced[n:])
	a.unsynced = a.unsynced[:rest]
}

// syncPoint is where an fsync running beside writes (syncFile) begins: the
// bytes written so far and the rewrite count. ok is false while the file
// must be rewritten first: then sync it with sync.
func (a *appendFile) syncPoint() (p syncPoint, ok bool) {
	return syncPoint{size: a.size, rewrites: a.rewrites}, !a.resync
}

// syncPoint is the state of an appendFile when an fsync began.
type syncPoint struct {
	size     int64
	rewrites uint64
}

// syncFile is the slow part of a sync, the fsync call alone: it touches
// nothing write uses, so it may run on another goroutine while write runs.
func (a *appendFile) syncFile() error { return a.f.Sync() }

// syncedTo applies the result of syncFile begun at p, and reports whether
// the bytes up to p are durable. After a failed fsync the kernel may have
// dropped dirty pages: the bytes after the last durable point are
// rewritten before the next write. After a rewrite since p, the fsync may
// have missed the rewritten bytes: they wait for the next sync.
func (a *appendFile) syncedTo(p syncPoint, err error) (bool, error) {
	switch {
	case err != nil:
		a.resync = true
		return false, err
	case a.rewrites != p.rewrites:
		return false, nil
	case p.size > a.synced:
		a.dropSynced(int(p.size - a.synced))
		a.synced = p.size
	}
	return true, nil
}

func (a *appendFile) close() error { return a.f.Close() }

// syncDir makes renames and creations in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// tail is the end of a file of records as found at start.
type tail struct {
	last []byte // the last complete line, nil if none
	end  int64  // offset just past it: the end of complete records
	size int64
}

// readTail finds the last complete line of f, reading backwards.
func readTail(f *os.File) (tail, error) {
	st, err := f.Stat()
	if err != nil {
		return tail{}, err
	}
	t := tail{size: st.Size(), end: -1}
	const chunk = 64 << 10
	var buf []byte // bytes [off, size)
	for off := t.size; off > 0; {
		n := min(chunk, off)
		off -= n
		b := make([]byte, n, n+int64(len(buf)))
		if _, err := f.ReadAt(b, off); err != nil {
			return tail{}, err
		}
		buf = append(b, buf...)
		if t.end < 0 {
			i := bytes.LastIndexByte(buf, '\n')
			if i < 0 {
				continue
			}
			t.end = off + int64(i) + 1
		}
		local := t.end - off
		if j := bytes.LastIndexByte(buf[:local-1], '\n'); j >= 0 {
			t.last = buf[j+1 : local]
			return t, nil
		}
		if t.size-off > maxLineBytes {
			return tail{}, fmt.Errorf("%s: last line longer than %d bytes: not an audit trail", f.Name(), maxLineBytes)
		}
	}
	if t.end < 0 {
		t.end = 0
		return t, nil
	}
	t.last = buf[:t.end]
	return t, nil
}

// firstLine returns the first complete line of f, nil if none.
func firstLine(f *os.File) ([]byte, error) {
	br := bufio.NewReader(io.NewSectionReader(f, 0, maxLineBytes))
	line, err := br.ReadBytes('\n')
	switch {
	case errors.Is(err, io.EOF):
		return nil, nil
	case err != nil:
		return nil, err
	}
	return line, nil
}

// quarantine moves the torn bytes after t.end (a record cut short by a
// crash, never fsynced) into a file next to path, then truncates f to its
// last complete record. It returns the quarantine file, "" if none.
func quarantine(path string, f *os.File, t tail) (string, error) {
	if t.end == t.size {
		return "", nil
	}
	torn := make([]byte, t.size-t.end)
	if _, err := f.ReadAt(torn, t.end); err != nil {
		return "", err
	}
	q := fmt.Sprintf("%s.torn-%d", path, time.Now().UnixNano())
	if err := writeDurable(q, torn); err != nil {
		return "", fmt.Errorf("quarantine a torn record: %w", err)
	}
	if err := f.Truncate(t.end); err != nil {
		return "", fmt.Errorf("truncate a torn record: %w", err)
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	return q, syncDir(filepath.Dir(path))
}

// writeDurable writes a new file and fsyncs it.
func writeDurable(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
