package main

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/protobuf/proto"

	"github.com/modelguard/modelguard/examples"
	"github.com/modelguard/modelguard/policy/apikey"
)

// requestFiles are the files holding one serialized CheckRequest each.
type requestFiles struct{ jwt, apiKey string }

const (
	benchIssuer   = "https://bench.modelguard.local"
	benchAudience = "modelguard-bench"
)

// writeWorkloads writes the example policy, a fresh RSA key, an API key
// file, and the two CheckRequests into dir.
func writeWorkloads(dir string) (requestFiles, error) {
	var w requestFiles
	if err := os.CopyFS(dir, examples.Demo); err != nil {
		return w, err
	}
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return w, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		return w, err
	}
	if err := os.WriteFile(filepath.Join(dir, "jwt.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		return w, err
	}
	now := time.Now()
	token, err := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss": benchIssuer, "aud": benchAudience, "sub": "alice", "roles": []string{"chat-user"},
		"iat": now.Unix(), "exp": now.Add(24 * time.Hour).Unix(),
	}).SignedString(priv)
	if err != nil {
		return w, err
	}
	key, err := apikey.Mint("mg_bench_")
	if err != nil {
		return w, err
	}
	if err := os.WriteFile(filepath.Join(dir, "keys.yaml"), []byte("keys:\n"+apikey.Entry("alice-bench", "alice", []string{"chat-user"}, key)), 0o600); err != nil {
		return w, err
	}
	w.jwt = filepath.Join(dir, "check-jwt.bin")
	w.apiKey = filepath.Join(dir, "check-apikey.bin")
	for f, cred := range map[string]string{w.jwt: token, w.apiKey: key} {
		b, err := proto.Marshal(checkRequest("Bearer " + cred))
		if err != nil {
			return w, err
		}
		if err := os.WriteFile(f, b, 0o600); err != nil {
			return w, err
		}
	}
	return w, nil
}

// writeConfig writes modelguard's configuration serving addr.
func writeConfig(dir, addr string) error {
	cfg := `server:
  grpc_address: ` + addr + `
  admin_address: "off"
authentication:
  jwt:
    issuers:
      - issuer: ` + benchIssuer + `
        audiences: [` + benchAudience + `]
        algorithms: [RS256]
        keys:
          - pem_file: jwt.pub
  api_keys:
    file: keys.yaml
authorization:
  policy_dir: policy
  query: data.modelguard.authz.decision
models:
  - name: gpt-4o-mini
    operation: chat
    limits: {max_tokens: 4096, max_messages: 100, max_prompt_chars: 200000}
audit:
  output: audit.jsonl
log:
  level: warn
`
	return os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o644)
}

// checkRequest is a chat completion as Envoy sends it, with a 1 KiB body.
func checkRequest(authorization string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: addressOf("10.0.0.7", 51000)},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "12345678901234567890", Method: "POST", Path: "/v1/chat/completions", Host: "models.local", Scheme: "https",
			Protocol: "HTTP/1.1",
			Headers: map[string]string{
				":authority": "models.local", ":method": "POST", ":path": "/v1/chat/completions", ":scheme": "https",
				"authorization": authorization, "content-type": "application/json", "accept": "application/json",
				"user-agent": "OpenAI/Python 1.54.0", "x-request-id": "3f1b2c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d",
				"x-envoy-auth-partial-body": "false",
			},
			RawBody: chatBody(1024),
		}},
	}}
}

// chatBody is an OpenAI chat request of about n bytes, the same bytes as
// testkit.ChatBody. Not imported from there: this binary also serves the
// no-op server, and testkit would link its dependencies (15 MB) into it.
func chatBody(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"model":"gpt-4o-mini","temperature":0.7,"max_tokens":256,"messages":[` +
		`{"role":"system","content":"You are a helpful assistant that answers questions about the weather."},` +
		`{"role":"user","content":"`)
	const tail = `"}]}`
	for b.Len() < n-len(tail) {
		b.WriteString("What is the weather like in Paris today? ")
	}
	b.Truncate(n - len(tail))
	b.WriteString(tail)
	return b.Bytes()
}

func addressOf(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}
