package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/modelguard/modelguard/policy/apikey"
)

const keysUsage = "usage: modelguard keys mint -id ID -subject SUBJECT [-roles a,b] [-prefix mg_] [-file keys.txt]\n"

func keys(args []string, stdout, stderr io.Writer) int {
	if code := subcommand("keys", "mint", keysUsage, args, stdout, stderr); code >= 0 {
		return code
	}
	fs := flag.NewFlagSet("keys mint", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), keysUsage); fs.PrintDefaults() }
	id := fs.String("id", "", "key id, shown in logs and audit (required)")
	subject := fs.String("subject", "", "subject the key authenticates as (required)")
	roles := fs.String("roles", "", "comma-separated roles")
	prefix := fs.String("prefix", "mg_", "recognisable key prefix (helps secret scanners)")
	file := fs.String("file", "", "append the entry to this one-line key file (created if missing; not *.yaml)")
	if code := parseFlags(fs, args[1:]); code >= 0 {
		return code
	}
	switch {
	case *id == "":
		return usageError(fs, "missing -id")
	case *subject == "":
		return usageError(fs, "missing -subject")
	case fs.NArg() > 0:
		return usageError(fs, "unexpected argument %q (flags only)", fs.Arg(0))
	}
	var rs []string
	for _, r := range strings.Split(*roles, ",") {
		if r = strings.TrimSpace(r); r != "" {
			rs = append(rs, r)
		}
	}
	// Refuse before minting an entry the key file would not accept.
	check := apikey.CheckEntry
	if *file != "" {
		check = apikey.CheckLine
	}
	if err := check(*id, *subject, rs); err != nil {
		fmt.Fprintf(stderr, "modelguard keys mint: %v\n", err)
		return 2
	}
	key, err := apikey.Mint(*prefix)
	if err != nil {
		fmt.Fprintf(stderr, "modelguard keys mint: %v\n", err)
		return 1
	}
	if *file != "" {
		// The key is printed only once the file holds its hash.
		if err := apikey.AppendLine(*file, apikey.Line(*id, *subject, rs, key)); err != nil {
			fmt.Fprintf(stderr, "modelguard keys mint: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "API key (shown once, store it now):\n  %s\n\nIts hash was appended to %s as id %q.\n", key, *file, *id)
		return 0
	}
	fmt.Fprintf(stdout, "API key (shown once, store it now):\n  %s\n\n", key)
	if apikey.CheckLine(*id, *subject, rs) == nil {
		fmt.Fprintf(stdout, "Add this line to a one-line key file (any name but *.yaml):\n  %s\n", apikey.Line(*id, *subject, rs, key))
	}
	fmt.Fprintf(stdout, "Or add this entry under \"keys:\" in a YAML key file:\n%s", apikey.Entry(*id, *subject, rs, key))
	return 0
}
