package kongplugin

import (
	"context"
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/Kong/go-pdk"

	"github.com/modelguard/modelguard/policy"
	"github.com/modelguard/modelguard/policy/ratelimit"
	"github.com/modelguard/modelguard/policy/usage"
)

// Settlement: with Options.Settle the plugin has a response phase, reads
// the usage the model reports and settles the request's token reservation
// to it (ratelimit.Reservation). Kong decides which phases a Go plugin
// has from -dump, before any plugin or modelguard configuration is read,
// and buffers the whole upstream response of every request on a route
// whose plugins have a response phase (no streaming to the client until
// the model is done): so the choice is the plugin server's (a flag in
// kong.conf), and without it the plugin has no response phase at all.

// settleKey is the kong.ctx.shared member that carries the decision id
// from the access to the response phase (kong.log.serialize, which the log
// phase reads it from, exists only in the log phase).
const settleKey = "modelguard_settle"

// SettlingConfig is Config with a response phase: NewConfig returns it
// when the plugin settles. Same fields, so the same schema for Kong.
type SettlingConfig Config

// Access decides the request, as Config.Access.
func (s *SettlingConfig) Access(kong *pdk.PDK) { (*Config)(s).Access(kong) }

// Log adds the completion record, as Config.Log.
func (s *SettlingConfig) Log(kong *pdk.PDK) { (*Config)(s).Log(kong) }

// Response settles the request's token reservation from the response's
// usage. Kong runs it only for requests that reached the model, after the
// whole response arrived.
func (s *SettlingConfig) Response(kong *pdk.PDK) { s.p.response(kong) }

// holdForResponse lets the response phase find an allowed request's
// reservation (one PDK call). Without it the reservation stays the charge.
func (p *Plugin) holdForResponse(kong *pdk.PDK, d *policy.Decision) {
	if d.Reservation == nil {
		return
	}
	if err := kong.Ctx.SetShared(settleKey, d.ID); err != nil {
		p.log.Warn("settlement: saving the decision id failed: the reservation is the charge", "decision_id", d.ID, "error", err)
	}
}

// response reads the usage and settles. It never fails the response: a
// response without usage, or one that cannot be read, leaves the
// reservation as the charge (counted and logged).
func (p *Plugin) response(kong *pdk.PDK) {
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("panic in the response phase: the reservation is the charge", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()
	v, _ := kong.Ctx.GetSharedAny(settleKey)
	id, _ := v.(string)
	if id == "" {
		return // no reservation held for this request
	}
	held := p.pending.reservation(id)
	if held == nil {
		return // already ended (a repeated phase), or expired
	}
	used, err := responseUsage(kong)
	if err != nil {
		held.Keep("no_usage")
		p.log.Warn("settlement: no usage in the response: the reservation is the charge", "decision_id", id, "reserved", held.Tokens(), "error", err)
		return
	}
	if err := held.Settle(context.Background(), used); err != nil {
		p.log.Error("settlement failed: the reservation is the charge", "decision_id", id, "error", err)
		tell(kong.Log.Err, "settlement failed: the reservation is the charge", "decision_id", id, "error", err.Error())
		return
	}
	p.log.Debug("settled", "decision_id", id, "reserved", held.Tokens(), "used", used)
}

// responseUsage reads the model's usage from the upstream response (two
// PDK calls: its headers and its body, as Kong buffered them).
func responseUsage(kong *pdk.PDK) (int64, error) {
	h, err := kong.ServiceResponse.GetHeaders(-1)
	if err != nil {
		return 0, fmt.Errorf("kong.service.response.get_headers: %w", err)
	}
	body, err := kong.ServiceResponse.GetRawBody()
	if err != nil {
		return 0, fmt.Errorf("kong.service.response.get_raw_body: %w", err)
	}
	return usage.Tokens(headerValue(h, "content-type"), headerValue(h, "content-encoding"), body)
}

// headerValue is the first value of a header, names compared without case
// (Kong lowercases them, but the table is case-insensitive in Lua).
func headerValue(h map[string][]string, name string) string {
	for k, vs := range h {
		if len(vs) > 0 && strings.EqualFold(k, name) {
			return vs[0]
		}
	}
	return ""
}

// reservation is the reservation of a waiting decision, or nil.
func (p *pending) reservation(id string) *ratelimit.Reservation {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := p.byID[id]; e != nil {
		return e.d.Reservation
	}
	return nil
}

// release ends the reservation of a decision leaving the waiting list
// (its log phase, or expiry): one the response phase did not settle (no
// response phase ran: Kong turns buffering off for HTTP/2 and upgraded
// connections) stays the charge.
func release(e *entry) {
	if r := e.d.Reservation; r != nil {
		r.Keep("no_response")
	}
}
