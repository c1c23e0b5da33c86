package kongharness

import (
	"net/http"
	"slices"
)

// ACL is Kong's bundled acl plugin (kong/plugins/acl/handler.lua, 3.x) on
// the route, running after the plugin under test (priority 950). It
// decides on kong.ctx.shared.authenticated_groups ONLY when the request has
// no consumer, or no credential, or AlwaysUseAuthenticatedGroups is set;
// otherwise it reads the consumer's groups from Kong's database, where a
// consumer Kong does not know has none: an allow list then denies it and a
// deny list lets it through.
type ACL struct {
	Allow, Deny                  []string
	AlwaysUseAuthenticatedGroups bool
	// ConsumerGroups are the groups in Kong's database, by consumer id.
	ConsumerGroups map[string][]string
}

// aclDenial is the acl plugin's kong.response.error: status and JSON body.
type aclDenial struct {
	status int
	body   string
}

// access is the acl plugin's access phase for x; nil lets the request on.
func (a *ACL) access(x *Exchange) *aclDenial {
	x.mu.Lock()
	consumer, credential := x.Consumer, x.Credential
	var shared []string
	hasShared := false
	if v, ok := x.Shared["authenticated_groups"].([]any); ok && len(v) > 0 {
		hasShared = true
		for _, g := range v {
			if s, ok := g.(string); ok {
				shared = append(shared, s)
			}
		}
	}
	x.mu.Unlock()

	forbidden := &aclDenial{http.StatusForbidden, `{"message":"You cannot consume this service"}`}
	unauthorized := &aclDenial{http.StatusUnauthorized, `{"message":"Unauthorized"}`}
	var groups []string
	switch {
	case consumer == nil:
		if !hasShared {
			if credential != nil {
				return forbidden
			}
			return unauthorized
		}
		groups = shared
	case (credential == nil || a.AlwaysUseAuthenticatedGroups) && hasShared:
		groups = shared
	default:
		var ok bool
		groups, ok = a.ConsumerGroups[consumer.Id]
		if !ok && len(a.Deny) == 0 {
			if credential != nil {
				return forbidden
			}
			return unauthorized
		}
	}
	if a.blocked(groups) {
		return forbidden
	}
	return nil
}

func (a *ACL) blocked(groups []string) bool {
	matches := func(list []string) bool {
		return slices.ContainsFunc(groups, func(g string) bool { return slices.Contains(list, g) })
	}
	if len(a.Deny) > 0 {
		return matches(a.Deny)
	}
	return !matches(a.Allow)
}
