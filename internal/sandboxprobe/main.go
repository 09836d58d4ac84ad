// Command sandboxprobe is run by RUN steps of the sandbox tests to try the
// ways out of a sandbox that ordinary programs do not take. A static Go
// binary (CGO_ENABLED=0), so it runs on any base image. Subcommands, each
// printing one line per result:
//
//	rawtcp HOST PORT PATH     fetch http://HOST:PORT/PATH with a TCP client of its
//	                          own over an AF_PACKET socket: Ethernet, IPv4 and TCP
//	                          frames built by hand, past the IP layer's rules
//	rawip                     open an AF_INET SOCK_RAW socket with IP_HDRINCL
//	sockets                   try socket() for families and types that matter
//	shm-create KEY SIZE MARKER  create a SysV shared memory segment holding MARKER
//	                          and leave it
//	shm-read KEY              print the marker of the segment KEY
//	hostname                  print the host name
//	keyring-read DESC         search the session keyring for the "user" key DESC
//	                          and print its payload
//	id                        print the real and effective uid, and whether the
//	                          process holds CAP_NET_RAW or may ever get it
package main

import (
	"fmt"
	"os"
	"strconv"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: sandboxprobe rawtcp|rawip|sockets|shm-create|shm-read|keyring-read|hostname|id ARGS")
		os.Exit(2)
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "rawtcp":
		if len(args) != 3 {
			usage("rawtcp HOST PORT PATH")
		}
		port, err := strconv.Atoi(args[1])
		if err != nil {
			usage("rawtcp HOST PORT PATH")
		}
		body, err := rawFetch(args[0], uint16(port), args[2])
		if err != nil {
			fmt.Printf("rawtcp %s:%d: %v\n", args[0], port, err)
			return
		}
		fmt.Printf("rawtcp %s:%d: fetched %q\n", args[0], port, body)
	case "rawip":
		fmt.Printf("rawip: %v\n", rawIP())
	case "sockets":
		for _, s := range trySockets() {
			fmt.Println(s)
		}
	case "shm-create":
		if len(args) != 3 {
			usage("shm-create KEY SIZE MARKER")
		}
		id, err := shmCreate(args[0], args[1], args[2])
		if err != nil {
			fmt.Printf("shm-create %s: %v\n", args[0], err)
			return
		}
		fmt.Printf("shm-create %s: created, id %d\n", args[0], id)
	case "shm-read":
		if len(args) != 1 {
			usage("shm-read KEY")
		}
		m, err := shmRead(args[0])
		if err != nil {
			fmt.Printf("shm-read %s: %v\n", args[0], err)
			return
		}
		fmt.Printf("shm-read %s: found %q\n", args[0], m)
	case "keyring-read":
		if len(args) != 1 {
			usage("keyring-read DESC")
		}
		p, err := keyringRead(args[0])
		if err != nil {
			fmt.Printf("keyring-read %s: %v\n", args[0], err)
			return
		}
		fmt.Printf("keyring-read %s: found %q\n", args[0], p)
	case "hostname":
		h, err := os.Hostname()
		if err != nil {
			fmt.Printf("hostname: %v\n", err)
			return
		}
		fmt.Printf("hostname: %s\n", h)
	case "id":
		fmt.Println(identity())
	default:
		usage("rawtcp|rawip|sockets|shm-create|shm-read|hostname|id ARGS")
	}
}

func usage(s string) {
	fmt.Fprintln(os.Stderr, "usage: sandboxprobe "+s)
	os.Exit(2)
}
