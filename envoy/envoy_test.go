// Package envoy_test validates the shipped gateway configurations offline:
// Envoy cannot be installed here, so envoy.yaml is checked with
// go-control-plane's protos and validators, plus a lint of the rules Envoy
// enforces only in C++ and of the fail-closed settings modelguard relies on.
package envoy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/modelguard/modelguard/httpauthz"
	"github.com/modelguard/modelguard/test/envoyharness"

	// Every typed_config type in envoy.yaml must be linked in, or protojson
	// cannot resolve its Any. Those not named above:
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/formatter/req_without_query/v3"
)

const (
	envoyFile     = "envoy.yaml"
	envoyHTTPFile = "envoy-http.yaml"
	healthPath    = "/healthz"
	upstreamHTTP  = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

// loadBootstrap parses an Envoy bootstrap as Envoy would, short of the C++
// checks: strict protojson (unknown fields fail), then the protoc-gen-validate
// rules of the bootstrap and of every Any payload inside it.
func loadBootstrap(data []byte) (*bootstrapv3.Bootstrap, error) {
	js, err := yamlToJSON(data)
	if err != nil {
		return nil, err
	}
	var b bootstrapv3.Bootstrap
	// DiscardUnknown false (the zero value, spelled out): a typo'd field is an
	// error, as in Envoy.
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, &b); err != nil {
		return nil, fmt.Errorf("parse bootstrap: %w", err)
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("validate bootstrap: %w", err)
	}
	// ValidateAll stops at google.protobuf.Any: open each one.
	if err := walk(b.ProtoReflect(), "", validateAny); err != nil {
		return nil, fmt.Errorf("validate typed configs: %w", err)
	}
	return &b, nil
}

// yamlToJSON converts one YAML document to JSON for protojson.
func yamlToJSON(data []byte) ([]byte, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("yaml: want exactly one document")
	}
	doc, err := stringKeys(doc, "")
	if err != nil {
		return nil, err
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("yaml to json: %w", err)
	}
	return js, nil
}

// stringKeys turns the map[any]any that yaml produces for non-string keys
// (1: x, true: y) into map[string]any, which encoding/json requires.
func stringKeys(v any, path string) (any, error) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			c, err := stringKeys(e, path+"."+k)
			if err != nil {
				return nil, err
			}
			v[k] = c
		}
		return v, nil
	case map[any]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			switch k.(type) {
			case string, int, int64, uint64, float64, bool:
			default:
				return nil, fmt.Errorf("yaml %s: unsupported key %v (%T)", path, k, k)
			}
			ks := fmt.Sprint(k)
			if _, dup := out[ks]; dup {
				return nil, fmt.Errorf("yaml %s: key %q appears twice", path, ks)
			}
			c, err := stringKeys(e, path+"."+ks)
			if err != nil {
				return nil, err
			}
			out[ks] = c
		}
		return out, nil
	case []any:
		for i, e := range v {
			c, err := stringKeys(e, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			v[i] = c
		}
		return v, nil
	default:
		return v, nil
	}
}

// walk calls fn on m and on every message below it (map values and list
// elements included); fn decides whether to open Any payloads.
func walk(m protoreflect.Message, path string, fn func(string, protoreflect.Message) error) error {
	if err := fn(path, m); err != nil {
		return err
	}
	var errs []error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := string(fd.Name())
		if path != "" {
			p = path + "." + p
		}
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(k protoreflect.MapKey, e protoreflect.Value) bool {
					errs = append(errs, walk(e.Message(), fmt.Sprintf("%s[%s]", p, k.String()), fn))
					return true
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				l := v.List()
				for i := range l.Len() {
					errs = append(errs, walk(l.Get(i).Message(), fmt.Sprintf("%s[%d]", p, i), fn))
				}
			}
		case fd.Message() != nil:
			errs = append(errs, walk(v.Message(), p, fn))
		}
		return true
	})
	return errors.Join(errs...)
}

// validateAny, for a google.protobuf.Any, decodes the payload, runs its
// validation rules and walks into it (payloads hold further Anys).
func validateAny(path string, m protoreflect.Message) error {
	a, ok := m.Interface().(*anypb.Any)
	if !ok {
		return nil
	}
	payload, err := a.UnmarshalNew()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if v, ok := payload.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			return fmt.Errorf("%s (%s): %w", path, a.GetTypeUrl(), err)
		}
	}
	return walk(payload.ProtoReflect(), fmt.Sprintf("%s(%s)", path, payload.ProtoReflect().Descriptor().Name()), validateAny)
}

// lint checks what Envoy checks only in C++ and the settings modelguard's
// fail-closed contract depends on. It expects a bootstrap that passed
// loadBootstrap.
func lint(b *bootstrapv3.Bootstrap) error {
	clusters := make(map[string]*clusterv3.Cluster)
	for _, c := range b.GetStaticResources().GetClusters() {
		clusters[c.GetName()] = c
	}
	var errs []error
	hcms := 0
	for i, l := range b.GetStaticResources().GetListeners() {
		for j, fc := range l.GetFilterChains() {
			found := false
			for k, f := range fc.GetFilters() {
				if !f.GetTypedConfig().MessageIs(&hcmv3.HttpConnectionManager{}) {
					continue
				}
				var hcm hcmv3.HttpConnectionManager
				if err := f.GetTypedConfig().UnmarshalTo(&hcm); err != nil {
					return fmt.Errorf("listener %q: %w", l.GetName(), err)
				}
				found = true
				hcms++
				path := fmt.Sprintf("static_resources.listeners[%d].filter_chains[%d].filters[%d]", i, j, k)
				errs = append(errs, lintHCM(path, &hcm, clusters))
			}
			if !found {
				errs = append(errs, fmt.Errorf("listener %q filter chain %d has no http_connection_manager: its traffic would bypass ext_authz", l.GetName(), j))
			}
		}
	}
	if hcms == 0 {
		errs = append(errs, errors.New("no http_connection_manager in static listeners"))
	}
	return errors.Join(errs...)
}

func lintHCM(path string, hcm *hcmv3.HttpConnectionManager, clusters map[string]*clusterv3.Cluster) error {
	var errs []error
	filters := hcm.GetHttpFilters()
	var authzName string
	var authz *extauthzv3.ExtAuthz
	for i, f := range filters {
		tc := f.GetTypedConfig()
		if tc == nil {
			errs = append(errs, fmt.Errorf("%s.http_filters[%d] %q: want an inline typed_config", path, i, f.GetName()))
			continue
		}
		if tc.MessageIs(&routerv3.Router{}) && i != len(filters)-1 {
			errs = append(errs, fmt.Errorf("%s.http_filters[%d] %q: the router must be the last http filter", path, i, f.GetName()))
		}
		if !tc.MessageIs(&extauthzv3.ExtAuthz{}) {
			continue
		}
		if authz != nil {
			errs = append(errs, fmt.Errorf("%s.http_filters[%d] %q: want exactly one ext_authz filter", path, i, f.GetName()))
			continue
		}
		authz = new(extauthzv3.ExtAuthz)
		if err := tc.UnmarshalTo(authz); err != nil {
			return fmt.Errorf("%s.http_filters[%d]: %w", path, i, err)
		}
		authzName = f.GetName()
		if f.GetDisabled() {
			errs = append(errs, fmt.Errorf("%s.http_filters[%d] %q: ext_authz must not be disabled by default", path, i, f.GetName()))
		}
	}
	if n := len(filters); n == 0 || !filters[n-1].GetTypedConfig().MessageIs(&routerv3.Router{}) {
		errs = append(errs, fmt.Errorf("%s: the last http filter must be the router", path))
	}
	if authz == nil {
		return errors.Join(append(errs, fmt.Errorf("%s: no ext_authz http filter", path))...)
	}
	errs = append(errs, lintExtAuthz(path, authz, clusters))

	rc := hcm.GetRouteConfig()
	if rc == nil {
		return errors.Join(append(errs, fmt.Errorf("%s: want an inline route_config to lint", path))...)
	}
	var health *routev3.Route
	for i, vh := range rc.GetVirtualHosts() {
		for j, r := range vh.GetRoutes() {
			rpath := fmt.Sprintf("%s.route_config.virtual_hosts[%d].routes[%d]", path, i, j)
			if r.GetMatch().GetPath() == healthPath {
				health = r
				if r.GetDirectResponse() == nil {
					errs = append(errs, fmt.Errorf("%s: the %s route skips ext_authz, so it must be a direct_response, not forwarded", rpath, healthPath))
				}
			}
			errs = append(errs, lintRouteClusters(rpath, r.GetRoute(), clusters))
		}
	}
	if health == nil {
		return errors.Join(append(errs, fmt.Errorf("%s: no route matching path %s", path, healthPath))...)
	}

	// Any typed_per_filter_config anywhere in the route config (route config,
	// virtual host, route, weighted cluster) can switch ext_authz off: only
	// the health route may.
	// The callback collects errors rather than returning them so that the walk
	// goes on below a bad virtual host.
	healthDisabled := false
	walk(rc.ProtoReflect(), path+".route_config", func(p string, m protoreflect.Message) error {
		fd := m.Descriptor().Fields().ByName("typed_per_filter_config")
		if fd == nil || !fd.IsMap() {
			return nil
		}
		m.Get(fd).Map().Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
			a, _ := v.Message().Interface().(*anypb.Any)
			disabled, isAuthz, err := authzPerFilter(a)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.typed_per_filter_config[%s]: %w", p, k.String(), err))
				return true
			}
			if isAuthz && k.String() != authzName {
				errs = append(errs, fmt.Errorf("%s.typed_per_filter_config[%s]: ext_authz settings must be keyed by the filter name %q", p, k.String(), authzName))
			}
			if k.String() != authzName || !disabled {
				return true
			}
			if m.Interface() == health {
				healthDisabled = true
				return true
			}
			errs = append(errs, fmt.Errorf("%s.typed_per_filter_config[%s]: disables ext_authz; only the %s route may", p, k.String(), healthPath))
			return true
		})
		return nil
	})
	if !healthDisabled {
		errs = append(errs, fmt.Errorf("%s: the %s route must disable ext_authz (ExtAuthzPerRoute{disabled: true} under %q)", path, healthPath, authzName))
	}
	return errors.Join(errs...)
}

// authzPerFilter reports whether a per-filter config disables a filter, and
// whether it is ext_authz's own type. Envoy honours both
// ExtAuthzPerRoute{disabled} and the generic FilterConfig{disabled}.
func authzPerFilter(a *anypb.Any) (disabled, isAuthz bool, err error) {
	if a.MessageIs(&routev3.FilterConfig{}) {
		var fc routev3.FilterConfig
		if err := a.UnmarshalTo(&fc); err != nil {
			return false, false, err
		}
		if fc.GetDisabled() {
			return true, false, nil
		}
		if fc.GetConfig() == nil {
			return false, false, nil
		}
		a = fc.GetConfig()
	}
	if !a.MessageIs(&extauthzv3.ExtAuthzPerRoute{}) {
		return false, false, nil
	}
	var pr extauthzv3.ExtAuthzPerRoute
	if err := a.UnmarshalTo(&pr); err != nil {
		return false, true, err
	}
	return pr.GetDisabled(), true, nil
}

func lintExtAuthz(path string, a *extauthzv3.ExtAuthz, clusters map[string]*clusterv3.Cluster) error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s ext_authz: %s", path, fmt.Sprintf(format, args...)))
	}
	if v := a.GetTransportApiVersion(); v.String() != "V3" {
		bad("transport_api_version is %s, want V3", v)
	}
	if a.GetFailureModeAllow() {
		bad("failure_mode_allow must be false (fail closed)")
	}
	if c := a.GetStatusOnError().GetCode(); c != typev3.StatusCode_ServiceUnavailable {
		bad("status_on_error is %d, want 503", int32(c))
	}
	// Without mutation rules Envoy applies any header the server sets,
	// :path and host included, and checks no value.
	if !a.GetValidateMutations() {
		bad("validate_mutations must be true: invalid header values from the server would pass unchecked")
	}
	if r := a.GetDecoderHeaderMutationRules(); r == nil || !r.GetDisallowSystem().GetValue() || !r.GetDisallowIsError().GetValue() ||
		r.GetAllowAllRouting().GetValue() || r.GetAllowEnvoy().GetValue() || r.GetAllowExpression() != nil {
		bad("decoder_header_mutation_rules must forbid system, routing and x-envoy headers (disallow_system, disallow_is_error; no allow_*)")
	}
	// Partial enforcement is fail-open by another name.
	if a.GetShadowMode() {
		bad("shadow_mode must be false: decisions would not be enforced")
	}
	if a.GetFilterEnabled() != nil || a.GetFilterEnabledMetadata() != nil {
		bad("filter_enabled / filter_enabled_metadata must be unset: some requests would skip the check")
	}
	if a.GetHttpService() != nil {
		lintHTTPService(bad, a, clusters)
		return errors.Join(errs...)
	}
	if !a.GetWithRequestBody().GetPackAsBytes() {
		bad("with_request_body.pack_as_bytes must be true (JSON bodies as raw bytes)")
	}
	g := a.GetGrpcService()
	if g == nil {
		bad("want a grpc_service")
		return errors.Join(errs...)
	}
	name := g.GetEnvoyGrpc().GetClusterName()
	if name == "" {
		bad("grpc_service must use envoy_grpc with a cluster_name")
		return errors.Join(errs...)
	}
	c, ok := clusters[name]
	if !ok {
		bad("grpc_service cluster %q is not defined", name)
		return errors.Join(errs...)
	}
	if !speaksHTTP2(c) {
		bad("grpc_service cluster %q must set HTTP/2 (%s explicit_http_config.http2_protocol_options)", name, upstreamHTTP)
	}
	return errors.Join(errs...)
}

// lintHTTPService checks the HTTP mode (envoy-http.yaml) against what
// modelguard's HTTP authorization service needs (httpauthz).
func lintHTTPService(bad func(string, ...any), a *extauthzv3.ExtAuthz, clusters map[string]*clusterv3.Cluster) {
	h := a.GetHttpService()
	if name := h.GetServerUri().GetCluster(); clusters[name] == nil {
		bad("http_service cluster %q is not defined", name)
	}
	if p := h.GetPathPrefix(); p != httpauthz.EnvoyPrefix {
		bad("http_service.path_prefix is %q, want %q (modelguard serves Envoy's HTTP service there)", p, httpauthz.EnvoyPrefix)
	}
	if wb := a.GetWithRequestBody(); wb == nil || wb.GetPackAsBytes() {
		bad("with_request_body must be set with pack_as_bytes false: Envoy's HTTP client sends no body packed as bytes")
	}
	for _, need := range []string{"x-envoy-auth-partial-body", "content-type", "x-api-key", "x_modelguard_subject", "x_api_key"} {
		if !matchesAny(h.GetAuthorizationRequest().GetAllowedHeaders().GetPatterns(), need) {
			bad("http_service.authorization_request.allowed_headers must let %s through", need)
		}
	}
	// A header modelguard sets that Envoy does not copy upstream leaves the
	// client's forged copy in place.
	for _, need := range []string{"x-modelguard-subject", "x-modelguard-roles", "x-modelguard-auth-method", "x-modelguard-key-id", "x-modelguard-decision-id"} {
		if !matchesAny(h.GetAuthorizationResponse().GetAllowedUpstreamHeaders().GetPatterns(), need) {
			bad("http_service.authorization_response.allowed_upstream_headers must match %s", need)
		}
	}
}

// matchesAny reports whether a header name matches one of the patterns, for
// the exact and prefix matchers the shipped files use.
func matchesAny(patterns []*matcherv3.StringMatcher, name string) bool {
	for _, p := range patterns {
		if p.GetExact() == name || p.GetPrefix() != "" && strings.HasPrefix(name, p.GetPrefix()) {
			return true
		}
	}
	return false
}

func speaksHTTP2(c *clusterv3.Cluster) bool {
	a, ok := c.GetTypedExtensionProtocolOptions()[upstreamHTTP]
	if !ok {
		return false
	}
	var o upstreamhttpv3.HttpProtocolOptions
	if err := a.UnmarshalTo(&o); err != nil {
		return false
	}
	return o.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil
}

func lintRouteClusters(path string, ra *routev3.RouteAction, clusters map[string]*clusterv3.Cluster) error {
	if ra == nil {
		return nil
	}
	var errs []error
	ref := func(what, name string) {
		if _, ok := clusters[name]; !ok {
			errs = append(errs, fmt.Errorf("%s: %s references unknown cluster %q", path, what, name))
		}
	}
	switch {
	case ra.GetCluster() != "":
		ref("route.cluster", ra.GetCluster())
	case ra.GetWeightedClusters() != nil:
		for _, wc := range ra.GetWeightedClusters().GetClusters() {
			ref("route.weighted_clusters", wc.GetName())
		}
	default:
		errs = append(errs, fmt.Errorf("%s: the lint only follows route.cluster and weighted_clusters", path))
	}
	for _, m := range ra.GetRequestMirrorPolicies() {
		ref("request_mirror_policies", m.GetCluster())
	}
	return errors.Join(errs...)
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func loadAndLint(data []byte) (*bootstrapv3.Bootstrap, error) {
	b, err := loadBootstrap(data)
	if err != nil {
		return nil, err
	}
	return b, lint(b)
}

// shippedExtAuthz returns the ext_authz filter config of envoy.yaml.
func shippedExtAuthz(t *testing.T, b *bootstrapv3.Bootstrap) (*hcmv3.HttpConnectionManager, *extauthzv3.ExtAuthz) {
	t.Helper()
	var hcm hcmv3.HttpConnectionManager
	if err := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	for _, f := range hcm.GetHttpFilters() {
		var a extauthzv3.ExtAuthz
		if f.GetTypedConfig().UnmarshalTo(&a) == nil {
			return &hcm, &a
		}
	}
	t.Fatal("no ext_authz filter")
	return nil, nil
}

func TestEnvoyConfigValid(t *testing.T) {
	for _, file := range []string{envoyFile, envoyHTTPFile} {
		if _, err := loadAndLint(readFile(t, file)); err != nil {
			t.Fatalf("%s:\n%v", file, err)
		}
	}
}

// TestValidatorCatchesHTTPMode feeds broken copies of envoy-http.yaml to
// the validator: each must be refused, for the reason given.
func TestValidatorCatchesHTTPMode(t *testing.T) {
	orig := string(readFile(t, envoyHTTPFile))
	for _, tt := range []struct {
		name, old, new, wantErr string
	}{
		{"pack_as_bytes", "pack_as_bytes: false", "pack_as_bytes: true", "pack_as_bytes false"},
		{"no body marker", "- exact: x-envoy-auth-partial-body\n", "- exact: x-envoy-partial\n", "let x-envoy-auth-partial-body through"},
		{"identity headers not copied", "- prefix: x-modelguard-\n", "- prefix: x-modelguard-s\n", "must match x-modelguard-roles"},
		{"path prefix", "path_prefix: /envoy", "path_prefix: /authz", `want "/envoy"`},
		{"missing cluster", "cluster: modelguard_http\n", "cluster: modelguard\n", `cluster "modelguard" is not defined`},
		{"failure_mode_allow true", "failure_mode_allow: false", "failure_mode_allow: true", "failure_mode_allow must be false"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if n := strings.Count(orig, tt.old); n != 1 {
				t.Fatalf("%q occurs %d times in %s, want 1", tt.old, n, envoyHTTPFile)
			}
			_, err := loadAndLint([]byte(strings.Replace(orig, tt.old, tt.new, 1)))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}

// TestEnvoyConfigValues pins the settings the docs and the Istio files
// promise, beyond what the lint requires of any config.
func TestEnvoyConfigValues(t *testing.T) {
	b, err := loadBootstrap(readFile(t, envoyFile))
	if err != nil {
		t.Fatal(err)
	}
	hcm, a := shippedExtAuthz(t, b)

	sa := b.GetAdmin().GetAddress().GetSocketAddress()
	if sa.GetAddress() != "127.0.0.1" || sa.GetPortValue() != 9901 {
		t.Errorf("admin on %s:%d, want 127.0.0.1:9901", sa.GetAddress(), sa.GetPortValue())
	}
	la := b.GetStaticResources().GetListeners()[0].GetAddress().GetSocketAddress()
	if la.GetAddress() != "0.0.0.0" || la.GetPortValue() != 8080 {
		t.Errorf("listener on %s:%d, want 0.0.0.0:8080", la.GetAddress(), la.GetPortValue())
	}
	wantEndpoints := map[string]string{"modelguard": "127.0.0.1:9191", "model": "127.0.0.1:8000"}
	for _, c := range b.GetStaticResources().GetClusters() {
		ep := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		got := fmt.Sprintf("%s:%d", ep.GetAddress(), ep.GetPortValue())
		if want, ok := wantEndpoints[c.GetName()]; ok && got != want {
			t.Errorf("cluster %q at %s, want %s", c.GetName(), got, want)
		}
		delete(wantEndpoints, c.GetName())
	}
	if len(wantEndpoints) != 0 {
		t.Errorf("missing clusters %v", wantEndpoints)
	}

	if got := a.GetGrpcService().GetTimeout().AsDuration().String(); got != "250ms" {
		t.Errorf("grpc_service.timeout %s, want 250ms", got)
	}
	if wb := a.GetWithRequestBody(); wb.GetMaxRequestBytes() != 1<<20 || !wb.GetAllowPartialMessage() {
		t.Errorf("with_request_body %v, want max_request_bytes 1048576 and allow_partial_message", wb)
	}
	if !a.GetIncludePeerCertificate() {
		t.Error("include_peer_certificate should be true")
	}

	// The access log must join Envoy's lines to modelguard's audit records.
	var formats []string
	for _, al := range hcm.GetAccessLog() {
		var f filev3.FileAccessLog
		if al.GetTypedConfig().UnmarshalTo(&f) == nil {
			formats = append(formats, f.GetLogFormat().GetTextFormatSource().GetInlineString())
		}
	}
	for _, want := range []string{
		"%DYNAMIC_METADATA(envoy.filters.http.ext_authz:decision_id)%",
		"%DYNAMIC_METADATA(envoy.filters.http.ext_authz:reason)%",
		"%RESPONSE_CODE%", "%RESPONSE_FLAGS%", "%REQ(X-REQUEST-ID)%",
	} {
		if !strings.Contains(strings.Join(formats, "\n"), want) {
			t.Errorf("access log format lacks %s", want)
		}
	}
}

// TestValidatorCatches feeds broken copies of envoy.yaml to the validator:
// each must be refused, for the reason given.
func TestValidatorCatches(t *testing.T) {
	orig := string(readFile(t, envoyFile))
	hcm := []any{"static_resources", "listeners", 0, "filter_chains", 0, "filters", 0, "typed_config"}
	routes := append(append([]any{}, hcm...), "route_config", "virtual_hosts", 0, "routes")

	tests := []struct {
		name    string
		edit    func(t *testing.T, y string) string
		wantErr string
	}{
		{"typo inside a typed_config", replace("failure_mode_allow: false", "failure_mode_alow: false"), `unknown field "failure_mode_alow"`},
		{"typo at top level", replace("static_resources:", "static_resource:"), `unknown field "static_resource"`},
		{"unknown @type", replace("ext_authz.v3.ExtAuthz\n", "ext_authz.v3.ExtAuth\n"), "ExtAuth"},
		{"wrong value type", replace("timeout: 0.25s", "timeout: quarter"), `invalid google.protobuf.Duration value "quarter"`},
		{"duplicate key", replace("failure_mode_allow: false", "failure_mode_allow: false\n              failure_mode_allow: true"), "already defined"},
		{"two documents", func(t *testing.T, y string) string { return y + "\n---\nadmin: {}\n" }, "exactly one document"},
		{"rule of the bootstrap", replace("port_value: 8080", "port_value: 80800"), "PortValue"},
		{"rule inside an Any", replace("max_request_bytes: 1048576", "max_request_bytes: 0"), "MaxRequestBytes"},
		{"route to a missing cluster", replace("cluster: model\n", "cluster: modle\n"), `unknown cluster "modle"`},
		{"ext_authz to a missing cluster", replace("cluster_name: modelguard }", "cluster_name: modelgaurd }"), `cluster "modelgaurd" is not defined`},
		{"router not last", mutate(func(t *testing.T, doc any) {
			m := dig(t, doc, hcm...).(map[string]any)
			f := m["http_filters"].([]any)
			m["http_filters"] = []any{f[1], f[0]}
		}), "router must be the last"},
		{"no ext_authz filter", mutate(func(t *testing.T, doc any) {
			m := dig(t, doc, hcm...).(map[string]any)
			m["http_filters"] = m["http_filters"].([]any)[1:]
		}), "no ext_authz"},
		{"failure_mode_allow true", replace("failure_mode_allow: false", "failure_mode_allow: true"), "failure_mode_allow must be false"},
		{"transport V2", replace("transport_api_version: V3", "transport_api_version: V2"), "want V3"},
		{"status_on_error 403", replace("code: ServiceUnavailable", "code: Forbidden"), "status_on_error is 403"},
		{"pack_as_bytes false", replace("pack_as_bytes: true", "pack_as_bytes: false"), "pack_as_bytes must be true"},
		{"no mutation validation", replace("validate_mutations: true", "validate_mutations: false"), "validate_mutations must be true"},
		{"system headers mutable", replace("disallow_system: true", "disallow_system: false"), "decoder_header_mutation_rules must forbid"},
		{"routing headers mutable", replace("disallow_is_error: true", "disallow_is_error: true\n                allow_all_routing: true"), "decoder_header_mutation_rules must forbid"},
		{"shadow mode", replace("failure_mode_allow: false", "failure_mode_allow: false\n              shadow_mode: true"), "shadow_mode"},
		{"HTTP/1 to modelguard", mutate(func(t *testing.T, doc any) {
			delete(dig(t, doc, "static_resources", "clusters", 0).(map[string]any), "typed_extension_protocol_options")
		}), "must set HTTP/2"},
		{"health route checks ext_authz", mutate(func(t *testing.T, doc any) {
			delete(dig(t, doc, append(routes, 0)...).(map[string]any), "typed_per_filter_config")
		}), "route must disable ext_authz"},
		{"health route forwarded", mutate(func(t *testing.T, doc any) {
			r := dig(t, doc, append(routes, 0)...).(map[string]any)
			delete(r, "direct_response")
			r["route"] = map[string]any{"cluster": "model"}
		}), "must be a direct_response"},
		{"model route disables ext_authz", mutate(func(t *testing.T, doc any) {
			health := dig(t, doc, append(routes, 0)...).(map[string]any)
			dig(t, doc, append(routes, 1)...).(map[string]any)["typed_per_filter_config"] = health["typed_per_filter_config"]
		}), "only the /healthz route may"},
		{"virtual host disables ext_authz via FilterConfig", mutate(func(t *testing.T, doc any) {
			dig(t, doc, append(hcm, "route_config", "virtual_hosts", 0)...).(map[string]any)["typed_per_filter_config"] = map[string]any{
				"envoy.filters.http.ext_authz": map[string]any{"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": true},
			}
		}), "only the /healthz route may"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadAndLint([]byte(tt.edit(t, orig)))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error does not mention %q:\n%v", tt.wantErr, err)
			}
		})
	}
}

// replace edits the YAML text; the old text must occur exactly once, so a
// case cannot pass by editing nothing.
func replace(old, new string) func(*testing.T, string) string {
	return func(t *testing.T, y string) string {
		t.Helper()
		if n := strings.Count(y, old); n != 1 {
			t.Fatalf("%q occurs %d times in %s, want 1", old, n, envoyFile)
		}
		return strings.Replace(y, old, new, 1)
	}
}

// mutate edits the decoded YAML tree and re-encodes it, for changes that
// text replacement would make fragile (reordering, deleting blocks).
func mutate(edit func(*testing.T, any)) func(*testing.T, string) string {
	return func(t *testing.T, y string) string {
		t.Helper()
		var doc any
		if err := yaml.Unmarshal([]byte(y), &doc); err != nil {
			t.Fatal(err)
		}
		edit(t, doc)
		out, err := yaml.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
}

// dig follows map keys (string) and list indexes (int) through a decoded
// YAML tree.
func dig(t *testing.T, v any, path ...any) any {
	t.Helper()
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok || m[k] == nil {
				t.Fatalf("no key %q in %v", k, path)
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				t.Fatalf("no index %d in %v", k, path)
			}
			v = l[k]
		}
	}
	return v
}

func TestYAMLToJSONKeys(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{in: "a: {1: x, true: y, 2.5: z}\nb: [ {3: w} ]", want: `{"a":{"1":"x","2.5":"z","true":"y"},"b":[{"3":"w"}]}`},
		{in: "a: {~: x}", wantErr: "unsupported key"},
		{in: "a: {1: x, 1.0: y}", wantErr: "appears twice"},
		{in: "a: {1: x, \"1\": y}", wantErr: "already defined"},
		{in: "a: [", wantErr: "yaml"},
		{in: "", wantErr: "EOF"},
	}
	for _, tt := range tests {
		got, err := yamlToJSON([]byte(tt.in))
		switch {
		case tt.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("yamlToJSON(%q) error %v, want %q", tt.in, err, tt.wantErr)
			}
		case err != nil:
			t.Errorf("yamlToJSON(%q): %v", tt.in, err)
		case string(got) != tt.want:
			t.Errorf("yamlToJSON(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// TestHarnessMatchesEnvoyYAML: the end-to-end tests run test/envoyharness
// with ShippedFilter, ShippedHCM and ShippedRoutes; they must be what
// envoy.yaml configures, or the tests exercise another Envoy.
func TestHarnessMatchesEnvoyYAML(t *testing.T) {
	b, err := loadBootstrap(readFile(t, envoyFile))
	if err != nil {
		t.Fatal(err)
	}
	hcm, a := shippedExtAuthz(t, b)
	f, cm := envoyharness.ShippedFilter, envoyharness.ShippedHCM
	wb := a.GetWithRequestBody()
	rules := a.GetDecoderHeaderMutationRules()
	got := envoyharness.Filter{
		Timeout: a.GetGrpcService().GetTimeout().AsDuration(), FailureModeAllow: a.GetFailureModeAllow(),
		StatusOnError: int(a.GetStatusOnError().GetCode()), WithRequestBody: wb != nil, MaxRequestBytes: int(wb.GetMaxRequestBytes()),
		AllowPartialMessage: wb.GetAllowPartialMessage(), PackAsBytes: wb.GetPackAsBytes(), EncodeRawHeaders: a.GetEncodeRawHeaders(),
		ValidateMutations: a.GetValidateMutations(), FrameBytes: f.FrameBytes,
		MutationRules: &envoyharness.MutationRules{AllowAllRouting: rules.GetAllowAllRouting().GetValue(), AllowEnvoy: rules.GetAllowEnvoy().GetValue(),
			DisallowSystem: rules.GetDisallowSystem().GetValue(), DisallowAll: rules.GetDisallowAll().GetValue(), DisallowIsError: rules.GetDisallowIsError().GetValue()},
	}
	if !reflect.DeepEqual(got, f) {
		t.Errorf("ext_authz in envoy.yaml:\n%+v\nthe harness's ShippedFilter:\n%+v", got, f)
	}
	escaped := map[string]envoyharness.EscapedSlashes{"KEEP_UNCHANGED": envoyharness.KeepUnchanged, "REJECT_REQUEST": envoyharness.RejectRequest,
		"UNESCAPE_AND_REDIRECT": envoyharness.UnescapeAndRedirect, "UNESCAPE_AND_FORWARD": envoyharness.UnescapeAndForward}
	gotCM := envoyharness.ConnectionManager{NormalizePath: hcm.GetNormalizePath().GetValue(), MergeSlashes: hcm.GetMergeSlashes(),
		EscapedSlashes: escaped[hcm.GetPathWithEscapedSlashesAction().String()], PreserveExternalRequestID: hcm.GetPreserveExternalRequestId(),
		AlwaysSetRequestIDInResponse: hcm.GetAlwaysSetRequestIdInResponse()}
	if gotCM != cm || !hcm.GetUseRemoteAddress().GetValue() {
		t.Errorf("connection manager in envoy.yaml (use_remote_address %v):\n%+v\nthe harness's ShippedHCM:\n%+v", hcm.GetUseRemoteAddress().GetValue(), gotCM, cm)
	}
	routes := map[string]envoyharness.Route{}
	for _, r := range hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes() {
		if r.GetMatch().GetPath() == "" {
			continue // the default route: checked and forwarded
		}
		var rt envoyharness.Route
		if d := r.GetDirectResponse(); d != nil {
			rt.DirectStatus, rt.DirectBody = int(d.GetStatus()), d.GetBody().GetInlineString()
		}
		if pf, ok := r.GetTypedPerFilterConfig()["envoy.filters.http.ext_authz"]; ok {
			rt.AuthzDisabled, _, _ = authzPerFilter(pf)
		}
		routes[r.GetMatch().GetPath()] = rt
	}
	if !reflect.DeepEqual(routes, envoyharness.ShippedRoutes) {
		t.Errorf("routes in envoy.yaml %+v, the harness's ShippedRoutes %+v", routes, envoyharness.ShippedRoutes)
	}
}
