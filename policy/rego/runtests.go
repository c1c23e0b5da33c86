package rego

import (
	"context"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

// RunTests runs the Rego tests (*_test.rego) in dir against the policy and
// data beside them, read the same way the running policy is. Builtin errors
// fail tests, as they fail evaluations at run time. An error means the tests
// could not run; failed tests are in the results (see tester.Result.Pass).
// A directory without tests gives no results and no error.
func RunTests(ctx context.Context, dir string) ([]*tester.Result, error) {
	snap, err := readPolicyDir(dir, true)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", dir, err)
	}
	loaded, err := load(snap)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", dir, err)
	}
	ch, err := tester.NewRunner().
		SetStore(inmem.NewFromObject(loaded.Documents)).
		SetDefaultRegoVersion(ast.RegoV1).
		RaiseBuiltinErrors(true).
		Run(ctx, loaded.ParsedModules())
	if err != nil {
		return nil, fmt.Errorf("policy %s: tests: %w", dir, err)
	}
	var results []*tester.Result
	for r := range ch {
		results = append(results, r)
	}
	return results, nil
}
