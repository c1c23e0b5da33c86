package certid

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net/url"
	"testing"

	"github.com/modelguard/modelguard/test/testkit"
)

func TestFromPEM(t *testing.T) {
	ca := testkit.NewCA(t, "test ca")
	issue := func(tmpl x509.Certificate) string {
		c := ca.Issue(t, tmpl)
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}))
	}
	uri := func(s string) []*url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return []*url.URL{u}
	}
	errSubject := errors.New("subject unavailable")
	for _, tc := range []struct {
		name, pem, subject string
		subjectErr         error
		want               string
		wantErr            error
		asked              bool // whether the subject was asked for
	}{
		{"spiffe id", issue(x509.Certificate{Subject: pkix.Name{CommonName: "scorer"}, URIs: uri("spiffe://c/ns/batch/sa/scorer"), DNSNames: []string{"scorer.local"}}),
			"", nil, "spiffe://c/ns/batch/sa/scorer", nil, false},
		{"uri as written (upper-case scheme kept)", issue(x509.Certificate{ExtraExtensions: []pkix.Extension{rawSAN(t, "SPIFFE://c/ns/a/sa/b")}}), "", nil, "SPIFFE://c/ns/a/sa/b", nil, false},
		{"dns san", issue(x509.Certificate{Subject: pkix.Name{CommonName: "scorer"}, DNSNames: []string{"scorer.local", "other.local"}}),
			"", nil, "scorer.local", nil, false},
		{"subject", issue(x509.Certificate{Subject: pkix.Name{CommonName: "scorer", Organization: []string{"Acme"}}}),
			"CN=scorer,O=Acme", nil, "CN=scorer,O=Acme", nil, true},
		{"subject unavailable", issue(x509.Certificate{Subject: pkix.Name{CommonName: "scorer"}}), "", errSubject, "", errSubject, true},
		{"not pem", "garbage", "", nil, "", ErrMalformed, false},
		{"not a certificate", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 1, 2, 3}})), "", nil, "", ErrMalformed, false},
		{"a key", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})), "", nil, "", ErrMalformed, false},
		{"empty", "", "", nil, "", ErrMalformed, false},
	} {
		asked := false
		got, err := FromPEM(tc.pem, func() (string, error) { asked = true; return tc.subject, tc.subjectErr })
		if got != tc.want || !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) || asked != tc.asked {
			t.Errorf("%s: %q, %v (subject asked: %v)", tc.name, got, err, asked)
		}
	}
}

// TestPrincipals: a remembered certificate costs no parse and no subject
// call; errors are not remembered; a full Principals starts over.
func TestPrincipals(t *testing.T) {
	ca := testkit.NewCA(t, "test ca")
	issue := func(cn string) string {
		c := ca.Issue(t, x509.Certificate{Subject: pkix.Name{CommonName: cn}})
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}))
	}
	a, b := issue("a"), issue("b")
	p := NewPrincipals()
	p.max = 1
	calls := 0
	subject := func(dn string, err error) func() (string, error) {
		return func() (string, error) { calls++; return dn, err }
	}
	steps := []struct {
		pem, dn string
		err     error
		want    string
		calls   int // subject calls so far
	}{
		{a, "", errors.New("down"), "", 1}, // not remembered
		{a, "CN=a", nil, "CN=a", 2},
		{a, "CN=changed", nil, "CN=a", 2}, // remembered
		{b, "CN=b", nil, "CN=b", 3},       // full: starts over
		{a, "CN=a", nil, "CN=a", 4},
		{"garbage", "", nil, "", 4},
	}
	for i, s := range steps {
		got, err := p.FromPEM(s.pem, subject(s.dn, s.err))
		if got != s.want || calls != s.calls || (err != nil) != (s.err != nil || s.pem == "garbage") {
			t.Errorf("step %d: %q, %v, %d subject calls", i, got, err, calls)
		}
	}
}

// rawSAN is a subjectAltName extension with one URI, spelled as given
// (crypto/x509 would write it back from a parsed url.URL).
func rawSAN(t *testing.T, uri string) pkix.Extension {
	v, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(uri)}})
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oidSubjectAltName, Value: v}
}

func BenchmarkFromPEM(b *testing.B) {
	ca := testkit.NewCA(b, "test ca")
	u, _ := url.Parse("spiffe://cluster.local/ns/batch/sa/scorer")
	c := ca.Issue(b, x509.Certificate{URIs: []*url.URL{u}})
	p := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}))
	b.Run("parse", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := FromPEM(p, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("remembered", func(b *testing.B) {
		ps := NewPrincipals()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ps.FromPEM(p, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
