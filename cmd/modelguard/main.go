// Command modelguard secures AI model APIs: it runs the Envoy/Istio
// ext_authz server, checks requests locally for policy authors, mints API
// keys, and is Kong's Go plugin server when Kong runs it (-kong-prefix,
// -dump).
package main

import (
	"fmt"
	"io"
	"os"
)

const usage = `modelguard secures AI model APIs behind Envoy, Istio and Kong.

Usage:
  modelguard serve [-config FILE]        run the ext_authz gRPC server (no -config: embedded demo)
  modelguard check [flags] METHOD PATH   decide one request locally (-config) or on a server (-server)
  modelguard keys mint [flags]           create an API key; prints the key once and its key file entry (-file: appends it)
  modelguard audit verify FILE...        check an audit trail's hash chain; reports the first bad record
  modelguard version
  modelguard -kong-prefix DIR [-settle]  run as Kong's Go plugin server (Kong starts it; see kong/README.md)
  modelguard -dump [-settle]             print the plugin's name, phases and schema for Kong

Run "modelguard COMMAND -h" for a command's flags.
`

var version = "0.1.0"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a subcommand and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	if kongInvocation(args) {
		return kongPlugin(stderr)
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stdout, stderr)
	case "check":
		return check(args[1:], stdout, stderr)
	case "keys":
		return keys(args[1:], stdout, stderr)
	case "audit":
		return auditCmd(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "modelguard", version)
		return 0
	case "-h", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "modelguard: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}
