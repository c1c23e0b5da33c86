// Command emptyplugin is a go-pdk plugin that does nothing: the baseline
// the Kong harness benchmark compares modelguard with.
package main

import (
	"log"

	"github.com/Kong/go-pdk"
	"github.com/Kong/go-pdk/server"
)

// Config has no fields.
type Config struct{}

// Access does nothing.
func (*Config) Access(*pdk.PDK) {}

func main() {
	if err := server.StartServer(func() any { return &Config{} }, "0.1.0", 1000); err != nil {
		log.Fatal(err)
	}
}
