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
	"os"
	"path/filepath"
	"strings"

	"github.com/modelguard/modelguard/policy/config"
)

const (
	// minRSABits: crypto/rsa still verifies with 1024-bit keys, which are
	// factorable by a well-funded attacker.
	minRSABits = 2048
	// minSecretBytes matches config.MinSecretBytes; HS384/HS512 need their
	// hash size (RFC 7518 3.2), checked per algorithm by keyMismatch.
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

// supportedAlgs lists the algorithms an issuer may allow, for messages.
const supportedAlgs = "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA"

// lookupAlg returns the key requirements of a JWS algorithm. "none" and
// anything unknown are not supported.
func lookupAlg(name string) (algInfo, bool) {
	a := algInfo{name: name}
	switch name {
	case "HS256":
		a.family, a.minSecret = famHMAC, 32
	case "HS384":
		a.family, a.minSecret = famHMAC, 48
	case "HS512":
		a.family, a.minSecret = famHMAC, 64
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		a.family = famRSA
	case "ES256":
		a.family, a.curve = famECDSA, elliptic.P256()
	case "ES384":
		a.family, a.curve = famECDSA, elliptic.P384()
	case "ES512":
		a.family, a.curve = famECDSA, elliptic.P521()
	case "EdDSA":
		a.family = famEdDSA
	default:
		return algInfo{}, false
	}
	return a, true
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

// loadStaticKey reads and checks one configured key. Errors are
// *config.FieldError naming the source field under path (".../keys[j]").
func loadStaticKey(sk config.StaticKey, baseDir, path string) (any, error) {
	var n int
	for _, s := range []string{sk.PEMFile, sk.PEMEnv, sk.SecretFile, sk.SecretEnv} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return nil, &config.FieldError{Path: path, Err: errors.New("exactly one of pem_file, pem_env, secret_file, secret_env must be set")}
	}
	var (
		field string
		data  []byte
		err   error
	)
	switch {
	case sk.PEMFile != "":
		field = "pem_file"
		data, err = readKeyFile(sk.PEMFile, baseDir)
	case sk.PEMEnv != "":
		field = "pem_env"
		data, err = readKeyEnv(sk.PEMEnv)
	case sk.SecretFile != "":
		field = "secret_file"
		data, err = readKeyFile(sk.SecretFile, baseDir)
	default:
		field = "secret_env"
		data, err = readKeyEnv(sk.SecretEnv)
	}
	if err == nil {
		var key any
		if sk.PEMFile != "" || sk.PEMEnv != "" {
			key, err = parsePublicPEM(data)
		} else {
			key, err = parseSecret(data)
		}
		if err == nil {
			return key, nil
		}
	}
	return nil, &config.FieldError{Path: path + "." + field, Err: err}
}

func readKeyFile(name, baseDir string) ([]byte, error) {
	if !filepath.IsAbs(name) {
		name = filepath.Join(baseDir, name)
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	return data, nil
}

func readKeyEnv(name string) ([]byte, error) {
	v, ok := os.LookupEnv(name)
	if !ok || strings.TrimSpace(v) == "" {
		return nil, fmt.Errorf("environment variable %s is unset or empty", name)
	}
	return []byte(v), nil
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

// parseSecret drops one trailing newline (editors and echo add it; it is
// not part of the secret) and refuses short secrets and PEM text, which
// would make the public key a shared secret.
func parseSecret(data []byte) ([]byte, error) {
	if b, ok := bytes.CutSuffix(data, []byte("\n")); ok {
		data, _ = bytes.CutSuffix(b, []byte("\r"))
	}
	if bytes.HasPrefix(bytes.TrimSpace(data), []byte("-----BEGIN")) {
		return nil, errors.New("the HMAC secret is PEM text: configure public keys with pem_file or pem_env")
	}
	if len(data) < minSecretBytes {
		return nil, fmt.Errorf("HMAC secret of %d bytes is shorter than the %d-byte minimum", len(data), minSecretBytes)
	}
	return bytes.Clone(data), nil
}
