package test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/test/testkit"
	"github.com/modelguard/modelguard/test/testkit/demo"
)

// auditReceiver is an HTTP audit endpoint that is down (503) until told
// otherwise and keeps the records it acknowledged by seq.
type auditReceiver struct {
	up       atomic.Bool
	failures atomic.Int64
	mu       sync.Mutex
	bySeq    map[uint64]string
	badAuth  atomic.Int64
}

func (r *auditReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Header.Get("Authorization") != "Bearer audit-token" {
		r.badAuth.Add(1)
		http.Error(w, "who are you", http.StatusUnauthorized)
		return
	}
	if !r.up.Load() {
		r.failures.Add(1)
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	zr, err := gzip.NewReader(req.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	body, err := io.ReadAll(zr)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, line := range strings.SplitAfter(string(body), "\n") {
		var e audit.Event
		if line == "" || json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		r.bySeq[e.Seq] = line // de-duplicated: a retry may deliver a record again
	}
}

// trail returns what arrived in seq order, and whether seqs 1..n all did.
func (r *auditReceiver) trail(n uint64) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seqs := make([]uint64, 0, len(r.bySeq))
	for s := range r.bySeq {
		seqs = append(seqs, s)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	var b strings.Builder
	for _, s := range seqs {
		b.WriteString(r.bySeq[s])
	}
	complete := n > 0
	for s := uint64(1); s <= n; s++ {
		if _, ok := r.bySeq[s]; !ok {
			complete = false
		}
	}
	return b.String(), complete
}

// TestAuditHTTPDelivery runs the server with the audit trail going only to
// an HTTP endpoint that is down at first: records wait in the spool, then
// every one arrives, including the stop record of the graceful shutdown,
// and the received trail verifies under the key.
func TestAuditHTTPDelivery(t *testing.T) {
	bin := buildBinary(t)
	dir := demo.Dir(t)
	key := demo.WriteKeys(t, dir, "mg_", demo.Alice)[demo.Alice.ID]
	rcv := &auditReceiver{bySeq: map[uint64]string{}}
	srvHTTP := httptest.NewServer(rcv)
	t.Cleanup(srvHTTP.Close)
	cfg := writeServeConfig(t, dir, `audit:
  output: "off"
  flush_interval: 10ms
  key_file: audit.key
  http:
    url: `+srvHTTP.URL+`/records
    token_env: MODELGUARD_AUDIT_TOKEN
  spool_dir: spool
log: {level: info}
`)
	hmacKey := strings.Repeat("k", 40)
	os.WriteFile(filepath.Join(dir, "audit.key"), []byte(hmacKey+"\n"), 0o600)

	srv := startServe(t, bin, cfg, "MODELGUARD_AUDIT_TOKEN=audit-token")
	stop := make(chan struct{})
	var allowed acked
	wg := load(t, srv.grpc, key, stop, stop, &allowed)
	testkit.Eventually(t, "checks served and delivery failing", func() bool {
		return allowed.count() >= 100 && rcv.failures.Load() >= 2 && srv.metric(t, "modelguard_audit_spool_bytes") > 0
	})
	close(stop)
	wg.Wait()
	rcv.up.Store(true)
	testkit.Eventually(t, "the spool to drain", func() bool {
		synced := uint64(srv.metric(t, "modelguard_audit_synced_seq"))
		_, complete := rcv.trail(synced)
		return complete && srv.metric(t, "modelguard_audit_spool_bytes") == 0
	})
	srv.stop(t)
	if n := rcv.badAuth.Load(); n > 0 {
		t.Errorf("%d requests without the configured token", n)
	}

	text, _ := rcv.trail(0)
	path := filepath.Join(t.TempDir(), "received.jsonl")
	os.WriteFile(path, []byte(text), 0o600)
	sum, err := audit.VerifyFiles([]string{path}, audit.VerifyOptions{Key: []byte(hmacKey)})
	if err != nil {
		t.Fatalf("the received trail does not verify: %v", err)
	}
	if sum.Records < uint64(allowed.count())+3 {
		t.Errorf("%d records received for %d allowed checks plus start, config_loaded and stop", sum.Records, allowed.count())
	}
	kinds := trailKinds(t, []string{path})
	if kinds != "start config_loaded decision stop" {
		t.Errorf("received kinds %q", kinds)
	}
	if !bytes.Contains([]byte(text), []byte(`"subject":"alice"`)) || bytes.Contains([]byte(text), []byte(key)) {
		t.Error("the received records lack the subject or carry the API key")
	}
}
