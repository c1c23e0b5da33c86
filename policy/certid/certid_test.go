package certid

import (
	"slices"
	"testing"

	"github.com/modelguard/modelguard/test/testkit"
)

func TestLookup(t *testing.T) {
	m := New(Settings{
		{Principal: "spiffe://c/ns/batch/sa/scorer", Subject: "scorer", Roles: []string{"ml-engineer"}},
		{Prefix: "spiffe://c/ns/tenants/", Roles: []string{"chat-user"}},
		{Prefix: "spiffe://c/ns/tenants/acme/", Subject: "acme", Roles: []string{"admin"}},
	})
	for _, tc := range []struct {
		principal, subject string
		roles              []string
		ok                 bool
	}{
		{"spiffe://c/ns/batch/sa/scorer", "scorer", []string{"ml-engineer"}, true},
		{"spiffe://c/ns/batch/sa/scorer2", "", nil, false},
		{"spiffe://c/ns/tenants/globex/sa/app", "spiffe://c/ns/tenants/globex/sa/app", []string{"chat-user"}, true},
		{"spiffe://c/ns/tenants/acme/sa/app", "acme", []string{"admin"}, true}, // the longer prefix wins
		{"spiffe://c/ns/tenants/x\r\nx-evil: 1", "", nil, false},               // cannot be a header value
		{"", "", nil, false},
	} {
		id, ok := m.Lookup(tc.principal)
		if ok != tc.ok || ok && (id.Subject != tc.subject || !slices.Equal(id.Roles, tc.roles)) {
			t.Errorf("Lookup(%q) = %+v %v", tc.principal, id, ok)
		}
	}
}

func TestValidate(t *testing.T) {
	testkit.WantErrors(t, Settings{
		{Principal: "a", Prefix: "b"},
		{Subject: "x"},
		{Principal: "p", Roles: []string{"a,b", ""}},
		{Principal: "p", Subject: "bad\nsubject"},
	}.Validate(), 6,
		"[0]: set exactly one of principal and prefix",
		"[1]: set exactly one",
		"[2].roles[0]: must be non-empty",
		"[2].roles[1]: must be non-empty",
		"[3]: same principal or prefix as [2]",
		"[3].subject: holds characters",
	)
}
