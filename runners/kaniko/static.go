package kaniko

import (
	"debug/elf"
	"fmt"
	"strings"
)

// checkStatic returns an error unless the executor at path is an ELF
// executable without a program interpreter. The sandbox's root holds no
// shared libraries and no dynamic loader, so a dynamically linked executor
// (what a plain go build gives with cgo on) passes every check on the
// host and then fails every build with "re-executing inside the sandbox:
// no such file or directory".
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("kaniko executor %s is not an ELF executable: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		interp := "a dynamic loader"
		if b, err := readAll(p); err == nil {
			interp = strings.TrimRight(string(b), "\x00")
		}
		return fmt.Errorf("kaniko executor %s is dynamically linked (it needs %s, which the build sandbox does not have): build it statically, with CGO_ENABLED=0 go build ./cmd/kaniko-executor", path, interp)
	}
	return nil
}

// readAll reads a program header's contents, at most 4 KiB of it: an
// interpreter path is short.
func readAll(p *elf.Prog) ([]byte, error) {
	n := p.Filesz
	if n > 4096 {
		n = 4096
	}
	b := make([]byte, n)
	if _, err := p.ReadAt(b, 0); err != nil {
		return nil, err
	}
	return b, nil
}
