package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/modelguard/modelguard/policy/apikey"
)

func keys(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "mint" {
		fmt.Fprintln(stderr, "usage: modelguard keys mint -id ID -subject SUBJECT [-roles a,b] [-prefix mg_]")
		return 2
	}
	fs := flag.NewFlagSet("keys mint", flag.ContinueOnError)
	fs.SetOutput(stderr)
	id := fs.String("id", "", "key id, shown in logs and audit (required)")
	subject := fs.String("subject", "", "subject the key authenticates as (required)")
	roles := fs.String("roles", "", "comma-separated roles")
	prefix := fs.String("prefix", "mg_", "recognisable key prefix (helps secret scanners)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *id == "" || *subject == "" {
		fmt.Fprintln(stderr, "modelguard keys mint: -id and -subject are required")
		return 2
	}
	var rs []string
	for _, r := range strings.Split(*roles, ",") {
		if r = strings.TrimSpace(r); r != "" {
			rs = append(rs, r)
		}
	}
	// Refuse before minting an entry the key file would not accept.
	if err := apikey.CheckEntry(*id, *subject, rs); err != nil {
		fmt.Fprintf(stderr, "modelguard keys mint: %v\n", err)
		return 2
	}
	key, err := apikey.Mint(*prefix)
	if err != nil {
		fmt.Fprintf(stderr, "modelguard keys mint: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "API key (shown once, store it now):\n  %s\n\nAdd this entry under \"keys:\" in the key file:\n%s", key, apikey.Entry(*id, *subject, rs, key))
	return 0
}
