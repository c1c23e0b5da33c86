package watch

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/modelguard/modelguard/test/testkit"
)

func TestDirsCallsOnChange(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, dir string)
	}{
		{"write", func(t *testing.T, dir string) { testkit.WriteFile(t, dir, "f", "x") }},
		{"rename over", func(t *testing.T, dir string) {
			testkit.WriteFile(t, dir, "f.tmp", "x")
			if err := os.Rename(filepath.Join(dir, "f.tmp"), filepath.Join(dir, "f")); err != nil {
				t.Fatal(err)
			}
		}},
		{"symlink swap", func(t *testing.T, dir string) {
			if err := os.Symlink("elsewhere", filepath.Join(dir, "..data_tmp")); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			calls := make(chan struct{}, 100)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if err := Dirs(ctx, []string{dir}, Options{}, func() { calls <- struct{}{} }, nil); err != nil {
				t.Fatal(err)
			}
			tc.change(t, dir)
			waitCall(t, calls)
		})
	}
}

// A file written continuously in the watched directory (an audit log next
// to a key file) must not postpone the call forever.
func TestDirsSteadyEventsStillCall(t *testing.T) {
	dir := t.TempDir()
	calls := make(chan struct{}, 100)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := Dirs(ctx, []string{dir}, Options{Debounce: 50 * time.Millisecond, MaxDelay: 200 * time.Millisecond}, func() { calls <- struct{}{} }, nil); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		f, err := os.Create(filepath.Join(dir, "noisy.log"))
		if err != nil {
			return
		}
		defer f.Close()
		for {
			select {
			case <-stop:
				return
			default:
				f.WriteString("line\n")
				time.Sleep(5 * time.Millisecond)
			}
		}
	}()
	waitCall(t, calls)
}

func TestDirsMissingDir(t *testing.T) {
	if err := Dirs(context.Background(), []string{filepath.Join(t.TempDir(), "absent")}, Options{}, func() {}, nil); err == nil {
		t.Fatal("watching a missing directory succeeded")
	}
}

func waitCall(t *testing.T, calls chan struct{}) {
	t.Helper()
	select {
	case <-calls:
	case <-time.After(10 * time.Second):
		t.Fatal("onChange was not called")
	}
}
