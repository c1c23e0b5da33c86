package rego

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing/fstest"
)

const (
	// maxDepth bounds directory nesting, which also stops symlink loops.
	maxDepth = 8
	// configMapData is the symlink a Kubernetes ConfigMap volume swaps.
	configMapData = "..data"
	// maxReads bounds the reads of a directory whose ..data keeps moving.
	maxReads = 4
)

// snapshot is a policy directory read once, so that the revision names
// exactly the bytes that are compiled, whatever changes on disk meanwhile.
type snapshot struct {
	// files maps slash-separated paths relative to the policy directory to
	// their contents. fstest.MapFS is the standard library's in-memory
	// fs.FS; OPA's loader reads it like the directory itself.
	files fstest.MapFS
	// dirs are the visible directories read, the root first, for the watch.
	dirs []string
	// sum is the SHA-256 over the running policy's files (tests excluded).
	sum [sha256.Size]byte
}

// revision is the short form of sum used in logs and results.
func (s *snapshot) revision() string {
	return hex.EncodeToString(s.sum[:6])
}

// readPolicyDir reads the policy files under dir. Test files are included
// only when tests is set; they never count towards the revision.
func readPolicyDir(dir string, tests bool) (*snapshot, error) {
	// A ConfigMap update swaps the ..data symlink at once; a read straddling
	// the swap would mix old and new files, so read again until it held still.
	link := filepath.Join(dir, configMapData)
	for range maxReads {
		before, _ := os.Readlink(link)
		s, err := readOnce(dir, tests)
		after, _ := os.Readlink(link)
		if before == after {
			return s, err
		}
	}
	return nil, fmt.Errorf("%s kept changing while being read", link)
}

func readOnce(dir string, tests bool) (*snapshot, error) {
	s := &snapshot{files: fstest.MapFS{}}
	if err := s.walk(dir, ".", 0, tests); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(s.files))
	for name := range s.files {
		if !isTest(name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	h := sha256.New()
	var n [8]byte
	for _, name := range names {
		// Length prefixes keep name/content boundaries unambiguous.
		data := s.files[name].Data
		binary.BigEndian.PutUint64(n[:], uint64(len(name)))
		h.Write(n[:])
		h.Write([]byte(name))
		binary.BigEndian.PutUint64(n[:], uint64(len(data)))
		h.Write(n[:])
		h.Write(data)
	}
	h.Sum(s.sum[:0])
	return s, nil
}

func (s *snapshot) walk(dir, rel string, depth int, tests bool) error {
	if depth > maxDepth {
		return fmt.Errorf("%s: directories nested more than %d deep (symlink loop?)", dir, maxDepth)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	s.dirs = append(s.dirs, dir)
	for _, e := range entries {
		name := e.Name()
		// Hidden files, and a ConfigMap's ..data and ..<timestamp>: their
		// files are loaded once, through the visible symlinks.
		if strings.HasPrefix(name, ".") {
			continue
		}
		p := filepath.Join(dir, name)
		// Stat follows symlinks. A dangling one is an error rather than a
		// silently smaller policy.
		info, err := os.Stat(p)
		if err != nil {
			return err
		}
		r := path.Join(rel, name)
		switch {
		case info.IsDir():
			if err := s.walk(p, r, depth+1, tests); err != nil {
				return err
			}
		case info.Mode().IsRegular() && isPolicyFile(name) && (tests || !isTest(name)):
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s.files[r] = &fstest.MapFile{Data: data, Mode: 0o444}
		}
	}
	return nil
}

func isPolicyFile(name string) bool {
	switch filepath.Ext(name) {
	case ".rego", ".json", ".yaml", ".yml":
		return true
	}
	return false
}

func isTest(name string) bool { return strings.HasSuffix(name, "_test.rego") }
