// Package testmanager builds a jobs.Manager the way the gateway wires
// one, with the real kaniko runner and an in-memory registry on loopback,
// for the tests of the packages above the builder.
package testmanager

import (
	"context"
	"testing"

	"github.com/buildgw/buildgw/basestore"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/jobs"
	"github.com/buildgw/buildgw/push"
	"github.com/buildgw/buildgw/runners/kaniko"
	"github.com/buildgw/buildgw/workspace"
)

// Env is a Manager and the places it uses.
type Env struct {
	M        *jobs.Manager
	StateDir string
	Layout   workspace.Layout
	// Registry is the host:port of the in-memory registry, which runners
	// may pull FROM and the Manager pushes to.
	Registry string
}

// Options change what New makes.
type Options struct {
	// NoWorkers accepts builds but never runs them.
	NoWorkers bool
	Builder   []jobs.Option
	// Kaniko are options of the kaniko runner besides its executor.
	Kaniko []kaniko.Option
}

// New returns a Manager whose workers run until the test ends.
func New(t testing.TB, o Options) *Env {
	t.Helper()
	testenv.RequireSandbox(t)
	kr, err := kaniko.New(append([]kaniko.Option{kaniko.WithExecutor(testenv.Executor(t))}, o.Kaniko...)...)
	if err != nil {
		t.Fatalf("kaniko.New = %v", err)
	}
	reg := testenv.Registry(t)
	dir := testenv.StateDir(t)
	layout := workspace.NewLayout(dir)
	p, err := push.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	bases, err := basestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	opts := []jobs.Option{jobs.WithRunner("kaniko", kr), jobs.WithInsecureRegistries(reg), jobs.WithBaseImages(bases)}
	if uid, gid, differs := kr.Owner(); differs {
		opts = append(opts, jobs.WithWorkspaceOwner(uid, gid))
	}
	m, err := jobs.New(layout, p, append(opts, o.Builder...)...)
	if err != nil {
		t.Fatalf("jobs.New = %v", err)
	}
	if !o.NoWorkers {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			m.Run(ctx)
		}()
		t.Cleanup(func() {
			cancel()
			<-done
			m.Close()
		})
	} else {
		t.Cleanup(func() { m.Close() })
	}
	return &Env{M: m, StateDir: dir, Layout: layout, Registry: reg}
}
