// Package kongplugin runs modelguard inside Kong as a Go plugin, served by
// go-pdk's embedded plugin server. Like extauthz for Envoy it only
// translates: Kong's request becomes a policy.Request, the shared core
// decides, and the Decision becomes either kong.response.exit or upstream
// changes, with as few PDK round trips as possible (each one is a
// synchronous exchange over Kong's unix socket). The contract it follows is
// docs/kong-plugin-server.md.
//
// Every error path denies: a configuration that cannot be loaded, a PDK
// call that fails, a body that cannot be read, a panic. Kong < 3.8 lets a
// request through when a plugin errors, so Kong 3.8 is the minimum.
package kongplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Kong/go-pdk"
	kpp "github.com/Kong/go-pdk/server/kong_plugin_protocol"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/modelguard/modelguard/policy"
	"github.com/modelguard/modelguard/policy/certid"
	"github.com/modelguard/modelguard/policy/config"
	"github.com/modelguard/modelguard/policy/metrics"
)

const (
	// Priority runs modelguard after Kong's bundled authentication plugins
	// (jwt 1450, key-auth 1250, basic-auth 1100, hmac-auth 1030) and before
	// ip-restriction (990), acl (950) and rate-limiting (910), which read
	// the consumer and groups modelguard sets.
	Priority = 1010
	// DefaultConfigPath is the configuration file when config_path is unset.
	DefaultConfigPath = "/etc/modelguard/config.yaml"
	// SerializeKey is the kong.log.serialize member holding the decision
	// id when the decision id header cannot carry it to the log phase.
	SerializeKey = "modelguard_decision_id"
	// groupsKey is where Kong's acl plugin reads the caller's groups.
	groupsKey = "authenticated_groups"
	// metadataKey is where the policy's dynamic_metadata (opa-envoy-plugin's
	// result) goes for plugins that run later.
	metadataKey = "modelguard_dynamic_metadata"
)

// Options configure a Plugin; all are optional.
type Options struct {
	// Logger receives the plugin's own logs. Kong copies the plugin
	// server's stderr into its error.log at INFO, below its default
	// log_level (notice), so what an operator must see also goes through
	// kong.log (tell). Nil discards.
	Logger *slog.Logger
	// NewLogger builds the logger of the core loaded from one
	// configuration file, honouring its log section. Nil: Logger.
	NewLogger func(config.Log) *slog.Logger
	// OpenAudit opens the audit trail a configuration names, once per
	// configuration file; the Closer (may be nil) runs at Close. Nil
	// records nothing.
	OpenAudit func(*config.Config) (policy.AuditSink, io.Closer, error)
	// Metrics receives the cores' counters (all cores share them); nil
	// creates unregistered ones.
	Metrics *metrics.Metrics
	// OpenTracing starts the tracing a configuration names, once per
	// configuration file; nil Tracer: off. The Closer (may be nil) runs at
	// Close and flushes the spans. Nil traces nothing.
	OpenTracing func(*config.Config) (policy.Tracer, io.Closer, error)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Settle gives the plugin a response phase that settles token
	// reservations from the usage the model reports (settle.go). It costs
	// streaming: Kong buffers whole responses of a plugin with a response
	// phase.
	Settle bool
}

// Plugin is the state every plugin instance shares: the cores built per
// configuration file and the decisions waiting for their log phase. Pass
// NewConfig to server.StartServer.
type Plugin struct {
	log       *slog.Logger
	newLogger func(config.Log) *slog.Logger
	openAudit func(*config.Config) (policy.AuditSink, io.Closer, error)
	metrics   *metrics.Metrics
	openTrace func(*config.Config) (policy.Tracer, io.Closer, error)
	now       func() time.Time

	// ctx bounds the cores' background work (reload watches, JWKS refresh).
	ctx    context.Context
	cancel context.CancelFunc

	mu    sync.Mutex
	cores map[string]*core // by config_path as configured

	pending *pending
	settle  bool // Options.Settle

	// beforeEvaluate, when set, runs in the access phase just before the
	// core decides: tests inject panics with it.
	beforeEvaluate func()
	// noRequestLine reads the method and path with get_method and get_path
	// instead of $request: go-pdk's test environment, which the unit tests
	// run in, has no kong.nginx.get_var (the Kong harness tests in test/
	// run the request line).
	noRequestLine bool
	// principals are the client certificates' principals, shared by every
	// core (they depend on the certificate alone).
	principals *certid.Principals
}

// New returns a Plugin. It does no I/O: Kong runs the binary with -dump at
// every start, and cores are built on the first event that needs them.
func New(opts Options) *Plugin {
	p := &Plugin{
		log:        opts.Logger,
		newLogger:  opts.NewLogger,
		openAudit:  opts.OpenAudit,
		metrics:    opts.Metrics,
		openTrace:  opts.OpenTracing,
		now:        opts.Now,
		cores:      map[string]*core{},
		settle:     opts.Settle,
		principals: certid.NewPrincipals(),
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.newLogger == nil {
		p.newLogger = func(config.Log) *slog.Logger { return p.log }
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.metrics == nil {
		p.metrics = metrics.New(nil)
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.pending = newPending(defaultPendingMax, defaultPendingAge)
	return p
}

// NewConfig is the constructor go-pdk calls for every plugin instance
// (and once to derive the schema and phases). Instances share p. A
// settling plugin's instances are SettlingConfig: they have a response
// phase.
func (p *Plugin) NewConfig() any {
	if p.settle {
		return (*SettlingConfig)(&Config{p: p})
	}
	return &Config{p: p}
}

// Close logs the decisions still waiting for their log phase (their records
// are in the trail, without a completion), stops the cores' background work
// and closes their audit trails (flushing them).
func (p *Plugin) Close() {
	p.expire(p.pending.drain())
	p.cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.cores {
		c.close()
	}
}

// Config is one plugin instance: the configuration Kong sends (its exported
// fields are the schema Kong reads from -dump) and a link to the shared
// state. Kong creates a new instance whenever the plugin's configuration
// changes, so an instance only resolves its core once and keeps it.
type Config struct {
	// ConfigPath is modelguard's configuration file, the same file the
	// ext_authz server reads; absolute. Unset: DefaultConfigPath.
	ConfigPath string `json:"config_path"`
	// ClientIP picks the source address modelguard records and gives the
	// policy: "forwarded" (unset: the default) is
	// kong.client.get_forwarded_ip, which honours Kong's trusted_ips and
	// real_ip_header as Kong's own plugins do; "direct" is
	// kong.client.get_ip, the peer (a load balancer, behind one).
	ClientIP string `json:"client_ip"`
	// Consumer (unset: false) makes an allowed caller Kong's authenticated
	// consumer and credential (kong.client.authenticate), for
	// rate-limiting by consumer or credential and for loggers, at one PDK
	// call per allowed request. Off by default: the upstream gets the
	// consumer headers either way, and without a consumer Kong's acl
	// plugin reads the groups below whatever its
	// always_use_authenticated_groups says.
	Consumer *bool `json:"consumer"`
	// Groups (unset: true) puts an allowed caller's roles in
	// kong.ctx.shared.authenticated_groups for Kong's acl plugin; false
	// saves that PDK call per request when no acl plugin runs.
	Groups *bool `json:"groups"`

	p    *Plugin
	core atomic.Pointer[core]
}

// validate checks the settings Kong's schema cannot (go-pdk has no enums).
func (c *Config) validate() error {
	if c.ClientIP != "" && c.ClientIP != clientIPForwarded && c.ClientIP != clientIPDirect {
		return fmt.Errorf("plugin config client_ip %q: want %q or %q", c.ClientIP, clientIPForwarded, clientIPDirect)
	}
	return nil
}

func (c *Config) consumer() bool { return c.Consumer != nil && *c.Consumer }
func (c *Config) groups() bool   { return c.Groups == nil || *c.Groups }

// Access decides the request; see Plugin.access.
func (c *Config) Access(kong *pdk.PDK) { c.p.access(c, kong) }

// Log adds the completion record: the final status. It is the log phase,
// not the response phase: a response handler makes Kong buffer the whole
// upstream response, which breaks streamed (SSE) model answers.
func (c *Config) Log(kong *pdk.PDK) { c.p.logPhase(c, kong) }

func (c *Config) resolve() *core {
	if k := c.core.Load(); k != nil {
		return k
	}
	k := c.p.coreFor(c.ConfigPath)
	c.core.Store(k)
	return k
}

// exchange is one access phase's conversation with Kong.
type exchange struct {
	kong   *pdk.PDK
	exited bool
}

// exit answers the client with a denial. kong.response.exit is never
// answered by Kong (the connection closes), so nothing may follow it.
func (x *exchange) exit(d *policy.Decision) {
	if x.exited {
		return
	}
	x.exited = true
	hs := d.DenialHeaders()
	h := make(map[string][]string, len(hs))
	for _, rh := range hs {
		h[rh.Name] = append(h[rh.Name], rh.Value)
	}
	x.kong.Response.Exit(d.Status, d.Body(), h)
}

// access reads the request, asks the core and applies the decision. The
// decision is recorded first, an allow durably (audit.durability: the core
// answers 503 audit_unavailable when it cannot be), so that a crash of the
// plugin server after access loses no record of a request that went on;
// then it is saved for the log phase, which Kong runs after a denial too,
// before any answer is sent. The request is read only as
// far as the decision needs (policy.Request.Fetch): a request without a
// valid credential costs get_headers and exit.
func (p *Plugin) access(c *Config, kong *pdk.PDK) {
	x := &exchange{kong: kong}
	var (
		st  *coreState
		req *policy.Request
		d   *policy.Decision
	)
	defer func() {
		if r := recover(); r != nil {
			p.panicked(r, x, st, req, d)
		}
	}()

	st = c.resolve().get()
	if st.err == nil {
		if err := c.validate(); err != nil {
			st = &coreState{err: err}
		}
	}
	if st.err != nil {
		tell(kong.Log.Err, "denied (503): "+st.err.Error())
		x.exit(unavailable("config_error"))
		return
	}

	// The body may come into this process: it holds room in the core's
	// body budget (as much as the largest body read) until the core has
	// decided.
	maxBody := st.engine.MaxBodyBytes()
	admitted := st.engine.ReserveBody(context.Background(), int64(maxBody))
	var (
		lines int
		err   error
	)
	if admitted {
		defer st.engine.ReleaseBody(int64(maxBody))
		req, lines, err = readHeaders(kong)
	}
	switch {
	case !admitted:
		d = st.engine.Deny(policy.NewDecisionID(), 0, "", "")
		d.SetOverloaded()
		p.log.Warn("overloaded: request shed before reading its body", "decision_id", d.ID, "limit", "body_bytes")
	case req == nil:
		d = st.engine.Deny(policy.NewDecisionID(), http.StatusServiceUnavailable, "kong_pdk_error", "service unavailable")
		p.log.Error("reading the request from Kong failed: denied", "decision_id", d.ID, "error", err)
		tell(kong.Log.Err, "reading the request from Kong failed: denied (503)", "decision_id", d.ID, "reason", d.Reason, "error", err.Error())
	case err != nil:
		fail, _ := errors.AsType[*policy.Refusal](err)
		d = st.engine.Deny(policy.NewDecisionID(), fail.Status, fail.Reason, fail.Message)
		p.log.Error("request refused before the core", "decision_id", d.ID, "reason", fail.Reason, "error", fail.Err)
		tell(kong.Log.Err, fmt.Sprintf("request refused before the core (%d)", fail.Status), "decision_id", d.ID, "reason", fail.Reason, "error", fail.Err.Error())
	default:
		f := &fetcher{kong: kong, maxBody: maxBody, direct: c.ClientIP == clientIPDirect, noRequestLine: p.noRequestLine, principals: p.principals}
		req.Fetch = f.fetch
		if p.beforeEvaluate != nil {
			p.beforeEvaluate()
		}
		d = st.engine.Evaluate(context.Background(), req)
		if r := f.failure; r != nil {
			tell(kong.Log.Err, fmt.Sprintf("reading the request from Kong failed: denied (%d)", r.Status), "decision_id", d.ID, "reason", r.Reason, "error", r.Err.Error())
		}
		// What the audit record needs beyond the decision: the log phase
		// reads the forwarded address from kong.log.serialize, but the
		// direct peer is not there; with audit.body_sha256 every body is
		// hashed, as with Envoy.
		var record policy.Part
		if f.direct {
			record |= policy.PartSourceAddress
		}
		if st.engine.RecordsBody() {
			record |= policy.PartBody
		}
		if record != 0 {
			if err := req.Complete(record); err != nil {
				p.log.Error("reading the request for its audit record failed: denied", "decision_id", d.ID, "error", err)
				tell(kong.Log.Err, "reading the request for its audit record failed: denied (503)", "decision_id", d.ID, "error", err.Error())
				d = st.engine.Deny(d.ID, http.StatusServiceUnavailable, "kong_pdk_error", "service unavailable")
			}
		}
	}
	if req == nil {
		req = &policy.Request{Gateway: gateway}
	}
	d = st.engine.Commit(req, d)
	p.save(st, req, d)

	if !carried(st.engine, d, lines) {
		if err := carryID(kong, d.ID); err != nil {
			p.fail(x, st, d, "kong_pdk_error", "saving the decision id failed", err)
			return
		}
	}
	if !d.Allow {
		x.exit(d)
		return
	}
	if err := applyAllow(kong, d, req.Headers, c.consumer(), c.groups()); err != nil {
		reason := "kong_pdk_error"
		if errors.Is(err, errHeaderValue) {
			reason = "header_value_invalid"
		}
		p.fail(x, st, d, reason, "applying the allow decision failed", err)
		return
	}
	p.holdForResponse(kong, d)
}

// panicked denies (503) a request whose access phase panicked: the decision
// already recorded and saved for the log phase (d) is overturned, or a new
// one is recorded and saved.
// st, req and d are what access had when it panicked, possibly nil.
func (p *Plugin) panicked(r any, x *exchange, st *coreState, req *policy.Request, d *policy.Decision) {
	p.log.Error("panic in the access phase: denied", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	if !x.exited {
		tell(x.kong.Log.Err, "panic in the access phase: denied (503)", "panic", fmt.Sprint(r))
	}
	var fd *policy.Decision
	switch {
	case st == nil || st.engine == nil:
		fd = unavailable("internal_error")
	case d != nil:
		fd = st.engine.Deny(d.ID, http.StatusServiceUnavailable, "internal_error", "service unavailable")
		p.pending.replace(d.ID, fd)
	default:
		fd = st.engine.Deny(policy.NewDecisionID(), http.StatusServiceUnavailable, "internal_error", "service unavailable")
		if req == nil {
			req = &policy.Request{Gateway: gateway}
		}
		fd = st.engine.Commit(req, fd)
		if !x.exited {
			p.save(st, req, fd)
			if !carried(st.engine, fd, 0) {
				_ = carryID(x.kong, fd.ID)
			}
		}
	}
	x.exit(fd)
}

// save keeps what the log phase needs to complete the record of d, whose
// request is req.
func (p *Plugin) save(st *coreState, req *policy.Request, d *policy.Decision) {
	e := &entry{id: d.ID, at: p.now(), rec: st.engine, d: d}
	if req.Method == "" {
		e.unread |= policy.PartTarget
	}
	if req.SourceAddress == "" {
		e.unread |= policy.PartSourceAddress
	}
	p.expire(p.pending.put(e))
}

// fail denies with 503 when an allow could not be applied (a PDK call
// failed part-way, a header value could not be sent), and makes the saved
// decision say so: the trail holds the allow, and its completion record
// the 503 with this reason.
func (p *Plugin) fail(x *exchange, st *coreState, d *policy.Decision, reason, msg string, err error) {
	p.log.Error(msg+": denied", "decision_id", d.ID, "reason", reason, "error", err)
	tell(x.kong.Log.Err, msg+": denied (503)", "decision_id", d.ID, "reason", reason, "error", err.Error())
	fd := st.engine.Deny(d.ID, http.StatusServiceUnavailable, reason, "service unavailable")
	p.pending.replace(d.ID, fd)
	x.exit(fd)
}

// The values of Config.ClientIP.
const (
	clientIPForwarded = "forwarded"
	clientIPDirect    = "direct"
)

// tell sends an operator message through kong.log (level is kong.Log.Err,
// kong.Log.Warn, ...): Kong writes it to its error.log at that level,
// while the plugin server's own stderr is logged at INFO, below Kong's
// default log_level, and dropped. Values must be strings: go-pdk cannot
// encode an error value (nothing would be logged). It is a PDK round trip,
// so only failures use it, and never after kong.response.exit.
func tell(level func(args ...any) error, msg string, kv ...string) {
	var b strings.Builder
	b.WriteString("modelguard: ")
	b.WriteString(msg)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, " %s=%q", kv[i], kv[i+1])
	}
	_ = level(b.String())
}

// unavailable is the 503 denial when no core is loaded, so nothing is
// audited and no decision id header is configured.
func unavailable(reason string) *policy.Decision {
	return &policy.Decision{ID: policy.NewDecisionID(), Status: http.StatusServiceUnavailable, Reason: reason, Message: "service unavailable"}
}

// logPhase runs in a Kong timer after the response, with saved data
// only: one kong.log.serialize call has the final status and what finds
// the decision (see logged).
func (p *Plugin) logPhase(c *Config, kong *pdk.PDK) {
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("panic in the log phase", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()
	raw, err := kong.Log.Serialize()
	if err != nil {
		p.log.Error("log phase: kong.log.serialize failed", "error", err)
		tell(kong.Log.Err, "log phase: kong.log.serialize failed: the decision's record gets no completion", "error", err.Error())
		return
	}
	if err := p.logged(c, raw); err != nil {
		p.log.Error("log phase: " + err.Error() + ": the decision's record gets no completion")
		tell(kong.Log.Err, "log phase: "+err.Error()+": the decision's record gets no completion")
	}
}

// serialized is what the log phase reads of kong.log.serialize's JSON.
type serialized struct {
	Request struct {
		Method  string            `json:"method"`
		URI     string            `json:"uri"` // the raw path and query
		Headers map[string]values `json:"headers"`
	} `json:"request"`
	Response struct {
		Status  int               `json:"status"`
		Headers map[string]values `json:"headers"`
	} `json:"response"`
	ClientIP   string `json:"client_ip"` // kong.client.get_forwarded_ip
	DecisionID string `json:"modelguard_decision_id"`
}

// values is one header in kong.log.serialize: a string, or an array for a
// repeated header.
type values []string

func (v *values) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '[' {
		return json.Unmarshal(b, (*[]string)(v))
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*v = values{s}
	return nil
}

// logged adds the completion record, with the final status, to the
// decision a log phase's kong.log.serialize output (raw) names. The decision id comes, in this order, from
// the serialize value access set (SerializeKey), from the decision id
// header of a denial's response (set by kong.response.exit), or from the
// same header upstream on an allow (set_headers replaced any client copy).
// A denial is only ever taken by its response header and an allow by its
// upstream header, so a client sending the header does not reach another
// decision. Parts of the request access did not read (method and path of
// a 401, the forwarded address), so that the decision record lacks them,
// are added to the completion from raw.
func (p *Plugin) logged(c *Config, raw string) error {
	var s serialized
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return fmt.Errorf("kong.log.serialize: %w", err)
	}
	var e *entry
	if s.DecisionID != "" {
		e = p.pending.take(s.DecisionID, func(*entry) bool { return true })
	} else if st := c.resolve().get(); st.engine != nil {
		if h := st.engine.DecisionIDHeader(); h != "" {
			for _, id := range s.Response.Headers[h] {
				if e = p.pending.take(id, func(e *entry) bool { return !e.d.Allow }); e != nil {
					break
				}
			}
			for _, id := range s.Request.Headers[h] {
				if e != nil {
					break
				}
				e = p.pending.take(id, func(e *entry) bool { return e.d.Allow })
			}
		}
	}
	if e == nil {
		p.log.Debug("log phase without a waiting decision (modelguard did not decide, or the decision expired)")
		return nil
	}
	release(e)
	status := s.Response.Status
	if status == 0 {
		p.log.Warn("log phase: no final status, recording the decision's", "decision_id", e.id)
		status = e.d.Status
	}
	done := policy.Completion{Gateway: gateway, Status: status, Latency: p.now().Sub(e.d.Start)}
	if e.unread&policy.PartTarget != 0 {
		done.Path, _, _ = strings.Cut(s.Request.URI, "?")
		done.Method = s.Request.Method
	}
	if e.unread&policy.PartSourceAddress != 0 {
		done.SourceAddress = s.ClientIP
	}
	_ = e.rec.RecordCompletion(e.d, done)
	return nil
}

// carried reports whether the log phase finds d's id in kong.log.serialize
// without a call to put it there: in the decision id header of a denial,
// or of an allow when the upstream header lands among the request headers
// serialize returns (Kong's lua_max_req_headers, 100 by default; a new
// header is added last).
func carried(e *policy.Engine, d *policy.Decision, lines int) bool {
	if e.DecisionIDHeader() == "" {
		return false
	}
	return !d.Allow || lines < serializeMaxHeaders
}

// serializeMaxHeaders is Kong's default lua_max_req_headers.
const serializeMaxHeaders = 100

// carryID puts the decision id into kong.log.serialize's output, one PDK
// call.
func carryID(kong *pdk.PDK, id string) error {
	return kong.Log.Ask("kong.log.set_serialize_value", &kpp.KV{K: SerializeKey, V: structpb.NewStringValue(id)}, nil)
}

// expire logs the decisions whose log phase never came: their records are
// in the trail, without the final status.
func (p *Plugin) expire(expired []*entry) {
	for _, e := range expired {
		release(e)
		p.log.Warn("no log phase for a decision: its record gets no completion", "decision_id", e.id)
	}
}
