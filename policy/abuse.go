package policy

import "net/http"

// screen runs the checks that come before authentication, cheapest first:
// the client address lists. It reports false when d has been denied.
func (e *Engine) screen(req *Request, d *Decision) bool {
	if e.ipLists == nil {
		return true
	}
	// The address is the one the gateway reports (Envoy's source address,
	// Kong's client IP as the plugin's client_ip setting says), never a
	// header the client controls.
	if err := req.Complete(PartSourceAddress); err != nil {
		e.refuse(d, req, err)
		return false
	}
	v := e.ipLists.Check(req.SourceAddress)
	d.IPList = v.List
	if v.Reason != "" {
		e.log.Info("client address refused", "decision_id", d.ID, "request_id", req.ID, "reason", v.Reason, "list", v.List, "source_address", req.SourceAddress)
		e.deny(d, http.StatusForbidden, v.Reason, "access denied")
		return false
	}
	return true
}
