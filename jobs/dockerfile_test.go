package jobs_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/jobs"
	"github.com/buildgw/buildgw/runners/kaniko"
)

// TestSubmitRefusesDockerfile: a Dockerfile that cannot be analyzed is
// the caller's to fix. It is refused at submission, naming the problem
// and its line, before the policy's second look and before anything is
// queued.
func TestSubmitRefusesDockerfile(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name, dockerfile, target string
		wantIn                   string
	}{
		{"unparsable", "FROM scratch\nCOPY only-one-argument\n", "", "line 2: COPY requires at least two arguments"},
		{"unknown instruction", "FROM scratch\nBOGUS x\n", "", "line 2: unknown instruction: BOGUS"},
		{"no FROM", "RUN true\n", "", "line 1: no build stage in current context"},
		{"ARG without value in FROM", "ARG BASE\nFROM $BASE\n", "", "FROM on line 2: cannot resolve \"$BASE\": ARG BASE has no value"},
		{"unknown target", "FROM scratch AS a\n", "b", "target stage \"b\" not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls int
			authorize := func(_ *jobs.ValidSpec, df []byte, _ *dockerfile.Analysis) (jobs.Grant, error) {
				calls++
				if df != nil {
					t.Errorf("Authorize called with the Dockerfile of %s, want it refused before", tc.name)
				}
				return jobs.Grant{}, nil
			}
			spec := api.BuildSpec{Destinations: []string{e.dest("r")}, Target: tc.target}
			j, err := e.m.Submit(context.Background(), jobs.SubmitRequest{Owner: "alice", Spec: spec, Authorize: authorize},
				bytes.NewReader(contextTar(t, file{"Dockerfile", tc.dockerfile})))
			var se *jobs.SpecError
			if !errors.As(err, &se) || se.Field != "dockerfile" || !strings.Contains(err.Error(), tc.wantIn) {
				t.Fatalf("Submit(%s) = %v, %v; want a *SpecError on dockerfile containing %q", tc.name, j, err, tc.wantIn)
			}
			if calls != 1 {
				t.Errorf("Submit(%s) asked Authorize %d times, want once (without the Dockerfile)", tc.name, calls)
			}
			if ws := e.workspaces(t); len(ws) != 0 {
				t.Errorf("Submit(%s) left workspaces %q, want none", tc.name, ws)
			}
			if logs, _ := os.ReadDir(filepath.Join(e.stateDir, "logs")); len(logs) != 0 {
				t.Errorf("Submit(%s) left %d logs, want none", tc.name, len(logs))
			}
		})
	}
}

// TestSubmitAnalyzesOnce: the analysis the policy decides on is the one
// the job keeps for the base store and the runner, made with the build's
// args and target.
func TestSubmitAnalyzesOnce(t *testing.T) {
	e := newEnv(t)
	var seen *dockerfile.Analysis
	authorize := func(_ *jobs.ValidSpec, df []byte, a *dockerfile.Analysis) (jobs.Grant, error) {
		if df != nil {
			seen = a
		}
		return jobs.Grant{}, nil
	}
	src := "ARG NAME=files\nFROM scratch AS files\nCOPY hello.txt /hello.txt\nFROM scratch\nCOPY --from=files /hello.txt /copy.txt\n"
	spec := api.BuildSpec{Destinations: []string{e.dest("once")}, Target: "FILES", BuildArgs: map[string]string{"NAME": "x"}}
	j, err := e.m.Submit(context.Background(), jobs.SubmitRequest{Owner: "alice", Spec: spec, Authorize: authorize},
		bytes.NewReader(contextTar(t, file{"Dockerfile", src}, file{"hello.txt", "hi"})))
	if err != nil {
		t.Fatalf("Submit = %v", err)
	}
	// The job may have ended already; then it keeps no analysis.
	if a := j.Analysis(); a != nil && a != seen {
		t.Fatalf("Job.Analysis() = %p, Authorize saw %p; want the same analysis", a, seen)
	}
	if a := seen; a == nil || a.Target != 0 || len(a.Stages) != 2 || !a.Stages[0].Needed || a.Stages[1].Needed {
		t.Fatalf("Authorize saw analysis %+v; want target 0 (files) needing only itself", a)
	}
	if b := wait(t, j, time.Minute); b.Status != api.StatusSucceeded {
		t.Errorf("build = %s (%s), want succeeded", b.Status, b.Error)
	}
	if a := j.Analysis(); a != nil {
		t.Errorf("Job.Analysis() after the build = %p, want nil: finished jobs keep no analysis", a)
	}
}

// TestSubmitPredefinedArgs: FROM with one of BuildKit's predefined ARGs
// (TARGETOS) is resolved for a runner whose builder predefines them, as
// the kaniko runner's executor does (third_party/kaniko patch 0013), and
// built; for a runner that does not (here the same runner with that
// capability hidden, as dind's legacy builder lacks it) it is refused at
// submission.
func TestSubmitPredefinedArgs(t *testing.T) {
	kr, err := kaniko.New(kaniko.WithExecutor(testenv.Executor(t)))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, jobs.WithRunner("plain", struct{ builder.Runner }{kr}))
	src := "FROM scratch AS build-linux\nCOPY hello.txt /hello.txt\nFROM build-${TARGETOS}\nCOPY hello.txt /again.txt\n"
	for _, tc := range []struct {
		runner string
		ok     bool
	}{{"kaniko", true}, {"plain", false}} {
		t.Run(tc.runner, func(t *testing.T) {
			spec := api.BuildSpec{Destinations: []string{e.dest("predefined-" + tc.runner)}, Runner: tc.runner}
			j, err := e.m.Submit(context.Background(), jobs.SubmitRequest{Owner: "alice", Spec: spec},
				bytes.NewReader(contextTar(t, file{"Dockerfile", src}, file{"hello.txt", "hi"})))
			if !tc.ok {
				var se *jobs.SpecError
				if !errors.As(err, &se) || !strings.Contains(err.Error(), "ARG TARGETOS is predefined by BuildKit but not by this runner") {
					t.Fatalf("Submit(runner %s) = %v, %v; want a *SpecError naming TARGETOS", tc.runner, j, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Submit(runner %s) = %v", tc.runner, err)
			}
			if b := wait(t, j, time.Minute); b.Status != api.StatusSucceeded {
				t.Errorf("build = %s (%s), want succeeded", b.Status, b.Error)
			}
		})
	}
}

// lister is a kaniko runner that says its builder predefines only some of
// BuildKit's ARGs, as the dind runner does on Docker 20.10.
type lister struct {
	*kaniko.Runner
	names []string
}

func (l lister) PredefinedArgs() []string { return l.names }

// TestSubmitPredefinedArgsListed: a runner that predefines only some of
// BuildKit's ARGs (PredefinedArgs) gets a FROM using another refused at
// submission, naming it, rather than built from an image its builder
// would not resolve.
func TestSubmitPredefinedArgsListed(t *testing.T) {
	kr, err := kaniko.New(kaniko.WithExecutor(testenv.Executor(t)))
	if err != nil {
		t.Fatal(err)
	}
	names := slices.DeleteFunc(dockerfile.PlatformArgs(), func(k string) bool { return k == "TARGETSTAGE" })
	e := newEnv(t, jobs.WithRunner("listed", lister{kr, names}))
	src := "FROM scratch AS a\nCOPY hello.txt /hello.txt\nFROM ${TARGETSTAGE}\n"
	spec := api.BuildSpec{Destinations: []string{e.dest("listed")}, Runner: "listed", Target: "a"}
	_, err = e.m.Submit(context.Background(), jobs.SubmitRequest{Owner: "alice", Spec: spec},
		bytes.NewReader(contextTar(t, file{"Dockerfile", src}, file{"hello.txt", "hi"})))
	var se *jobs.SpecError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "ARG TARGETSTAGE is predefined by BuildKit but not by this runner") {
		t.Fatalf("Submit(FROM ${TARGETSTAGE}, runner predefining all but TARGETSTAGE) = %v; want a *SpecError naming TARGETSTAGE", err)
	}
}
