package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/lineage"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/modelguard/modelguard/extauthz"
	"github.com/modelguard/modelguard/policy"
	"github.com/modelguard/modelguard/policy/config"
	"github.com/modelguard/modelguard/policy/rego"
)

type headerFlags []string

func (h *headerFlags) String() string     { return strings.Join(*h, "; ") }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }

// checkResult is what check prints, whether decided locally or remotely.
type checkResult struct {
	allow      bool
	status     int
	reason     string
	decisionID string
	upstream   []string
	removed    []string
	response   []string // headers for the client, on allow and on deny
	body       string
	// notes are what the engine logged while deciding (local only): the
	// policy's print() output and the error behind a policy_error.
	notes []string
	// trace is OPA's evaluation trace (local, with -explain).
	trace string
}

// check exits 0 when the request is allowed, 1 when denied, 2 on usage or
// setup errors, so policy authors can script it.
func check(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: modelguard check (-config FILE [-explain notes|full] | -server ADDR) [-H 'name: value']... [-d BODY | -body-file FILE] METHOD PATH")
		fs.PrintDefaults()
	}
	cfgPath := fs.String("config", "", "decide locally with this configuration")
	server := fs.String("server", "", "send the request to a running ext_authz server at host:port")
	var headers headerFlags
	fs.Var(&headers, "H", "request header 'name: value' (repeatable)")
	data := fs.String("d", "", "request body (content-type application/json unless -H sets one)")
	bodyFile := fs.String("body-file", "", "read the request body from a file")
	host := fs.String("host", "models.local", "request host (:authority)")
	caFile := fs.String("ca", "", "with -server: CA certificate to verify the server (enables TLS)")
	certFile := fs.String("cert", "", "with -server: client certificate for mTLS")
	keyFile := fs.String("key", "", "with -server: client key for mTLS")
	explain := fs.String("explain", "", "with -config: print OPA's evaluation trace, notes (trace() calls) or full")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 2 || (*cfgPath == "") == (*server == "") || (*explain != "" && (*server != "" || !validExplain(*explain))) {
		fs.Usage()
		return 2
	}
	body := []byte(*data)
	if *bodyFile != "" {
		b, err := os.ReadFile(*bodyFile)
		if err != nil {
			fmt.Fprintf(stderr, "modelguard check: %v\n", err)
			return 2
		}
		body = b
	}
	req := httptest.NewRequest(strings.ToUpper(fs.Arg(0)), fs.Arg(1), bytes.NewReader(body))
	req.Host = *host
	req.RemoteAddr = "127.0.0.1:40000"
	for _, h := range headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			fmt.Fprintf(stderr, "modelguard check: header %q is not 'name: value'\n", h)
			return 2
		}
		req.Header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	// Like curl --json: a body is JSON unless said otherwise.
	if len(body) > 0 && req.Header.Get("content-type") == "" {
		req.Header.Set("content-type", "application/json")
	}

	var (
		res checkResult
		err error
	)
	if *server != "" {
		res, err = checkRemote(*server, tlsFiles{*caFile, *certFile, *keyFile}, req, body)
	} else {
		res, err = checkLocal(*cfgPath, *explain, req, body)
	}
	if err != nil {
		fmt.Fprintf(stderr, "modelguard check: %v\n", err)
		return 2
	}
	res.print(stdout)
	if res.allow {
		return 0
	}
	return 1
}

// checkLocal decides with the configuration at path. The engine's logs
// about the decision (print() output, the error behind a policy_error)
// are kept for the result; explain ("", notes, full) traces evaluation.
func checkLocal(path, explain string, r *http.Request, body []byte) (checkResult, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return checkResult{}, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	notes := &decisionNotes{}
	engine, err := policy.New(ctx, cfg, policy.Options{Logger: slog.New(notes)})
	if err != nil {
		return checkResult{}, err
	}
	var tracer *topdown.BufferTracer
	if explain != "" {
		tracer = topdown.NewBufferTracer()
		ctx = rego.WithTracer(ctx, tracer)
	}
	// Go through the same translation Envoy's requests take.
	cr := extauthz.CheckRequestFromHTTP(r, body, extauthz.EnvoyOptions{WithBody: true, PackAsBytes: true})
	resp, err := extauthz.NewAuthorization(engine, nil).Check(ctx, cr)
	if err != nil {
		return checkResult{}, err
	}
	res := fromCheckResponse(resp)
	res.notes = notes.lines()
	if tracer != nil {
		res.trace = explainTrace(explain, *tracer)
	}
	return res, nil
}

func validExplain(mode string) bool { return mode == "notes" || mode == "full" }

// explainTrace renders a trace as opa eval --explain does.
func explainTrace(mode string, events []*topdown.Event) string {
	if mode == "notes" {
		events = lineage.Notes(events)
	} else {
		events = lineage.Full(events)
	}
	var b strings.Builder
	topdown.PrettyTraceWithLocation(&b, events)
	return b.String()
}

// decisionNotes is a slog.Handler keeping what a policy author needs from
// the engine's logs about a decision: print() output, and the error of
// any warning or error (a policy_error's evaluation error, say).
type decisionNotes struct {
	mu    sync.Mutex
	notes []string
}

func (n *decisionNotes) Enabled(context.Context, slog.Level) bool { return true }
func (n *decisionNotes) WithAttrs([]slog.Attr) slog.Handler       { return n }
func (n *decisionNotes) WithGroup(string) slog.Handler            { return n }

func (n *decisionNotes) Handle(_ context.Context, r slog.Record) error {
	attrs := map[string]string{}
	r.Attrs(func(a slog.Attr) bool {
		attrs[a.Key] = a.Value.String()
		return true
	})
	var line string
	switch {
	case r.Message == "rego print":
		line = fmt.Sprintf("print            %s: %s", attrs["location"], attrs["message"])
	case r.Level >= slog.LevelWarn && attrs["error"] != "":
		line = fmt.Sprintf("error            %s: %s", r.Message, attrs["error"])
	default:
		return nil
	}
	n.mu.Lock()
	n.notes = append(n.notes, line)
	n.mu.Unlock()
	return nil
}

func (n *decisionNotes) lines() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.notes)
}

type tlsFiles struct{ ca, cert, key string }

func checkRemote(addr string, tf tlsFiles, r *http.Request, body []byte) (checkResult, error) {
	creds := insecure.NewCredentials()
	if tf.ca != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		pem, err := os.ReadFile(tf.ca)
		if err != nil {
			return checkResult{}, err
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return checkResult{}, errors.New("no certificates in -ca file")
		}
		if tf.cert != "" {
			c, err := tls.LoadX509KeyPair(tf.cert, tf.key)
			if err != nil {
				return checkResult{}, err
			}
			tc.Certificates = []tls.Certificate{c}
		}
		creds = credentials.NewTLS(tc)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return checkResult{}, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cr := extauthz.CheckRequestFromHTTP(r, body, extauthz.EnvoyOptions{WithBody: true, PackAsBytes: true})
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, cr)
	if err != nil {
		return checkResult{}, fmt.Errorf("check %s: %w", addr, err)
	}
	return fromCheckResponse(resp), nil
}

func fromCheckResponse(resp *authv3.CheckResponse) checkResult {
	md := resp.GetDynamicMetadata().GetFields()
	res := checkResult{
		reason:     md["reason"].GetStringValue(),
		decisionID: md["decision_id"].GetStringValue(),
	}
	if ok := resp.GetOkResponse(); resp.GetStatus().GetCode() == 0 {
		res.allow, res.status = true, http.StatusOK
		for _, h := range ok.GetHeaders() {
			res.upstream = append(res.upstream, h.GetHeader().GetKey()+": "+h.GetHeader().GetValue())
		}
		res.removed = ok.GetHeadersToRemove()
		res.response = headerLines(ok.GetResponseHeadersToAdd())
		return res
	}
	denied := resp.GetDeniedResponse()
	res.response = headerLines(denied.GetHeaders())
	res.status = int(denied.GetStatus().GetCode())
	if res.status == 0 {
		res.status = http.StatusForbidden // what Envoy does when unset
	}
	res.body = denied.GetBody()
	return res
}

func headerLines(hs []*corev3.HeaderValueOption) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.GetHeader().GetKey() + ": " + h.GetHeader().GetValue()
	}
	return out
}

func (r checkResult) print(w io.Writer) {
	verdict := "DENY"
	if r.allow {
		verdict = "ALLOW"
	}
	fmt.Fprintf(w, "%s %d  reason=%s  decision_id=%s\n", verdict, r.status, r.reason, r.decisionID)
	for _, h := range r.upstream {
		fmt.Fprintf(w, "  upstream header  %s\n", h)
	}
	for _, h := range r.removed {
		fmt.Fprintf(w, "  removed header   %s\n", h)
	}
	for _, h := range r.response {
		fmt.Fprintf(w, "  response header  %s\n", h)
	}
	if r.body != "" {
		fmt.Fprintf(w, "  client body      %s\n", r.body)
	}
	for _, n := range r.notes {
		fmt.Fprintf(w, "  %s\n", n)
	}
	if r.trace != "" {
		fmt.Fprintf(w, "\n%s", r.trace)
	}
}
