package kaniko

import (
	"context"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/internal/hostfs"
	"github.com/buildgw/buildgw/internal/testenv"
)

// BuildProcs names the processes of a running build, an orphan that left
// its session included, from the build's cgroup or, without limits, the
// sandbox's process tree; none once the build is over.
func TestBuildProcs(t *testing.T) {
	exe, regHost, base, store, _ := cacheTestEnv(t)
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"process tree", nil},
		{"cgroup", []Option{WithLimits(256<<20, 200)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := New(append([]Option{WithExecutor(exe)}, tc.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			df := "ARG BASE\nFROM ${BASE}\nRUN (setsid sleep 301 &); sleep 302\n"
			req := netRequest(t, r, df, "", map[string]string{"BASE": base}, regHost)
			b, err := store.Prepare(context.Background(), req, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			req.BaseImages = b
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { _, err := r.Build(ctx, req, io.Discard); done <- err }()
			want := []string{"sleep 301", "sleep 302"}
			var got []string
			for deadline := time.Now().Add(testenv.Scale(time.Minute)); ; time.Sleep(50 * time.Millisecond) {
				pids, err := r.BuildProcs(req.ID)
				if err != nil {
					t.Fatalf("BuildProcs(%q) = %v", req.ID, err)
				}
				got = nil
				for _, pid := range pids {
					if p, err := hostfs.Lookup(pid); err == nil && p.Comm == "sleep" {
						got = append(got, strings.Join(p.Args(), " "))
					}
				}
				slices.Sort(got)
				if slices.Equal(got, want) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("BuildProcs(%q) lists sleeps %q, want %q", req.ID, got, want)
				}
			}
			cancel()
			select {
			case <-done:
			case <-time.After(testenv.Scale(time.Minute)):
				t.Fatal("Build did not return after its context was cancelled")
			}
			if pids, err := r.BuildProcs(req.ID); err != nil || len(pids) != 0 {
				t.Errorf("BuildProcs(%q) after the build = %v, %v, want none", req.ID, pids, err)
			}
		})
	}
}
