// Package inputdoc describes a policy's input document once, for two
// readers. The input's builder writes each member a request has to a
// Writer: a Builder makes the Rego values evaluation reads, and an Encoder
// appends, without making any value, the decision cache's key: the
// encoding of exactly the values at the paths a policy can read, the same
// bytes as Paths.AppendValue gives for the built document. Because both
// come from the same calls, the key cannot drift from the input.
package inputdoc
