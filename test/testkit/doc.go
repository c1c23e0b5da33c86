// Package testkit holds helpers for tests only: code that several packages'
// tests would otherwise each write again (a goroutine-safe log buffer, a
// polling wait, file writing, an in-memory event log, a JWKS endpoint).
//
// Only _test.go files and the gateway harnesses under test/ may import it;
// TestImportedByTestsOnly enforces that. It is not a home for shared
// production code: what the server itself needs belongs in its own package.
package testkit
