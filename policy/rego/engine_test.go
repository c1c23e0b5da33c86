package rego

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/modelguard/modelguard/policy/field"
	"github.com/modelguard/modelguard/policy/rego/inputdoc"
	"github.com/modelguard/modelguard/test/testkit"
)

const allowFromData = "package modelguard.authz\n\nallow := data.settings.allow\n"

func TestOpen(t *testing.T) {
	good := map[string]string{"authz.rego": "package modelguard.authz\n\nallow := true\n"}
	t.Run("relative to baseDir, defaults", func(t *testing.T) {
		base := t.TempDir()
		writeFiles(t, filepath.Join(base, "policy"), good)
		e, err := Open(t.Context(), Settings{PolicyDir: "policy"}, base, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if e.query != DefaultQuery || e.timeout != DefaultTimeout {
			t.Errorf("query %q, timeout %v; want the defaults", e.query, e.timeout)
		}
		if want := revisionOf(t, good); e.Revision() != want {
			t.Errorf("revision %s, want %s", e.Revision(), want)
		}
		got, err := e.Eval(t.Context(), value(t, `{}`))
		if err != nil || !got.Allow || got.Revision != e.Revision() {
			t.Errorf("got %+v, %v; want allowed by %s", got, err, e.Revision())
		}
	})
	t.Run("absolute path ignores baseDir", func(t *testing.T) {
		dir := policyDir(t, good)
		if _, err := Open(t.Context(), Settings{PolicyDir: dir}, "/nonexistent", Options{}); err != nil {
			t.Fatal(err)
		}
	})

	// Each refusal names the setting to fix (config places it on its line).
	for name, tc := range map[string]struct {
		cfg  Settings
		path string
	}{
		"no policy_dir": {Settings{}, "policy_dir"},
		"missing dir":   {Settings{PolicyDir: filepath.Join(t.TempDir(), "nope")}, "policy_dir"},
		"broken policy": {Settings{PolicyDir: policyDir(t, map[string]string{"authz.rego": "package modelguard.authz\n\nallow if {\n"})}, "policy_dir"},
		"bad query":     {Settings{PolicyDir: policyDir(t, good), Query: "data.modelguard.authz.decision"}, "query"},
	} {
		t.Run(name, func(t *testing.T) {
			e, err := Open(t.Context(), tc.cfg, "", Options{})
			if err == nil {
				t.Fatalf("opened, revision %s", e.Revision())
			}
			var fe *field.Error
			if !errors.As(err, &fe) || fe.Path != tc.path {
				t.Fatalf("error %v is not about %s", err, tc.path)
			}
		})
	}
}

func TestEngineEvalCancelled(t *testing.T) {
	e, err := Open(t.Context(), Settings{PolicyDir: policyDir(t, map[string]string{
		"authz.rego": "package modelguard.authz\n\nallow := true\n",
	})}, "", Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if got, err := e.Eval(ctx, value(t, `{}`)); err == nil || got.Allow {
		t.Errorf("got %+v, %v; want an error and no allow", got, err)
	}
}

// TestEngineTimeoutMeasuresEvaluation: time spent building the input (a
// large parsed body, or waiting for CPU before evaluation starts) does not
// count against authorization.timeout; only evaluation does.
func TestEngineTimeoutMeasuresEvaluation(t *testing.T) {
	const timeout = 300 * time.Millisecond
	e, err := Open(t.Context(), Settings{Timeout: timeout, PolicyDir: policyDir(t, map[string]string{
		"authz.rego": "package modelguard.authz\n\nallow := true\n",
	})}, "", Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := e.EvalInput(t.Context(), slowInput(timeout+200*time.Millisecond)) // longer than the timeout
	if err != nil || !got.Allow {
		t.Errorf("got %+v, %v; want allowed: building the input is not evaluation", got, err)
	}
}

// slowInput is the empty input, written in this long.
type slowInput time.Duration

func (d slowInput) WriteInput(inputdoc.Writer, Inputs) error {
	time.Sleep(time.Duration(d))
	return nil
}

func TestReload(t *testing.T) {
	dir := policyDir(t, map[string]string{"authz.rego": allowFromData, "data.json": `{"settings": {"allow": true}}`})
	opts, events := reloads(t.Context())
	var logs testkit.SyncBuffer
	opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	e, err := Open(t.Context(), Settings{PolicyDir: dir}, "", opts)
	if err != nil {
		t.Fatal(err)
	}
	input := value(t, `{}`)

	// expect checks that revision rev decides allow.
	expect := func(rev string, allow bool) {
		t.Helper()
		if e.Revision() != rev {
			t.Fatalf("revision %s, want %s", e.Revision(), rev)
		}
		got, err := e.Eval(t.Context(), input)
		if err != nil || got.Allow != allow || got.Revision != rev {
			t.Fatalf("got %+v, %v; want allow=%v from %s", got, err, allow, rev)
		}
	}
	// refused pushes files and expects them refused with an error naming want.
	refused := func(files map[string]string, want string) {
		t.Helper()
		running := e.Revision()
		writeFiles(t, dir, files)
		ev := nextReload(t, events)
		if ev.err == nil || !strings.Contains(ev.err.Error(), want) {
			t.Fatalf("reload %s: error %v, want one containing %q", ev.revision, ev.err, want)
		}
		if ev.revision == "" || ev.revision == running {
			t.Errorf("refused revision %q, want the new content's", ev.revision)
		}
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs do not mention %q:\n%s", want, logs.String())
		}
	}
	// accepted pushes files and expects them to decide next.
	accepted := func(files map[string]string) string {
		t.Helper()
		writeFiles(t, dir, files)
		ev := nextReload(t, events)
		if ev.err != nil {
			t.Fatalf("reload refused: %v", ev.err)
		}
		waitRevision(t, e, ev.revision)
		return ev.revision
	}

	rev1 := e.Revision()
	expect(rev1, true)

	refused(map[string]string{"data.json": `{"settings": {"allow": tru`}, "data.json")
	expect(rev1, true)

	rev2 := accepted(map[string]string{"data.json": `{"settings": {"allow": false}}`})
	if rev2 == rev1 {
		t.Fatal("revision unchanged by an edit")
	}
	expect(rev2, false)

	refused(map[string]string{"authz.rego": "package modelguard.authz\n\nallow := data.settings.allow\n\nbroken if {\n"}, "authz.rego:6")
	expect(rev2, false)
	refused(map[string]string{"authz.rego": "package modelguard.authz\n\nallow if count(1) > 0\n"}, "rego_type_error")
	expect(rev2, false)
	refused(map[string]string{"authz.rego": "package modelguard.authz_v2\n\nallow := true\n"}, "names no rule")
	expect(rev2, false)
	refused(map[string]string{"data.yaml": "settings: {allow: true}\n"}, "merge error")
	if err := os.Remove(filepath.Join(dir, "data.yaml")); err != nil {
		t.Fatal(err)
	}
	if ev := nextReload(t, events); ev.err == nil {
		// Still refused: the package rename is on disk.
		t.Fatalf("reload %s accepted a renamed package", ev.revision)
	}
	expect(rev2, false)

	rev3 := accepted(map[string]string{"authz.rego": "package modelguard.authz\n\nallow := data.settings.allow == false\n"})
	expect(rev3, true)
}

func TestReloadSkipsUnchangedContent(t *testing.T) {
	files := map[string]string{"authz.rego": allowFromData, "data.json": `{"settings": {"allow": true}}`}
	dir := policyDir(t, files)
	opts, events := reloads(t.Context())
	// Polling re-reads the directory constantly: every read of unchanged
	// content must be skipped, good or refused.
	opts.Poll = 5 * time.Millisecond
	e, err := Open(t.Context(), Settings{PolicyDir: dir}, "", opts)
	if err != nil {
		t.Fatal(err)
	}
	rev1 := e.Revision()
	// Same bytes, new inode and modification time.
	writeFiles(t, dir, files)
	writeFiles(t, dir, map[string]string{"authz.rego": "package modelguard.authz\n\nallow if {\n"})
	if ev := nextReload(t, events); ev.err == nil {
		t.Fatalf("reload %s, want the broken edit refused first", ev.revision)
	}
	// Give polling the chance to retry the refused content; it must not.
	time.Sleep(200 * time.Millisecond)
	select {
	case ev := <-events:
		t.Fatalf("unchanged content reloaded again: %s, %v", ev.revision, ev.err)
	default:
	}
	if e.Revision() != rev1 {
		t.Fatalf("revision %s, want %s", e.Revision(), rev1)
	}
	// Restoring the running content is a new attempt, accepted.
	writeFiles(t, dir, files)
	if ev := nextReload(t, events); ev.err != nil || ev.revision != rev1 {
		t.Fatalf("reload %s, %v; want %s accepted", ev.revision, ev.err, rev1)
	}
}

func TestReloadSubdirectory(t *testing.T) {
	dir := policyDir(t, map[string]string{"authz.rego": "package modelguard.authz\n\nallow := data.lib.allow\n",
		"lib/settings.json": `{"allow": false}`})
	opts, events := reloads(t.Context())
	e, err := Open(t.Context(), Settings{PolicyDir: dir}, "", opts)
	if err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, map[string]string{"lib/settings.json": `{"allow": true}`})
	ev := nextReload(t, events)
	if ev.err != nil {
		t.Fatal(ev.err)
	}
	waitRevision(t, e, ev.revision)
	if got, err := e.Eval(t.Context(), value(t, `{}`)); err != nil || !got.Allow {
		t.Errorf("got %+v, %v; want the subdirectory edit to allow", got, err)
	}
}

// decisionVersion is a policy whose module and data both carry name, so a
// decision mixing two versions' files would show.
func decisionVersion(name string, allow bool) map[string]string {
	a := "false"
	if allow {
		a = "true"
	}
	return map[string]string{
		"authz.rego": "package modelguard.authz\n\nmarker := \"" + name + "\"\n\n" +
			"decision := {\"allow\": " + a + ", \"reason\": concat(\"/\", [marker, data.label])}\n",
		"data.json": `{"label": "` + name + `"}`,
	}
}

func TestConfigMapSwap(t *testing.T) {
	a, b := decisionVersion("a", true), decisionVersion("b", false)
	revA, revB := revisionOf(t, a), revisionOf(t, b)
	cm := &configMap{dir: t.TempDir()}
	cm.publish(t, a)
	opts, events := reloads(t.Context())
	// Loading the hidden ..data or timestamped directory besides the
	// visible names would change the revision.
	e, err := Open(t.Context(), Settings{PolicyDir: cm.dir, Query: "data.modelguard.authz.decision"}, "", opts)
	if err != nil {
		t.Fatal(err)
	}
	if e.Revision() != revA {
		t.Fatalf("revision %s, want %s", e.Revision(), revA)
	}

	cm.publish(t, b)
	waitRevision(t, e, revB)
	got, err := e.Eval(t.Context(), value(t, `{}`))
	if err != nil || got.Allow || got.Reason != "b/b" {
		t.Fatalf("got %+v, %v; want b/b denying", got, err)
	}
	if ev := nextReload(t, events); ev.err != nil || ev.revision != revB {
		t.Fatalf("reload %s, %v; want %s", ev.revision, ev.err, revB)
	}

	cm.publish(t, map[string]string{"authz.rego": "package modelguard.authz\n\ndecision := {\n", "data.json": `{"label": "c"}`})
	if ev := nextReload(t, events); ev.err == nil || !strings.Contains(ev.err.Error(), "authz.rego:4") {
		t.Fatalf("reload %s, %v; want refused at authz.rego:4", ev.revision, ev.err)
	}
	if got, err := e.Eval(t.Context(), value(t, `{}`)); err != nil || got.Reason != "b/b" || got.Revision != revB {
		t.Fatalf("got %+v, %v; want b/b still deciding", got, err)
	}
}

func TestConcurrentEvalDuringReloads(t *testing.T) {
	versions := map[string]map[string]string{"a": decisionVersion("a", true), "b": decisionVersion("b", false)}
	// want maps each revision to the decision only it can give.
	want := map[string]Result{}
	revs := map[string]string{}
	for name, files := range versions {
		rev := revisionOf(t, files)
		revs[name] = rev
		want[rev] = Result{Allow: name == "a", Reason: name + "/" + name, Revision: rev}
	}
	seen := map[string]*atomic.Int64{revs["a"]: {}, revs["b"]: {}}

	cm := &configMap{dir: t.TempDir()}
	cm.publish(t, versions["a"])
	e, err := Open(t.Context(), Settings{PolicyDir: cm.dir, Query: "data.modelguard.authz.decision", Timeout: 10 * time.Second}, "", Options{})
	if err != nil {
		t.Fatal(err)
	}

	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	input := value(t, `{}`)
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				got, err := e.Eval(ctx, input)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					t.Errorf("eval: %v", err)
					return
				}
				w, ok := want[got.Revision]
				if !ok || got.Allow != w.Allow || got.Reason != w.Reason || got.Status != 0 {
					t.Errorf("got %+v, inconsistent with revision %s (%+v)", got, got.Revision, w)
					return
				}
				seen[got.Revision].Add(1)
			}
		})
	}

	for i := range 8 {
		name := []string{"b", "a"}[i%2]
		rev := revs[name]
		before := seen[rev].Load()
		cm.publish(t, versions[name])
		waitRevision(t, e, rev)
		// The evaluators must have decided on the new revision too.
		stopAt := time.Now().Add(deadline)
		for seen[rev].Load() == before && !t.Failed() {
			if time.Now().After(stopAt) {
				t.Fatalf("no evaluation on %s within %v", rev, deadline)
			}
			time.Sleep(time.Millisecond)
		}
	}
	stop()
	wg.Wait()
	t.Logf("evaluations: a=%d b=%d", seen[revs["a"]].Load(), seen[revs["b"]].Load())
}

// BenchmarkEval is the request path: the example policy deciding on a chat
// completion request, evaluated, and answered from the decision cache.
func BenchmarkEval(b *testing.B) {
	s := Settings{PolicyDir: examplePolicy, Query: "data.modelguard.authz.decision"}
	e, err := Open(b.Context(), s, "", Options{})
	if err != nil {
		b.Fatal(err)
	}
	s.DecisionCache = CacheSettings{Enabled: true, Size: 16}
	cached, err := Open(b.Context(), s, "", Options{})
	if err != nil {
		b.Fatal(err)
	}
	chat := map[string]any{"name": "gpt-4o-mini", "operation": "chat"}
	for _, bc := range []struct {
		name  string
		e     *Engine
		input ast.Value
		allow bool
	}{
		{"allow", e, requestInput(b, []string{"chat-user"}, "POST", "/v1/chat/completions", chat), true},
		{"deny", e, requestInput(b, []string{"reader", "ml-engineer"}, "POST", "/v1/chat/completions", chat), false},
		{"allow_cached", cached, requestInput(b, []string{"chat-user"}, "POST", "/v1/chat/completions", chat), true},
		{"deny_cached", cached, requestInput(b, []string{"reader", "ml-engineer"}, "POST", "/v1/chat/completions", chat), false},
	} {
		e := bc.e
		b.Run(bc.name, func(b *testing.B) {
			ctx := b.Context()
			b.ReportAllocs()
			for b.Loop() {
				r, err := e.Eval(ctx, bc.input)
				if err != nil || r.Allow != bc.allow {
					b.Fatalf("got %+v, %v", r, err)
				}
			}
		})
	}
}
