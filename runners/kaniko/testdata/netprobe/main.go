// Command netprobe is run by a RUN step of the network tests: it fetches
// each URL given and prints "reached URL BODY" or "refused URL ERROR", one
// line each. A static Go binary, because the static busybox's networking
// applets crash on name resolution.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	c := &http.Client{Timeout: 5 * time.Second}
	for _, u := range os.Args[1:] {
		resp, err := c.Get(u)
		if err != nil {
			fmt.Printf("refused %s %v\n", u, err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("reached %s %s\n", u, b)
	}
}
