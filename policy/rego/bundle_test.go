package rego

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/modelguard/modelguard/policy/bundle"
	"github.com/modelguard/modelguard/test/testkit"
)

// bundlePolicy allows the roles data.roles lists: the data comes from the
// bundle's data.json, so a decision shows both its modules and its data.
func bundlePolicy(roles string) testkit.BundleFiles {
	return testkit.BundleFiles{
		"authz.rego": "package modelguard.authz\n\ndefault allow := false\n\nallow if data.roles[input.role]\n",
		"data.json":  `{"roles": {` + roles + `}}`,
	}
}

// bundleReloads records the engine's reload callbacks.
type bundleReloads struct {
	mu   sync.Mutex
	errs []error
	ok   int
}

func (r *bundleReloads) on(_ string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.errs = append(r.errs, err)
	} else {
		r.ok++
	}
}

// refused counts refusals; unavailable failed downloads.
func (r *bundleReloads) refused() int { return r.count(false) }

func (r *bundleReloads) unavailable() int { return r.count(true) }

func (r *bundleReloads) count(fetch bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, err := range r.errs {
		if _, ok := errors.AsType[*bundle.FetchError](err); ok == fetch {
			n++
		}
	}
	return n
}

// openBundle opens an engine on srv's bundle, polled every second unless
// b says otherwise.
func openBundle(t *testing.T, srv *testkit.BundleServer, b bundle.Settings, r *bundleReloads) *Engine {
	t.Helper()
	b.URL = srv.URL
	if b.Polling == (bundle.Polling{}) {
		b.Polling = bundle.Polling{MinDelay: time.Second, MaxDelay: time.Second}
	}
	// With a decision cache: a new bundle must not be answered from the
	// previous one's decisions.
	e, err := Open(t.Context(), Settings{Bundle: b, DecisionCache: CacheSettings{Enabled: true, Size: 100}}, t.TempDir(), Options{OnReload: r.on})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func decideRole(t *testing.T, e *Engine, role string) (bool, error) {
	t.Helper()
	res, err := e.Eval(t.Context(), ast.NewObject(ast.Item(ast.StringTerm("role"), ast.StringTerm(role))))
	return res.Allow, err
}

func TestBundleActivationAndUpdate(t *testing.T) {
	srv := testkit.NewBundleServer(t)
	srv.Set(testkit.BuildBundle(t, bundlePolicy(`"reader": true`), "v1", "", ""))
	var r bundleReloads
	e := openBundle(t, srv, bundle.Settings{}, &r)
	testkit.Eventually(t, "the first bundle", func() bool { return e.Revision() != "" })
	if ok, err := decideRole(t, e, "reader"); !ok || err != nil {
		t.Fatalf("reader: allow %v, %v; want allowed by the bundle's data", ok, err)
	}
	if ok, _ := decideRole(t, e, "admin"); ok {
		t.Fatal("admin allowed by v1")
	}
	if ok, _ := decideRole(t, e, "reader"); !ok {
		t.Fatal("reader denied by v1 the second time (from the decision cache)")
	}
	first := e.Revision()

	// Unchanged: the service answers 304 and nothing is activated again.
	testkit.Eventually(t, "a 304", func() bool { return srv.NotModified() >= 1 })
	if e.Revision() != first {
		t.Fatalf("revision changed on 304: %s -> %s", first, e.Revision())
	}

	srv.Set(testkit.BuildBundle(t, bundlePolicy(`"admin": true`), "v2", "", ""))
	testkit.Eventually(t, "the second bundle", func() bool { return e.Revision() != first })
	if ok, _ := decideRole(t, e, "admin"); !ok {
		t.Fatal("admin denied by v2")
	}
	if ok, _ := decideRole(t, e, "reader"); ok {
		t.Fatal("reader still allowed after v2")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ok != 2 || len(r.errs) != 0 {
		t.Fatalf("bundleReloads: %d ok, errors %v; want 2 ok", r.ok, r.errs)
	}
}

// tamper rewrites the .rego files of a signed bundle file to allow
// everything, keeping its .signatures.json.
func tamper(t *testing.T, raw []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	signed := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		signed = signed || strings.HasSuffix(h.Name, ".signatures.json")
		if strings.HasSuffix(h.Name, ".rego") {
			data = []byte("package modelguard.authz\n\nallow := true\n")
			h.Size = int64(len(data))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if !signed {
		t.Fatal("bundle to tamper with is not signed")
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestBundleSignatures(t *testing.T) {
	private, public := testkit.SigningKey(t)
	otherPrivate, _ := testkit.SigningKey(t)
	dir := t.TempDir()
	keyFile := testkit.WriteFile(t, dir, "bundle.pem", public)
	good := testkit.BuildBundle(t, bundlePolicy(`"reader": true`), "v1", private, "default")

	for _, tc := range []struct {
		name string
		raw  []byte
	}{
		{"tampered", tamper(t, good)},
		{"unsigned", testkit.BuildBundle(t, bundlePolicy(`"admin": true`), "v2", "", "")},
		{"signed with another key", testkit.BuildBundle(t, bundlePolicy(`"admin": true`), "v2", otherPrivate, "default")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testkit.NewBundleServer(t)
			srv.Set(good)
			var r bundleReloads
			e := openBundle(t, srv, bundle.Settings{Signing: bundle.Signing{PublicKeyFile: keyFile}}, &r)
			testkit.Eventually(t, "the signed bundle", func() bool { return e.Revision() != "" })
			last := e.Revision()

			srv.Set(tc.raw)
			testkit.Eventually(t, "the refusal", func() bool { return r.refused() >= 1 })
			if e.Revision() != last {
				t.Fatalf("revision %s after a %s bundle, want the last good %s", e.Revision(), tc.name, last)
			}
			if ok, _ := decideRole(t, e, "admin"); ok {
				t.Fatalf("the %s bundle decides", tc.name)
			}
			if ok, _ := decideRole(t, e, "reader"); !ok {
				t.Fatal("the last good bundle no longer decides")
			}
		})
	}
}

func TestBundleServiceDownAtStart(t *testing.T) {
	persist := t.TempDir()
	private, public := testkit.SigningKey(t)
	keyFile := testkit.WriteFile(t, t.TempDir(), "bundle.pem", public)
	settings := bundle.Settings{PersistDir: persist, Signing: bundle.Signing{PublicKeyFile: keyFile}}

	// First run: the bundle arrives and is persisted.
	srv := testkit.NewBundleServer(t)
	srv.Set(testkit.BuildBundle(t, bundlePolicy(`"reader": true`), "v1", private, "default"))
	ctx, cancel := context.WithCancel(t.Context())
	var r bundleReloads
	settings.URL = srv.URL
	settings.Polling = bundle.Polling{MinDelay: time.Second, MaxDelay: time.Second}
	e, err := Open(ctx, Settings{Bundle: settings}, t.TempDir(), Options{OnReload: r.on})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the bundle persisted", func() bool {
		_, err := os.Stat(filepath.Join(persist, "bundle.tar.gz"))
		return e.Revision() != "" && err == nil
	})
	rev := e.Revision()
	cancel()

	t.Run("with a persisted bundle", func(t *testing.T) {
		srv.SetDown(true)
		var r bundleReloads
		e := openBundle(t, srv, settings, &r)
		if e.Revision() != rev {
			t.Fatalf("revision %q at start, want the persisted %s", e.Revision(), rev)
		}
		if ok, err := decideRole(t, e, "reader"); !ok || err != nil {
			t.Fatalf("reader: allow %v, %v; want the persisted bundle to decide", ok, err)
		}
		testkit.Eventually(t, "a failed download", func() bool { return r.unavailable() >= 1 })
		if e.Revision() != rev {
			t.Fatal("a failed download changed the policy")
		}
	})

	t.Run("with a persisted bundle edited on disk", func(t *testing.T) {
		srv.SetDown(true)
		dir := t.TempDir()
		raw, err := os.ReadFile(filepath.Join(persist, "bundle.tar.gz"))
		if err != nil {
			t.Fatal(err)
		}
		testkit.WriteFile(t, dir, "bundle.tar.gz", tamper(t, raw))
		s := settings
		s.PersistDir = dir
		var r bundleReloads
		e := openBundle(t, srv, s, &r)
		if _, err := decideRole(t, e, "reader"); !errors.Is(err, ErrNoPolicy) {
			t.Fatalf("error %v with a tampered persisted bundle, want ErrNoPolicy", err)
		}
		if r.refused() != 1 {
			t.Fatalf("%d refusals, want the tampered persisted bundle refused", r.refused())
		}
	})

	t.Run("without a persisted bundle", func(t *testing.T) {
		srv.SetDown(true)
		s := settings
		s.PersistDir = t.TempDir()
		var r bundleReloads
		e := openBundle(t, srv, s, &r)
		for range 3 {
			if ok, err := decideRole(t, e, "reader"); ok || !errors.Is(err, ErrNoPolicy) {
				t.Fatalf("before the first bundle: allow %v, %v; want ErrNoPolicy", ok, err)
			}
		}
		testkit.Eventually(t, "a failed download", func() bool { return r.unavailable() >= 1 })
		srv.SetDown(false)
		testkit.Eventually(t, "the first bundle", func() bool { return e.Revision() != "" })
		if ok, err := decideRole(t, e, "reader"); !ok || err != nil {
			t.Fatalf("after the first bundle: allow %v, %v", ok, err)
		}
	})
}

func TestBundleRefusedWhenItDoesNotCompile(t *testing.T) {
	srv := testkit.NewBundleServer(t)
	srv.Set(testkit.BuildBundle(t, bundlePolicy(`"reader": true`), "v1", "", ""))
	var r bundleReloads
	e := openBundle(t, srv, bundle.Settings{}, &r)
	testkit.Eventually(t, "the first bundle", func() bool { return e.Revision() != "" })
	last := e.Revision()
	// Parses, but names no rule the query asks for.
	srv.Set(testkit.BuildBundle(t, testkit.BundleFiles{"x.rego": "package other\n\nallow := true\n"}, "v2", "", ""))
	testkit.Eventually(t, "the refusal", func() bool { return r.refused() >= 1 })
	if e.Revision() != last {
		t.Fatal("a bundle that does not compile replaced the running one")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !strings.Contains(r.errs[0].Error(), "names no rule") {
		t.Fatalf("refusal %v, want the compile error", r.errs[0])
	}
}

func TestSourceSettings(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		s    Settings
		want string // "" valid
	}{
		{"directory", Settings{PolicyDir: dir}, ""},
		{"bundle", Settings{Bundle: bundle.Settings{URL: "https://bundles.example.com"}}, ""},
		{"neither", Settings{}, "policy_dir: required"},
		{"both", Settings{PolicyDir: dir, Bundle: bundle.Settings{URL: "https://bundles.example.com"}}, "bundle.url: set either policy_dir or bundle, not both"},
		{"plain http", Settings{Bundle: bundle.Settings{URL: "http://bundles.example.com"}}, "bundle.url: must use https"},
		{"shadow both", Settings{PolicyDir: dir, Shadow: Shadow{PolicyDir: dir, Bundle: bundle.Settings{URL: "https://b.example.com"}}}, "shadow.bundle.url: set either"},
		{"shadow query alone", Settings{PolicyDir: dir, Shadow: Shadow{Query: "data.x.allow"}}, "shadow.query: set without"},
		{"dry-run path not normal", Settings{PolicyDir: dir, DryRun: DryRun{Paths: []string{"/v1/../admin"}}}, "dry_run.paths[0]: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := errors.Join(tc.s.orDefaults().Validate(dir)...)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// With long polling, a new bundle arrives while the request for it is
// held, not at the next poll: the polling delay here (5 minutes) is longer
// than the test waits.
func TestBundleLongPolling(t *testing.T) {
	srv := testkit.NewBundleServer(t)
	srv.LongPoll()
	srv.Set(testkit.BuildBundle(t, bundlePolicy(`"reader": true`), "v1", "", ""))
	var r bundleReloads
	e := openBundle(t, srv, bundle.Settings{
		Polling: bundle.Polling{MinDelay: 5 * time.Minute, MaxDelay: 5 * time.Minute, LongPollingTimeout: 30 * time.Second},
	}, &r)
	testkit.Eventually(t, "the first bundle", func() bool { return e.Revision() != "" })
	testkit.Eventually(t, "a held request", func() bool { return srv.Held() >= 1 })
	first := e.Revision()
	srv.Set(testkit.BuildBundle(t, bundlePolicy(`"admin": true`), "v2", "", ""))
	testkit.Eventually(t, "the second bundle", func() bool { return e.Revision() != first })
	if ok, _ := decideRole(t, e, "admin"); !ok {
		t.Fatal("admin denied by v2")
	}
}

// Requests decide throughout bundle activations, each with a whole
// revision: never an error, and always the answer of the revision the
// result names.
func TestBundleActivationUnderRequests(t *testing.T) {
	// Bundles that allow readers and bundles that do not, by revision.
	readers := map[string]bool{}
	build := func(i int) []byte {
		raw := testkit.BuildBundle(t, bundlePolicy([]string{`"reader": true`, `"admin": true`}[i%2]), fmt.Sprint("v", i), "", "")
		sum := sha256.Sum256(raw)
		readers[hex.EncodeToString(sum[:6])] = i%2 == 0
		return raw
	}
	bundles := [][]byte{build(0), build(1), build(2), build(3)}

	srv := testkit.NewBundleServer(t)
	srv.Set(bundles[0])
	var r bundleReloads
	e := openBundle(t, srv, bundle.Settings{}, &r)
	testkit.Eventually(t, "the first bundle", func() bool { return e.Revision() != "" })

	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	input := ast.NewObject(ast.Item(ast.StringTerm("role"), ast.StringTerm("reader")))
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				res, err := e.Eval(t.Context(), input)
				if want, known := readers[res.Revision]; err != nil || !known || res.Allow != want {
					errs <- fmt.Errorf("revision %q: allow %v, %v", res.Revision, res.Allow, err)
					return
				}
			}
		})
	}
	for _, b := range bundles[1:] {
		before := e.Revision()
		srv.Set(b)
		testkit.Eventually(t, "the next bundle", func() bool { return e.Revision() != before })
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}
