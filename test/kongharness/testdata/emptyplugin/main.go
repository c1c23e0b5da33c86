// Command emptyplugin is a go-pdk plugin that does nothing: the baseline
// the Kong harness benchmark compares modelguard with, and a plugin that
// does not answer in time for the harness's timeout test.
package main

import (
	"log"
	"time"

	"github.com/Kong/go-pdk"
	"github.com/Kong/go-pdk/server"
)

// Config: StallMS makes Access wait that long before returning.
type Config struct {
	StallMS int `json:"stall_ms"`
}

// Access does nothing (after StallMS).
func (c *Config) Access(*pdk.PDK) { time.Sleep(time.Duration(c.StallMS) * time.Millisecond) }

func main() {
	if err := server.StartServer(func() any { return &Config{} }, "0.1.0", 1000); err != nil {
		log.Fatal(err)
	}
}
