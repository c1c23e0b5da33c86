package jwtauth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/modelguard/modelguard/policy/field"
)

const (
	// minRSABits: crypto/rsa still verifies with 1024-bit keys, which are
	// factorable by a well-funded attacker.
	minRSABits = 2048
	// minSecretBytes is the shortest HMAC secret accepted; HS384 and HS512
	// need their hash size (RFC 7518 3.2), as the algorithms table says.
	minSecretBytes = 32
)

type algFamily uint8

const (
	famHMAC algFamily = iota + 1
	famRSA
	famECDSA
	famEdDSA
)

// algInfo is what a signing algorithm demands of its key.
type algInfo struct {
	name      string
	family    algFamily
	curve     elliptic.Curve // famECDSA
	minSecret int            // famHMAC: the hash size in bytes
}

// algorithms is every JWS algorithm an issuer may allow, with what it
// demands of its key. "none" and anything else are not supported.
var algorithms = []algInfo{
	{name: "RS256", family: famRSA},
	{name: "RS384", family: famRSA},
	{name: "RS512", family: famRSA},
	{name: "PS256", family: famRSA},
	{name: "PS384", family: famRSA},
	{name: "PS512", family: famRSA},
	{name: "ES256", family: famECDSA, curve: elliptic.P256()},
	{name: "ES384", family: famECDSA, curve: elliptic.P384()},
	{name: "ES512", family: famECDSA, curve: elliptic.P521()},
	{name: "EdDSA", family: famEdDSA},
	{name: "HS256", family: famHMAC, minSecret: 32},
	{name: "HS384", family: famHMAC, minSecret: 48},
	{name: "HS512", family: famHMAC, minSecret: 64},
}

// supportedAlgs lists the algorithms an issuer may allow, for messages.
var supportedAlgs = func() string {
	names := make([]string, len(algorithms))
	for i, a := range algorithms {
		names[i] = a.name
	}
	return strings.Join(names, ", ")
}()

// lookupAlg returns the key requirements of a JWS algorithm.
func lookupAlg(name string) (algInfo, bool) {
	for _, a := range algorithms {
		if a.name == name {
			return a, true
		}
	}
	return algInfo{}, false
}

// publicAlgs returns the public-key algorithms among names (unknown names,
// "none" and HMAC dropped): what a JWKS can serve, since a symmetric key
// cannot come from a published document. With names nil, every one.
func publicAlgs(names []string) map[string]algInfo {
	algs := make(map[string]algInfo)
	for _, a := range algorithms {
		if a.family != famHMAC && (names == nil || slices.Contains(names, a.name)) {
			algs[a.name] = a
		}
	}
	return algs
}

// keyMismatch says why key cannot verify tokens of algorithm a, or nil when
// it can. This is what stops an HS256 token "signed" with an RSA public key:
// an RSA key is never an HMAC secret here.
func keyMismatch(a algInfo, key any) error {
	switch a.family {
	case famHMAC:
		k, ok := key.([]byte)
		if !ok {
			return fmt.Errorf("%s needs an HMAC secret, the key is %s", a.name, keyKind(key))
		}
		if len(k) < a.minSecret {
			return fmt.Errorf("%s needs an HMAC secret of at least %d bytes, the secret has %d", a.name, a.minSecret, len(k))
		}
	case famRSA:
		k, ok := key.(*rsa.PublicKey)
		if !ok {
			return fmt.Errorf("%s needs an RSA key, the key is %s", a.name, keyKind(key))
		}
		if k.N == nil || k.N.BitLen() < minRSABits {
			return fmt.Errorf("RSA key of %d bits is below the %d-bit minimum", bitLen(k), minRSABits)
		}
	case famECDSA:
		k, ok := key.(*ecdsa.PublicKey)
		if !ok {
			return fmt.Errorf("%s needs an ECDSA key, the key is %s", a.name, keyKind(key))
		}
		if k.Curve != a.curve {
			return fmt.Errorf("%s needs curve %s, the key is %s", a.name, a.curve.Params().Name, keyKind(key))
		}
	case famEdDSA:
		k, ok := key.(ed25519.PublicKey)
		if !ok || len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("%s needs an Ed25519 key, the key is %s", a.name, keyKind(key))
		}
	default:
		return fmt.Errorf("unsupported algorithm %q", a.name)
	}
	return nil
}

func bitLen(k *rsa.PublicKey) int {
	if k.N == nil {
		return 0
	}
	return k.N.BitLen()
}

// keyKind names a key for error messages.
func keyKind(key any) string {
	switch k := key.(type) {
	case []byte:
		return "an HMAC secret"
	case *rsa.PublicKey:
		return fmt.Sprintf("an RSA key of %d bits", bitLen(k))
	case *ecdsa.PublicKey:
		if k.Curve == nil {
			return "an ECDSA key"
		}
		return "an ECDSA key on " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "an Ed25519 key"
	default:
		return fmt.Sprintf("of unsupported type %T", key)
	}
}

// checkPublicKey refuses keys we never verify with, whatever the algorithm.
func checkPublicKey(key any) error {
	switch k := key.(type) {
	case *rsa.PublicKey:
		if bitLen(k) < minRSABits {
			return fmt.Errorf("RSA key of %d bits is below the %d-bit minimum", bitLen(k), minRSABits)
		}
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return errors.New("ECDSA key on an unsupported curve (want P-256, P-384 or P-521)")
		}
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return errors.New("malformed Ed25519 key")
		}
	default:
		return fmt.Errorf("unsupported key type %T (want RSA, ECDSA or Ed25519)", key)
	}
	return nil
}

// loadStaticKey reads and parses one key that Validate accepted. Errors are
// *field.Error naming its source field.
func loadStaticKey(sk StaticKey, baseDir string) (any, error) {
	data, err := sk.read(baseDir)
	if err == nil {
		var key any
		if sk.isSecret() {
			key, err = parseSecret(data)
		} else {
			key, err = parsePublicPEM(data)
		}
		if err == nil {
			return key, nil
		}
	}
	var path string
	if src := sk.sources(); len(src) == 1 {
		path = src[0]
	}
	return nil, &field.Error{Path: path, Err: err}
}

// parsePublicPEM accepts exactly one PEM block: a PKIX public key, a PKCS#1
// RSA public key or an X.509 certificate (its key is used; its validity
// dates are not checked: the configuration pins the key).
func parsePublicPEM(data []byte) (any, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("unexpected data after the first PEM block: give exactly one public key or certificate")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	default:
		if strings.Contains(block.Type, "PRIVATE KEY") {
			return nil, fmt.Errorf("PEM block %q is a private key: configure the public key", block.Type)
		}
		return nil, fmt.Errorf("unsupported PEM block %q (want PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE)", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", block.Type, err)
	}
	if err := checkPublicKey(key); err != nil {
		return nil, err
	}
	return key, nil
}

// parseSecret refuses short secrets and PEM text, which would make the
// public key a shared secret.
func parseSecret(data []byte) ([]byte, error) {
	if bytes.HasPrefix(bytes.TrimSpace(data), []byte("-----BEGIN")) {
		return nil, errors.New("the HMAC secret is PEM text: configure public keys with pem_file or pem_env")
	}
	if len(data) < minSecretBytes {
		return nil, fmt.Errorf("HMAC secret of %d bytes is shorter than the %d-byte minimum", len(data), minSecretBytes)
	}
	return bytes.Clone(data), nil
}
