// Command netprobe is run by a RUN step of the network tests. It first
// tries to change the sandbox's network (take loopback down, as a step
// wanting to tamper with its interfaces or rules would need to) and
// prints "netadmin: RESULT", then fetches each URL given and prints
// "reached URL BODY" or "refused URL ERROR", one line each. A static Go
// binary, because the static busybox's networking applets crash on name
// resolution.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	fmt.Printf("netadmin: %v\n", loopbackDown())
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

// loopbackDown tries to take loopback down and, if that worked, brings it
// up again; it returns the first error, or "allowed".
func loopbackDown() string {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err.Error()
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err.Error()
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err.Error()
	}
	up := ifr.Uint16()
	ifr.SetUint16(up &^ unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return err.Error()
	}
	ifr.SetUint16(up)
	unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
	return "allowed"
}
