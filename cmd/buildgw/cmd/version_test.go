package cmd

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/buildgw/buildgw/version"
)

func TestVersion(t *testing.T) {
	cmd := NewCmdVersion()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs(nil)
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("buildgw %s (commit %s, kaniko %s)\n", version.Version, version.Commit(), version.Kaniko())
	if got := out.String(); got != want {
		t.Errorf("buildgw version = %q, want %q", got, want)
	}
	// buildgw does not link kaniko; the version still comes from go.mod.
	if k := version.Kaniko(); k == "unknown" || k == "" {
		t.Errorf("kaniko version = %q, want the version pinned in go.mod", k)
	}
}
