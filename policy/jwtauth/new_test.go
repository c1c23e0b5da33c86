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

	base := func() IssuerSettings {
		is := DefaultIssuer()
		is.Issuer, is.Audiences, is.Algorithms = "https://idp.example", []string{"api"}, []string{"RS256"}
		is.Keys = []StaticKey{{PEMFile: "rsa.pem"}}
		return is
	}
	with := func(f func(*IssuerSettings)) []IssuerSettings {
		is := base()
		f(&is)
		return []IssuerSettings{is}
	}
	key := func(sk StaticKey, algs ...string) []IssuerSettings {
		return with(func(is *IssuerSettings) {
			is.Keys = []StaticKey{sk}
			if len(algs) > 0 {
				is.Algorithms = algs
			}
		})
	}
	const p = "issuers[0]"
	tests := []struct {
		name     string
		issuers  []IssuerSettings
		wantPath string
		wantMsg  string
	}{
		{"RSA 1024 key", key(StaticKey{PEMFile: "rsa1024.pem"}), p + ".keys[0].pem_file", "2048"},
		{"RSA 1024 key, second key", with(func(is *IssuerSettings) {
			is.Keys = append(is.Keys, StaticKey{KID: "old", PEMFile: "rsa1024.pem"})
		}), p + ".keys[1].pem_file", "2048"},
		{"short HMAC secret", key(StaticKey{SecretFile: "short.secret"}, "HS256"), p + ".keys[0].secret_file", "need at least 32"},
		{"secret too short for HS512", key(StaticKey{SecretFile: "secret40"}, "HS512"), p + ".keys[0].secret_file", "need at least 64"},
		{"PEM text as HMAC secret", key(StaticKey{SecretFile: "pem.secret"}, "HS256"), p + ".keys[0].secret_file", "PEM"},
		{"secret env unset", key(StaticKey{SecretEnv: "JWTAUTH_TEST_UNSET_VAR"}, "HS256"), p + ".keys[0].secret_env", "is not set"},
		{"pem env empty", key(StaticKey{PEMEnv: "JWTAUTH_TEST_EMPTY"}), p + ".keys[0].pem_env", "is empty"},
		{"missing key file", key(StaticKey{PEMFile: "nope.pem"}), p + ".keys[0].pem_file", "no such file"},
		{"private key", key(StaticKey{PEMFile: "private.pem"}), p + ".keys[0].pem_file", "private key"},
		{"two PEM blocks", key(StaticKey{PEMFile: "two.pem"}), p + ".keys[0].pem_file", "exactly one"},
		{"not PEM", key(StaticKey{PEMFile: "garbage.pem"}), p + ".keys[0].pem_file", "no PEM block"},
		{"two sources", key(StaticKey{PEMFile: "rsa.pem", SecretFile: "secret40"}), p + ".keys[0]", "exactly one"},
		{"no source", key(StaticKey{KID: "x"}), p + ".keys[0]", "one of pem_file"},
		{"P-384 key for ES256", key(StaticKey{PEMFile: "ec384.pem"}, "ES256"), p + ".keys[0].pem_file", "P-256"},
		{"RSA key for EdDSA", key(StaticKey{PEMFile: "rsa.pem"}, "EdDSA"), p + ".keys[0].pem_file", "fits none"},
		{"HMAC secret for RS256", key(StaticKey{SecretFile: "secret40"}, "RS256"), p + ".keys[0].secret_file", "cannot verify"},
		{"alg none", with(func(is *IssuerSettings) { is.Algorithms = []string{"none"} }), p + ".algorithms[0]", "never accepted"},
		{"alg lower case", with(func(is *IssuerSettings) { is.Algorithms = []string{"RS256", "rs256"} }), p + ".algorithms[1]", "unsupported"},
		{"no algorithms", with(func(is *IssuerSettings) { is.Algorithms = nil }), p + ".algorithms", "required"},
		{"no audiences", with(func(is *IssuerSettings) { is.Audiences = nil }), p + ".audiences", "required"},
		{"empty audience", with(func(is *IssuerSettings) { is.Audiences = []string{"api", ""} }), p + ".audiences[1]", "empty"},
		{"no issuer", with(func(is *IssuerSettings) { is.Issuer = "" }), p + ".issuer", "required"},
		{"both jwks_url and keys", with(func(is *IssuerSettings) { is.JWKSURL = "https://idp.example/jwks" }), p + ".jwks_url", "exclusive"},
		{"neither jwks_url nor keys", with(func(is *IssuerSettings) { is.Keys = nil }), p, "required"},
		{"HMAC with JWKS", with(func(is *IssuerSettings) {
			is.Keys, is.JWKSURL, is.Algorithms = nil, "https://idp.example/jwks", []string{"HS256"}
		}), p + ".jwks_url", "static secret keys"},
		{"relative JWKS URL", with(func(is *IssuerSettings) { is.Keys, is.JWKSURL = nil, "/jwks" }), p + ".jwks_url", "absolute"},
		{"negative leeway", with(func(is *IssuerSettings) { is.Leeway = -time.Second }), p + ".leeway", "must be between 0s"},
		{"leeway too large", with(func(is *IssuerSettings) { is.Leeway = 6 * time.Minute }), p + ".leeway", "between 0s and 5m0s"},
		{"negative refresh interval", with(func(is *IssuerSettings) {
			is.Keys, is.JWKSURL, is.JWKSRefreshInterval = nil, "https://idp.example/jwks", -time.Second
		}), p + ".jwks_refresh_interval", "must be positive"},
		{"empty roles claim", with(func(is *IssuerSettings) { is.Claims.Roles = []string{"roles", ""} }), p + ".claims.roles[1]", "invalid claim name"},
		{"duplicate issuer", append(with(func(*IssuerSettings) {}), base()), "issuers[1].issuer", "duplicate issuer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := New(t.Context(), Settings{Issuers: tc.issuers}, dir, Options{})
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
		key  StaticKey
		alg  string
		sign any
	}{
		{"PKCS#1 RSA public key", StaticKey{PEMFile: "pkcs1.pem"}, "RS256", k.rsa},
		{"certificate", StaticKey{PEMFile: "cert.pem"}, "RS256", k.rsa},
		{"absolute path", StaticKey{PEMFile: abs}, "RS256", k.rsa},
		{"PEM from the environment", StaticKey{PEMEnv: "JWTAUTH_TEST_PEM"}, "RS256", k.rsa},
		{"secret from the environment, CRLF trimmed", StaticKey{SecretEnv: "JWTAUTH_TEST_SECRET"}, "HS256", k.secret},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Settings{Issuers: []IssuerSettings{{Issuer: "https://idp.example", Audiences: []string{"api"},
				Algorithms: []string{tc.alg}, Keys: []StaticKey{tc.key}}}}
			v := newVerifier(t, cfg, dir, Options{})
			if _, err := v.Verify(context.Background(), sign(t, tc.alg, tc.sign, nil, claimsFor("https://idp.example", nil))); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestNewNoIssuers(t *testing.T) {
	k := keys(t)
	v := newVerifier(t, Settings{}, filepath.Join(t.TempDir(), "none"), Options{})
	_, err := v.Verify(context.Background(), sign(t, "RS256", k.rsa, nil, claimsFor(issRSA, nil)))
	wantReason(t, err, ReasonUnknownIssuer)
}

func TestStaticKeyRead(t *testing.T) {
	dir := t.TempDir()
	batch := "-----BEGIN PUBLIC KEY-----\nnot parsed here\n-----END PUBLIC KEY-----\n"
	testkit.WriteFile(t, dir, "batch.pem", []byte(batch))
	testkit.WriteFile(t, dir, "empty.pem", []byte(nil))
	testkit.WriteFile(t, dir, "hs384.secret", []byte(strings.Repeat("s", 47)+"\n\n"))
	testkit.WriteFile(t, dir, "crlf.secret", []byte(strings.Repeat("s", 32)+"\r\n"))
	testkit.WriteFile(t, dir, "hs512.secret", []byte(strings.Repeat("s", 64)))
	t.Setenv("MODELGUARD_TEST_SECRET", "env-secret\n")
	t.Setenv("MODELGUARD_TEST_PEM", "pem\n")
	for _, tt := range []struct {
		name    string
		key     StaticKey
		want    string
		wantErr string
	}{
		{"secret file: one newline trimmed", StaticKey{SecretFile: "hs384.secret"}, strings.Repeat("s", 47) + "\n", ""},
		{"secret file: CRLF trimmed", StaticKey{SecretFile: "crlf.secret"}, strings.Repeat("s", 32), ""},
		{"secret file: no newline", StaticKey{SecretFile: "hs512.secret"}, strings.Repeat("s", 64), ""},
		{"secret env", StaticKey{SecretEnv: "MODELGUARD_TEST_SECRET"}, "env-secret", ""},
		{"pem file kept whole", StaticKey{PEMFile: "batch.pem"}, batch, ""},
		{"pem env kept whole", StaticKey{PEMEnv: "MODELGUARD_TEST_PEM"}, "pem\n", ""},
		{"absolute path", StaticKey{PEMFile: filepath.Join(dir, "batch.pem")}, batch, ""},
		{"no source", StaticKey{KID: "k"}, "", "exactly one of"},
		{"two sources", StaticKey{PEMFile: "batch.pem", SecretEnv: "MODELGUARD_TEST_SECRET"}, "", "exactly one of"},
		{"two files", StaticKey{PEMFile: "batch.pem", SecretFile: "hs512.secret"}, "", "exactly one of"},
		{"missing file", StaticKey{SecretFile: "nope"}, "", "no such file"},
		{"empty file", StaticKey{PEMFile: "empty.pem"}, "", "is empty"},
		{"unset env", StaticKey{SecretEnv: "MODELGUARD_TEST_UNSET"}, "", "MODELGUARD_TEST_UNSET is not set"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.key.read(dir)
			switch {
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || got != nil {
					t.Errorf("read = %q, %v; want error with %q", got, err, tt.wantErr)
				}
			case err != nil:
				t.Errorf("read: %v", err)
			case string(got) != tt.want:
				t.Errorf("read = %q, want %q", got, tt.want)
			}
		})
	}
}
