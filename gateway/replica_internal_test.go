package gateway

import (
	"strings"
	"testing"
)

// TestReplicaInstance: each replica labels its Pods with an instance of
// its own, so that one starting does not reap the others' live builds.
func TestReplicaInstance(t *testing.T) {
	a, err := replicaName()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := replicaName()
	if a == b {
		t.Fatalf("replicaName() = %q twice, want a new name at every start", a)
	}
	tests := []struct {
		instance, replica, want, wantErr string
	}{
		{"", "host-0a1b2c3d", "buildgw-0a1b2c3d", ""},
		{"ci", "gw-7f9c-0a1b2c3d", "ci-0a1b2c3d", ""},
		{strings.Repeat("x", 54), "h-0a1b2c3d", strings.Repeat("x", 54) + "-0a1b2c3d", ""},
		{strings.Repeat("x", 55), "h-0a1b2c3d", "", "too long"},
	}
	for _, tc := range tests {
		got, err := replicaInstance(tc.instance, tc.replica)
		if got != tc.want || (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("replicaInstance(%q, %q) = %q, %v, want %q, error %q", tc.instance, tc.replica, got, err, tc.want, tc.wantErr)
		}
	}
	ia, _ := replicaInstance("", a)
	ib, _ := replicaInstance("", b)
	if ia == ib {
		t.Errorf("two replicas share the instance label %q", ia)
	}
}
