// Command help writes buildctl-lite's reference, one Markdown page per
// command, generated from the commands themselves.
package main

import (
	"flag"
	"log"

	"github.com/buildgw/buildgw/cmd/buildctl-lite/cmd"
)

func main() {
	dir := flag.String("dir", "docs/buildctl-lite", "directory to write the pages to")
	flag.Parse()
	if err := cmd.WriteDocs(*dir); err != nil {
		log.Fatal(err)
	}
}
