package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// capNetRaw is CAP_NET_RAW's bit.
const capNetRaw = 13

// identity returns "id: uid=U euid=E net_raw: effective=B bounding=B
// no_new_privs=N" from /proc/self/status.
func identity() string {
	st := map[string]string{}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return "id: " + err.Error()
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok {
			st[k] = strings.TrimSpace(v)
		}
	}
	has := func(set string) bool {
		v, err := strconv.ParseUint(st[set], 16, 64)
		return err == nil && v&(1<<capNetRaw) != 0
	}
	return fmt.Sprintf("id: uid=%d euid=%d net_raw: effective=%v bounding=%v no_new_privs=%s",
		os.Getuid(), os.Geteuid(), has("CapEff"), has("CapBnd"), st["NoNewPrivs"])
}
