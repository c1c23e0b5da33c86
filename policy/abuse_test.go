package policy

import (
	"context"
	"errors"
	"testing"

	"github.com/modelguard/modelguard/policy/iplist"
)

type fakeAddresses map[string]iplist.Verdict

func (f fakeAddresses) Check(a string) iplist.Verdict { return f[a] }

// TestScreenAddress: the address lists run before authentication, name
// the deciding list in the decision and its record, and a failure to read
// the address from the gateway denies.
func TestScreenAddress(t *testing.T) {
	lists := fakeAddresses{
		"203.0.113.9:1": {Reason: iplist.ReasonDenied, List: "threats"},
		"10.0.0.1:1":    {List: "corp"},
		"":              {Reason: iplist.ReasonUnknown},
	}
	for _, tc := range []struct {
		name, addr   string
		fetchErr     error
		creds        map[string]string
		status       int
		reason, list string
	}{
		{"denied before authentication", "203.0.113.9:1", nil, nil, 403, "ip_denied", "threats"},
		{"allowed, list named", "10.0.0.1:1", nil, map[string]string{"x-api-key": "mg_alice"}, 200, "allowed", "corp"},
		{"no address fails closed", "", nil, map[string]string{"x-api-key": "mg_alice"}, 403, "ip_unknown", ""},
		{"gateway read error fails closed", "10.0.0.1:1", errors.New("pdk: broken pipe"), map[string]string{"x-api-key": "mg_alice"}, 503, "gateway_read_error", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, rec := testEngine(t, allowAll)
			e.ipLists = lists
			req := chat(tc.creds)
			req.Fetch = func(r *Request, parts Part) error {
				if parts&PartSourceAddress != 0 {
					if tc.fetchErr != nil {
						return tc.fetchErr
					}
					r.SourceAddress = tc.addr
				}
				return nil
			}
			d := e.Decide(context.Background(), req)
			if d.Status != tc.status || d.Reason != tc.reason || d.IPList != tc.list {
				t.Fatalf("got %d %q list %q, want %d %q list %q", d.Status, d.Reason, d.IPList, tc.status, tc.reason, tc.list)
			}
			if ev := rec.Events(); len(ev) != 1 || ev[0].IPList != tc.list {
				t.Fatalf("audit %+v", ev)
			}
		})
	}
}
