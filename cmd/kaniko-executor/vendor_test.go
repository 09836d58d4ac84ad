package main

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVendoredKaniko re-creates third_party/kaniko with
// scripts/kaniko-vendor (the pristine module from the module cache plus
// the patches) and checks that the vendored tree is exactly that: a change
// to the kaniko sources must come as a patch. The module cache must hold
// the pristine module (scripts/setup --test downloads it); the test stays
// off the network.
func TestVendoredKaniko(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "kaniko")
	cmd := exec.Command("bash", filepath.Join(root, "scripts", "kaniko-vendor"), dir)
	cmd.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/kaniko-vendor: %v\n%s(run scripts/setup --test for the pristine module)", err, out)
	}
	vendored := filepath.Join(root, "third_party", "kaniko")
	// Our own files in the vendored tree: not part of the module.
	own := map[string]bool{"README.md": true, "patches": true}
	want, err := treeOf(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := treeOf(vendored, own)
	if err != nil {
		t.Fatal(err)
	}
	for p, w := range want {
		if g, ok := got[p]; !ok {
			t.Errorf("third_party/kaniko/%s is missing; scripts/kaniko-vendor makes it", p)
		} else if g != w {
			t.Errorf("third_party/kaniko/%s differs from pristine kaniko plus patches (%s, want %s): make the change a patch in third_party/kaniko/patches", p, g, w)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("third_party/kaniko/%s is not in pristine kaniko plus patches", p)
		}
	}
	patches, err := filepath.Glob(filepath.Join(vendored, "patches", "*.patch"))
	if err != nil || len(patches) == 0 {
		t.Errorf("no patches in third_party/kaniko/patches (%v)", err)
	}
}

// treeOf describes each file under dir (except the top-level names in
// skip) by its type, executable bit and content.
func treeOf(dir string, skip map[string]bool) (map[string]string, error) {
	tree := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		if skip[strings.Split(rel, string(filepath.Separator))[0]] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		// Type, executable bit and content: what git keeps (the other
		// mode bits follow the umask of the checkout).
		desc := fi.Mode().Type().String()
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" executable=%t sha256:%x", fi.Mode()&0o100 != 0, sha256.Sum256(b))
		}
		tree[rel] = desc
		return nil
	})
	return tree, err
}
