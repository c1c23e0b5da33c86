// Package examples embeds the demo configuration and the example RBAC
// policy so that "modelguard serve" without a configuration runs a working
// demo.
package examples

import "embed"

// Demo holds demo.yaml and the policy directory.
//
//go:embed demo.yaml policy
var Demo embed.FS
