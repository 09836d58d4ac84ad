package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"debug/macho"
	"debug/pe"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/buildgw/buildgw/internal/testenv"
)

// TestRelease runs scripts/release and checks what the gateway serves to CI
// jobs: one static, trimmed, stamped buildctl-lite per platform, and
// SHA256SUMS that sha256sum -c accepts.
func TestRelease(t *testing.T) {
	root := testenv.ModuleRoot(t)
	out := filepath.Join(t.TempDir(), "dist")
	const version, commit = "v9.9.9-releasetest", "feedfacefeedfacefeedfacefeedfacefeedface"
	cmd := exec.Command(filepath.Join(root, "scripts", "release"), out)
	cmd.Env = append(os.Environ(), "VERSION="+version, "COMMIT="+commit)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/release: %v\n%s", err, b)
	}

	type target struct {
		check func(path string) error
		desc  string
	}
	want := map[string]target{
		"buildctl-lite-linux-amd64":       {elfCheck(elf.EM_X86_64), "static ELF x86-64"},
		"buildctl-lite-linux-arm64":       {elfCheck(elf.EM_AARCH64), "static ELF aarch64"},
		"buildctl-lite-darwin-amd64":      {machoCheck(macho.CpuAmd64), "Mach-O x86-64"},
		"buildctl-lite-darwin-arm64":      {machoCheck(macho.CpuArm64), "Mach-O arm64"},
		"buildctl-lite-windows-amd64.exe": {peCheck(pe.IMAGE_FILE_MACHINE_AMD64), "PE x86-64"},
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	wantNames := []string{"SHA256SUMS"}
	for n := range want {
		wantNames = append(wantNames, n)
	}
	slices.Sort(wantNames)
	if !slices.Equal(names, wantNames) {
		t.Fatalf("release files = %q, want %q", names, wantNames)
	}

	sums := map[string]string{}
	f, err := os.Open(filepath.Join(out, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		sum, file, ok := strings.Cut(s.Text(), "  ")
		if !ok || len(sum) != 64 {
			t.Fatalf("SHA256SUMS line %q is not in sha256sum format", s.Text())
		}
		if _, dup := sums[file]; dup {
			t.Errorf("SHA256SUMS lists %s twice", file)
		}
		sums[file] = sum
	}
	for n, tg := range want {
		p := filepath.Join(out, n)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256(b)
		if got := hex.EncodeToString(h[:]); sums[n] != got {
			t.Errorf("SHA256SUMS has %s for %s, want %s", sums[n], n, got)
		}
		if err := tg.check(p); err != nil {
			t.Errorf("%s: want %s: %v", n, tg.desc, err)
		}
		// -trimpath: no path of the machine that built it.
		if bytes.Contains(b, []byte(root)) {
			t.Errorf("%s contains the build directory %s (not built with -trimpath)", n, root)
		}
		if !bytes.Contains(b, []byte(version)) || !bytes.Contains(b, []byte(commit)) {
			t.Errorf("%s does not carry version %s and commit %s", n, version, commit)
		}
	}
	if len(sums) != len(want) {
		t.Errorf("SHA256SUMS lists %d files, want %d", len(sums), len(want))
	}

	check := exec.Command("sha256sum", "-c", "--strict", "SHA256SUMS")
	check.Dir = out
	if b, err := check.CombinedOutput(); err != nil {
		t.Errorf("sha256sum -c SHA256SUMS: %v\n%s", err, b)
	}

	if runtime.GOOS == "linux" && runtime.GOARCH == "amd64" {
		b, err := exec.Command(filepath.Join(out, "buildctl-lite-linux-amd64"), "version").CombinedOutput()
		if err != nil {
			t.Fatalf("buildctl-lite-linux-amd64 version: %v\n%s", err, b)
		}
		for _, w := range []string{version, commit} {
			if !strings.Contains(string(b), w) {
				t.Errorf("buildctl-lite-linux-amd64 version = %q, want it to contain %q", b, w)
			}
		}
	}
}

func elfCheck(m elf.Machine) func(string) error {
	return func(p string) error {
		f, err := elf.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if f.Machine != m {
			return fmt.Errorf("machine %v", f.Machine)
		}
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP || prog.Type == elf.PT_DYNAMIC {
				return fmt.Errorf("dynamically linked")
			}
		}
		return nil
	}
}

func machoCheck(c macho.Cpu) func(string) error {
	return func(p string) error {
		f, err := macho.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if f.Cpu != c {
			return fmt.Errorf("cpu %v", f.Cpu)
		}
		return nil
	}
}

func peCheck(m uint16) func(string) error {
	return func(p string) error {
		f, err := pe.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if f.Machine != m {
			return fmt.Errorf("machine %#x", f.Machine)
		}
		return nil
	}
}
