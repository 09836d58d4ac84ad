package dind

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/docker/docker/profiles/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// TestSeccompProfile checks the rules that the containers' profile adds
// to Docker's default: every rule allowing socket() names the family, and
// for AF_INET and AF_INET6 the type too; socketcall and io_uring are
// allowed by none; the rest of Docker's default is kept.
func TestSeccompProfile(t *testing.T) {
	b, err := seccompProfile()
	if err != nil {
		t.Fatal(err)
	}
	var p seccomp.Seccomp
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("the profile is not a Docker seccomp profile: %v", err)
	}
	if p.DefaultAction != specs.ActErrno {
		t.Errorf("default action %s, want %s", p.DefaultAction, specs.ActErrno)
	}
	allowed := map[string]bool{}
	for _, s := range p.Syscalls {
		for _, n := range s.Names {
			allowed[n] = true
			switch n {
			case "socketcall", "io_uring_setup", "io_uring_enter", "io_uring_register":
				t.Errorf("%s allowed by %+v", n, s)
			case "socket":
				if len(s.Names) != 1 || len(s.Args) == 0 || s.Args[0].Index != 0 || s.Args[0].Op != specs.OpEqualTo {
					t.Errorf("socket allowed without a family: %+v", s)
					continue
				}
				switch s.Args[0].Value {
				case unix.AF_UNIX, unix.AF_NETLINK:
				case unix.AF_INET, unix.AF_INET6:
					if len(s.Args) != 2 || s.Args[1].Op != specs.OpMaskedEqual || s.Args[1].Value != 0xf ||
						!slices.Contains([]uint64{unix.SOCK_STREAM, unix.SOCK_DGRAM, unix.SOCK_SEQPACKET}, s.Args[1].ValueTwo) {
						t.Errorf("socket allowed for family %d without a safe type: %+v", s.Args[0].Value, s)
					}
				default:
					t.Errorf("socket allowed for family %d: %+v", s.Args[0].Value, s)
				}
			}
		}
	}
	for _, n := range []string{"socket", "connect", "read", "clone", "setuid"} {
		if !allowed[n] {
			t.Errorf("%s is not allowed: the profile lost Docker's defaults", n)
		}
	}
}
