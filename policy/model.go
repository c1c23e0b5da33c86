package policy

import (
	"net/http"
	"strings"
)

// listing recognises the model APIs' read-only routes (model lists and
// metadata), which carry no body to check: GET /v1/models[/{name}],
// GET /v2/models/{name}[/...] and GET /v2. Model invocations are matched
// by policy/models instead.
func listing(req *Request) Model {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return Model{}
	}
	p := req.Path
	for _, prefix := range []string{"/v1/models/", "/v2/models/"} {
		if rest, ok := strings.CutPrefix(p, prefix); ok && rest != "" {
			name, _, _ := strings.Cut(rest, "/")
			name, _, _ = strings.Cut(name, ":")
			return Model{Name: name, Operation: "list"}
		}
	}
	switch p {
	case "/v1/models", "/v2/models", "/v2":
		return Model{Operation: "list"}
	}
	return Model{}
}
