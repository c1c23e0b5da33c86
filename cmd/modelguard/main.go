// Command modelguard secures AI model APIs: it runs the Envoy/Istio
// ext_authz server, checks requests locally for policy authors, mints API
// keys, and is Kong's Go plugin server when Kong runs it (-kong-prefix,
// -dump).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
)

const usage = `modelguard secures AI model APIs behind Envoy, Istio and Kong.

Usage:
  modelguard serve [-config FILE]        run the ext_authz gRPC server (no -config: embedded demo)
  modelguard check [flags] METHOD PATH   decide one request locally (-config) or on a server (-server)
  modelguard init DIR                    write a starter configuration, policy and keys into DIR
  modelguard keys mint [flags]           create an API key; prints the key once and its key file entry (-file: appends it)
  modelguard audit verify FILE...        check an audit trail's hash chain; reports the first bad record
  modelguard health [flags]              ask a running server whether it serves (grpc.health.v1, or -http URL); exit 0 or 1
  modelguard version                     print the version (also --version)
  modelguard -kong-prefix DIR [-settle]  run as Kong's Go plugin server (Kong starts it; see kong/README.md)
  modelguard -dump [-settle]             print the plugin's name, phases and schema for Kong

Run "modelguard COMMAND -h" for a command's flags. Exit status: 0 success,
1 failure (a denial for check, a broken trail for audit verify), 2 usage or
setup error.
`

// linkVersion is set by "make build" (-ldflags "-X main.linkVersion=...").
var linkVersion string

// version is the build's version: the one make build linked in, else the
// module version go install recorded, else a development version.
var version = buildVersion(linkVersion)

func buildVersion(linked string) string {
	if linked != "" {
		return linked
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "0.1.0-dev"
}

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
	case "init":
		return initCmd(args[1:], stdout, stderr)
	case "keys":
		return keys(args[1:], stdout, stderr)
	case "audit":
		return auditCmd(args[1:], stdout, stderr)
	case "health":
		return health(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "modelguard", version)
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "modelguard: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

// parseFlags parses a subcommand's flags. It returns the exit code to stop
// with, or -1 to go on: -h and --help print the flags and exit 0, a bad
// flag (named by the flag package) exits 2.
func parseFlags(fs *flag.FlagSet, args []string) int {
	switch err := fs.Parse(args); {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		return 2
	}
	return -1
}

// usageError reports a usage mistake of a subcommand, then its usage, and
// returns 2.
func usageError(fs *flag.FlagSet, format string, args ...any) int {
	fmt.Fprintf(fs.Output(), "modelguard %s: %s\n\n", fs.Name(), fmt.Sprintf(format, args...))
	fs.Usage()
	return 2
}

// subcommand checks the subcommand of a command that has one (keys mint,
// audit verify): help prints usage and exits 0, a missing or unknown one
// exits 2. It returns -1 when args start with sub.
func subcommand(cmd, sub, usage string, args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 0:
		fmt.Fprintf(stderr, "modelguard %s: missing subcommand (%s)\n\n%s", cmd, sub, usage)
		return 2
	case isHelp(args[0]):
		fmt.Fprint(stdout, usage)
		return 0
	case args[0] != sub:
		fmt.Fprintf(stderr, "modelguard %s: unknown subcommand %q\n\n%s", cmd, args[0], usage)
		return 2
	}
	return -1
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "help"
}
