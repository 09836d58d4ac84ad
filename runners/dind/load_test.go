package dind

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
)

func TestDockerRef(t *testing.T) {
	const dig = "sha256:0123456789012345678901234567890123456789012345678901234567890123"
	for in, want := range map[string]string{
		"busybox":                               "busybox:latest",
		"index.docker.io/library/busybox:1.36":  "busybox:1.36",
		"docker.io/team/app:1":                  "team/app:1",
		"busybox@" + dig:                        "busybox@" + dig,
		"busybox:1.36@" + dig:                   "busybox@" + dig,
		"127.0.0.1:5000/library/busybox:latest": "127.0.0.1:5000/library/busybox:latest",
		"registry.example.com/a/b@" + dig:       "registry.example.com/a/b@" + dig,
	} {
		ref, err := name.ParseReference(in, name.WeakValidation)
		if err != nil {
			t.Fatalf("ParseReference(%q): %v", in, err)
		}
		if got := dockerRef(ref); got != want {
			t.Errorf("dockerRef(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestReferenceStore(t *testing.T) {
	refs := map[string]string{
		"busybox@sha256:aa":             "sha256:11",
		"127.0.0.1:5000/x@sha256:bb":    "sha256:22",
		"127.0.0.1:5000/x@sha256:cc":    "sha256:33",
		"registry.example.com/y@sha256": "sha256:44",
	}
	var got struct{ Repositories map[string]map[string]string }
	if err := json.Unmarshal(referenceStore(refs), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]string{
		"busybox":                {"busybox@sha256:aa": "sha256:11"},
		"127.0.0.1:5000/x":       {"127.0.0.1:5000/x@sha256:bb": "sha256:22", "127.0.0.1:5000/x@sha256:cc": "sha256:33"},
		"registry.example.com/y": {"registry.example.com/y@sha256": "sha256:44"},
	}
	if !reflect.DeepEqual(got.Repositories, want) {
		t.Errorf("referenceStore(%v) = %v, want %v", refs, got.Repositories, want)
	}
}
