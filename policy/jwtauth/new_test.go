package jwtauth

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelguard/modelguard/policy/config"
	"github.com/modelguard/modelguard/test/testkit"
)

func TestNewRefuses(t *testing.T) {
	k := keys(t)
	dir := t.TempDir()
	testkit.WriteFile(t, dir, "rsa1024.pem", pemOf(t, &k.rsa1024.PublicKey))
	testkit.WriteFile(t, dir, "rsa.pem", pemOf(t, &k.rsa.PublicKey))
	testkit.WriteFile(t, dir, "ec384.pem", pemOf(t, &k.ec384.PublicKey))
	der, err := x509.MarshalPKCS8PrivateKey(k.rsa)
	if err != nil {
		t.Fatal(err)
	}
	testkit.WriteFile(t, dir, "private.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	testkit.WriteFile(t, dir, "two.pem", append(pemOf(t, &k.rsa.PublicKey), pemOf(t, &k.rsa2.PublicKey)...))
	testkit.WriteFile(t, dir, "short.secret", []byte(strings.Repeat("s", 31)+"\n"))
	testkit.WriteFile(t, dir, "secret40", []byte(strings.Repeat("s", 40)))
	testkit.WriteFile(t, dir, "pem.secret", pemOf(t, &k.rsa.PublicKey))
	testkit.WriteFile(t, dir, "garbage.pem", []byte("hello"))
	t.Setenv("JWTAUTH_TEST_EMPTY", "")

	base := func() config.Issuer {
		return config.Issuer{Issuer: "https://idp.example", Audiences: []string{"api"}, Algorithms: []string{"RS256"},
			Keys: []config.StaticKey{{PEMFile: "rsa.pem"}}}
	}
	with := func(f func(*config.Issuer)) []config.Issuer {
		is := base()
		f(&is)
		return []config.Issuer{is}
	}
	key := func(sk config.StaticKey, algs ...string) []config.Issuer {
		return with(func(is *config.Issuer) {
			is.Keys = []config.StaticKey{sk}
			if len(algs) > 0 {
				is.Algorithms = algs
			}
		})
	}
	const p = "authentication.jwt.issuers[0]"
	tests := []struct {
		name     string
		issuers  []config.Issuer
		wantPath string
		wantMsg  string
	}{
		{"RSA 1024 key", key(config.StaticKey{PEMFile: "rsa1024.pem"}), p + ".keys[0].pem_file", "2048"},
		{"RSA 1024 key, second key", with(func(is *config.Issuer) {
			is.Keys = append(is.Keys, config.StaticKey{KID: "old", PEMFile: "rsa1024.pem"})
		}), p + ".keys[1].pem_file", "2048"},
		{"short HMAC secret", key(config.StaticKey{SecretFile: "short.secret"}, "HS256"), p + ".keys[0].secret_file", "32-byte minimum"},
		{"secret too short for HS512", key(config.StaticKey{SecretFile: "secret40"}, "HS512"), p + ".keys[0].secret_file", "64 bytes"},
		{"PEM text as HMAC secret", key(config.StaticKey{SecretFile: "pem.secret"}, "HS256"), p + ".keys[0].secret_file", "PEM"},
		{"secret env unset", key(config.StaticKey{SecretEnv: "JWTAUTH_TEST_UNSET_VAR"}, "HS256"), p + ".keys[0].secret_env", "unset"},
		{"pem env empty", key(config.StaticKey{PEMEnv: "JWTAUTH_TEST_EMPTY"}), p + ".keys[0].pem_env", "unset or empty"},
		{"missing key file", key(config.StaticKey{PEMFile: "nope.pem"}), p + ".keys[0].pem_file", "no such file"},
		{"private key", key(config.StaticKey{PEMFile: "private.pem"}), p + ".keys[0].pem_file", "private key"},
		{"two PEM blocks", key(config.StaticKey{PEMFile: "two.pem"}), p + ".keys[0].pem_file", "exactly one"},
		{"not PEM", key(config.StaticKey{PEMFile: "garbage.pem"}), p + ".keys[0].pem_file", "no PEM block"},
		{"two sources", key(config.StaticKey{PEMFile: "rsa.pem", SecretFile: "secret40"}), p + ".keys[0]", "exactly one"},
		{"no source", key(config.StaticKey{KID: "x"}), p + ".keys[0]", "exactly one"},
		{"P-384 key for ES256", key(config.StaticKey{PEMFile: "ec384.pem"}, "ES256"), p + ".keys[0].pem_file", "P-256"},
		{"RSA key for EdDSA", key(config.StaticKey{PEMFile: "rsa.pem"}, "EdDSA"), p + ".keys[0].pem_file", "fits none"},
		{"HMAC secret for RS256", key(config.StaticKey{SecretFile: "secret40"}, "RS256"), p + ".keys[0].secret_file", "fits none"},
		{"alg none", with(func(is *config.Issuer) { is.Algorithms = []string{"none"} }), p + ".algorithms[0]", "unsupported"},
		{"alg lower case", with(func(is *config.Issuer) { is.Algorithms = []string{"RS256", "rs256"} }), p + ".algorithms[1]", "unsupported"},
		{"no algorithms", with(func(is *config.Issuer) { is.Algorithms = nil }), p + ".algorithms", "required"},
		{"no audiences", with(func(is *config.Issuer) { is.Audiences = nil }), p + ".audiences", "required"},
		{"empty audience", with(func(is *config.Issuer) { is.Audiences = []string{"api", ""} }), p + ".audiences[1]", "empty"},
		{"no issuer", with(func(is *config.Issuer) { is.Issuer = "" }), p + ".issuer", "required"},
		{"both jwks_url and keys", with(func(is *config.Issuer) { is.JWKSURL = "https://idp.example/jwks" }), p, "exactly one"},
		{"neither jwks_url nor keys", with(func(is *config.Issuer) { is.Keys = nil }), p, "exactly one"},
		{"HMAC with JWKS", with(func(is *config.Issuer) {
			is.Keys, is.JWKSURL, is.Algorithms = nil, "https://idp.example/jwks", []string{"RS256", "HS256"}
		}), p + ".algorithms[1]", "secret"},
		{"relative JWKS URL", with(func(is *config.Issuer) { is.Keys, is.JWKSURL = nil, "/jwks" }), p + ".jwks_url", "absolute"},
		{"negative leeway", with(func(is *config.Issuer) { is.Leeway = -time.Second }), p + ".leeway", "negative"},
		{"leeway too large", with(func(is *config.Issuer) { is.Leeway = 6 * time.Minute }), p + ".leeway", "maximum"},
		{"negative refresh interval", with(func(is *config.Issuer) {
			is.Keys, is.JWKSURL, is.JWKSRefreshInterval = nil, "https://idp.example/jwks", -time.Second
		}), p + ".jwks_refresh_interval", "negative"},
		{"empty roles claim", with(func(is *config.Issuer) { is.Claims.Roles = []string{"roles", ""} }), p + ".claims.roles[1]", "empty"},
		{"duplicate issuer", append(with(func(*config.Issuer) {}), base()), "authentication.jwt.issuers[1].issuer", "twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := New(t.Context(), config.JWT{Issuers: tc.issuers}, dir, Options{})
			if v != nil {
				t.Error("New returned a Verifier with an error")
			}
			wantFieldError(t, err, tc.wantPath)
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %q does not mention %q", err, tc.wantMsg)
			}
		})
	}
}

func TestNewAcceptsKeyForms(t *testing.T) {
	k := keys(t)
	dir := t.TempDir()
	testkit.WriteFile(t, dir, "pkcs1.pem", pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey)}))
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "idp"},
		NotBefore:    time.Unix(0, 0),
		NotAfter:     time.Unix(1, 0), // expired: the certificate only carries the pinned key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.rsa.PublicKey, k.rsa)
	if err != nil {
		t.Fatal(err)
	}
	testkit.WriteFile(t, dir, "cert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	abs := testkit.WriteFile(t, t.TempDir(), "abs.pem", pemOf(t, &k.rsa.PublicKey))
	t.Setenv("JWTAUTH_TEST_PEM", string(pemOf(t, &k.rsa.PublicKey)))
	t.Setenv("JWTAUTH_TEST_SECRET", string(k.secret)+"\r\n")

	tests := []struct {
		name string
		key  config.StaticKey
		alg  string
		sign any
	}{
		{"PKCS#1 RSA public key", config.StaticKey{PEMFile: "pkcs1.pem"}, "RS256", k.rsa},
		{"certificate", config.StaticKey{PEMFile: "cert.pem"}, "RS256", k.rsa},
		{"absolute path", config.StaticKey{PEMFile: abs}, "RS256", k.rsa},
		{"PEM from the environment", config.StaticKey{PEMEnv: "JWTAUTH_TEST_PEM"}, "RS256", k.rsa},
		{"secret from the environment, CRLF trimmed", config.StaticKey{SecretEnv: "JWTAUTH_TEST_SECRET"}, "HS256", k.secret},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.JWT{Issuers: []config.Issuer{{Issuer: "https://idp.example", Audiences: []string{"api"},
				Algorithms: []string{tc.alg}, Keys: []config.StaticKey{tc.key}}}}
			v := newVerifier(t, cfg, dir, Options{})
			if _, err := v.Verify(context.Background(), sign(t, tc.alg, tc.sign, nil, claimsFor("https://idp.example", nil))); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestNewNoIssuers(t *testing.T) {
	k := keys(t)
	v := newVerifier(t, config.JWT{}, filepath.Join(t.TempDir(), "none"), Options{})
	_, err := v.Verify(context.Background(), sign(t, "RS256", k.rsa, nil, claimsFor(issRSA, nil)))
	wantReason(t, err, ReasonUnknownIssuer)
}
