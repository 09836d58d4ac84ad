// Package testmanager builds a builder.Manager the way the gateway wires
// one, with the real kaniko runner and an in-memory registry on loopback,
// for the tests of the packages above the builder.
package testmanager

import (
	"context"
	"testing"

	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/builder/basestore"
	"github.com/buildgw/buildgw/builder/push"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/runners/kaniko"
)

// Env is a Manager and the places it uses.
type Env struct {
	M        *builder.Manager
	StateDir string
	// Registry is the host:port of the in-memory registry, which runners
	// may pull FROM and the Manager pushes to.
	Registry string
}

// Options change what New makes.
type Options struct {
	// NoWorkers accepts builds but never runs them.
	NoWorkers bool
	Builder   []builder.Option
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
	p, err := push.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	bases, err := basestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	opts := []builder.Option{builder.WithRunner("kaniko", kr), builder.WithInsecureRegistries(reg), builder.WithBaseImages(bases)}
	if uid, gid, differs := kr.Owner(); differs {
		opts = append(opts, builder.WithWorkspaceOwner(uid, gid))
	}
	m, err := builder.New(dir, p, append(opts, o.Builder...)...)
	if err != nil {
		t.Fatalf("builder.New = %v", err)
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
	return &Env{M: m, StateDir: dir, Registry: reg}
}
