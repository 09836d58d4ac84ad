package jobs_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/archive"
	"github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testmanager"
	"github.com/buildgw/buildgw/jobs"
	"github.com/buildgw/buildgw/workspace"
)

// env is a Manager running real kaniko builds that push to an in-memory
// registry on loopback.
type env struct {
	m        *jobs.Manager
	stateDir string
	l        workspace.Layout
	reg      string // registry host:port
}

func newEnv(t *testing.T, opts ...jobs.Option) *env {
	t.Helper()
	te := testmanager.New(t, testmanager.Options{Builder: opts})
	return &env{m: te.M, stateDir: te.StateDir, l: te.Layout, reg: te.Registry}
}

// dest returns a destination in the test registry.
func (e *env) dest(repo string) string { return e.reg + "/test/" + repo + ":v1" }

type file struct {
	name, body string
}

// contextTar returns a gzip-compressed tar of files.
func contextTar(t testing.TB, files ...file) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, f := range files {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: int64(len(f.body)), ModTime: time.Unix(1700000000, 0)}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(f.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// scratchContext is the fastest build kaniko can do: no base image, one
// COPY.
func scratchContext(t testing.TB, content string) []byte {
	return contextTar(t,
		file{"Dockerfile", "FROM scratch\nCOPY hello.txt /hello.txt\n"},
		file{"hello.txt", content})
}

// busyboxContext runs a shell command on the busybox base image.
func busyboxContext(t testing.TB, base, run string) []byte {
	return contextTar(t, file{"Dockerfile", "FROM " + base + "\nRUN " + run + "\n"})
}

func (e *env) submit(t *testing.T, owner string, spec api.BuildSpec, ctxArchive []byte) *jobs.Job {
	t.Helper()
	j, err := e.m.Submit(context.Background(), jobs.SubmitRequest{Owner: owner, Spec: spec}, bytes.NewReader(ctxArchive))
	if err != nil {
		t.Fatalf("Submit(%q) = %v, want no error", spec.Destinations, err)
	}
	return j
}

// wait waits for j to end, up to d scaled by testenv.Scale.
func wait(t *testing.T, j *jobs.Job, d time.Duration) api.Build {
	t.Helper()
	d = testenv.Scale(d)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := jobs.Wait(ctx, j); err != nil {
		var log bytes.Buffer
		j.Log.WriteTo(context.Background(), &log, 0, false)
		t.Fatalf("job %s still %s after %s; log:\n%s", j.ID, j.Status(), d, log.String())
	}
	return j.Snapshot()
}

func logOf(t *testing.T, j *jobs.Job) string {
	t.Helper()
	var b bytes.Buffer
	if err := j.Log.WriteTo(context.Background(), &b, 0, false); err != nil {
		t.Fatalf("reading log of %s: %v", j.ID, err)
	}
	return b.String()
}

// workspaces lists the job directories left under the state directory.
func (e *env) workspaces(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir(e.l.Jobs)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, en := range ents {
		out = append(out, en.Name())
	}
	return out
}

func (e *env) workspaceExists(t *testing.T, id string) bool {
	t.Helper()
	_, err := os.Lstat(filepath.Join(e.l.Jobs, id))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

func registryDigest(t *testing.T, ref string) string {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	d, err := remote.Head(r)
	if err != nil {
		t.Fatalf("remote.Head(%q) = %v", ref, err)
	}
	return d.Digest.String()
}

func TestManagerBuilds(t *testing.T) {
	e := newEnv(t)
	base := testenv.Busybox(t, e.reg)
	tests := []struct {
		name       string
		spec       api.BuildSpec
		ctx        []byte
		wantStatus api.Status
		wantErr    string // substring of the job's error
		wantLog    []string
	}{
		{
			name:       "scratch copy",
			spec:       api.BuildSpec{Destinations: []string{e.dest("scratch")}},
			ctx:        scratchContext(t, "hello\n"),
			wantStatus: api.StatusSucceeded,
			wantLog:    []string{"#buildgw accepted: 2 files", "COPY hello.txt /hello.txt", "#buildgw pushed sha256:"},
		},
		{
			name: "two destinations and a dockerfile in a subdirectory",
			spec: api.BuildSpec{Destinations: []string{e.dest("two-a"), e.dest("two-b")}, Dockerfile: "build/Containerfile"},
			ctx: contextTar(t,
				file{"build/Containerfile", "FROM scratch\nARG WHAT\nLABEL what=$WHAT\nCOPY hello.txt /\n"},
				file{"hello.txt", "two\n"}),
			wantStatus: api.StatusSucceeded,
			wantLog:    []string{"#buildgw pushing " + e.dest("two-a"), "#buildgw pushing " + e.dest("two-b")},
		},
		{
			name:       "failing RUN",
			spec:       api.BuildSpec{Destinations: []string{e.dest("fail")}},
			ctx:        busyboxContext(t, base, "echo about to fail; exit 3"),
			wantStatus: api.StatusFailed,
			wantErr:    "kaniko failed",
			wantLog:    []string{"about to fail", "#buildgw failed: kaniko failed"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			j := e.submit(t, "alice", tc.spec, tc.ctx)
			b := wait(t, j, 2*time.Minute)
			if b.Status != tc.wantStatus {
				t.Fatalf("Submit(%q) ended %v (error %q), want %v; log:\n%s", tc.name, b.Status, b.Error, tc.wantStatus, logOf(t, j))
			}
			if !strings.Contains(b.Error, tc.wantErr) || (tc.wantErr == "") != (b.Error == "") {
				t.Errorf("Submit(%q) error = %q, want one containing %q", tc.name, b.Error, tc.wantErr)
			}
			if b.StartedAt == nil || b.FinishedAt == nil || b.FinishedAt.Before(*b.StartedAt) || b.StartedAt.Before(b.CreatedAt) {
				t.Errorf("Submit(%q) times = created %v started %v finished %v, want ordered", tc.name, b.CreatedAt, b.StartedAt, b.FinishedAt)
			}
			log := logOf(t, j)
			for _, w := range tc.wantLog {
				if !strings.Contains(log, w) {
					t.Errorf("log of %q lacks %q:\n%s", tc.name, w, log)
				}
			}
			if tc.wantStatus == api.StatusSucceeded {
				if !strings.HasPrefix(b.Digest, "sha256:") {
					t.Fatalf("Submit(%q) digest = %q, want sha256:...", tc.name, b.Digest)
				}
				for _, d := range tc.spec.Destinations {
					if got := registryDigest(t, d); got != b.Digest {
						t.Errorf("registry digest of %s = %v, want the job's %v", d, got, b.Digest)
					}
				}
			} else if b.Digest != "" {
				t.Errorf("Submit(%q) digest = %q, want none", tc.name, b.Digest)
			}
			// A final job leaves no workspace behind.
			if e.workspaceExists(t, j.ID) {
				t.Errorf("workspace of %s (%v) still exists", j.ID, b.Status)
			}
		})
	}
}

// waitStatus polls until j reaches status s, up to d scaled.
func waitStatus(t *testing.T, j *jobs.Job, s api.Status, d time.Duration) {
	t.Helper()
	d = testenv.Scale(d)
	deadline := time.Now().Add(d)
	for j.Status() != s {
		if time.Now().After(deadline) {
			t.Fatalf("job %s is %v after %s, want %v; log:\n%s", j.ID, j.Status(), d, s, logOf(t, j))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitLog polls until j's log holds s, up to d scaled.
func waitLog(t *testing.T, j *jobs.Job, s string, d time.Duration) {
	t.Helper()
	d = testenv.Scale(d)
	deadline := time.Now().Add(d)
	for !strings.Contains(logOf(t, j), s) {
		if time.Now().After(deadline) {
			t.Fatalf("log of %s lacks %q after %s:\n%s", j.ID, s, d, logOf(t, j))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestManagerQueueAndCancel(t *testing.T) {
	e := newEnv(t, jobs.WithConcurrency(1))
	base := testenv.Busybox(t, e.reg)

	long := e.submit(t, "alice", api.BuildSpec{Destinations: []string{e.dest("long")}}, busyboxContext(t, base, "sleep 30"))
	waitStatus(t, long, api.StatusRunning, time.Minute)
	// The sandbox is really executing the step, not just starting.
	waitLog(t, long, "Running: [/bin/sh -c sleep 30]", time.Minute)

	queued := e.submit(t, "alice", api.BuildSpec{Destinations: []string{e.dest("queued")}}, scratchContext(t, "q"))
	// With one worker busy, the second job must not start.
	time.Sleep(time.Second)
	if got := queued.Status(); got != api.StatusQueued {
		t.Fatalf("second job with concurrency 1 is %v while the first runs, want %v", got, api.StatusQueued)
	}
	if !e.workspaceExists(t, queued.ID) {
		t.Fatalf("workspace of queued job %s does not exist", queued.ID)
	}

	tests := []struct {
		name        string
		job         *jobs.Job
		immediate   bool // final as soon as Cancel returns
		wantError   string
		wantLogLine string
	}{
		{"queued", queued, true, "cancelled before it started", "#buildgw cancelled before it started"},
		{"running", long, false, "cancelled", "#buildgw cancelled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			j, err := e.m.Cancel("alice", tc.job.ID)
			if err != nil || j != tc.job {
				t.Fatalf("Cancel(%q) = %v, %v, want the job, nil", tc.job.ID, j, err)
			}
			if tc.immediate {
				if got := tc.job.Status(); got != api.StatusCancelled {
					t.Fatalf("Cancel(%q) of a queued job left it %v, want %v", tc.job.ID, got, api.StatusCancelled)
				}
			}
			b := wait(t, tc.job, 30*time.Second)
			if took := time.Since(start); took > testenv.Scale(20*time.Second) {
				t.Errorf("Cancel(%q) took %s to stop the build, want it quick", tc.job.ID, took)
			}
			if b.Status != api.StatusCancelled || b.Error != tc.wantError {
				t.Errorf("Cancel(%q) = status %v error %q, want %v %q", tc.job.ID, b.Status, b.Error, api.StatusCancelled, tc.wantError)
			}
			if e.workspaceExists(t, tc.job.ID) {
				t.Errorf("workspace of cancelled job %s (%s) still exists", tc.job.ID, tc.name)
			}
			if log := logOf(t, tc.job); !strings.Contains(log, tc.wantLogLine) {
				t.Errorf("log of cancelled job lacks %q:\n%s", tc.wantLogLine, log)
			}
			if _, err := e.m.Cancel("alice", tc.job.ID); !errors.Is(err, jobs.ErrFinished) {
				t.Errorf("second Cancel(%q) = %v, want %v", tc.job.ID, err, jobs.ErrFinished)
			}
		})
	}

	// The worker is free again: the next job runs to the end.
	next := e.submit(t, "alice", api.BuildSpec{Destinations: []string{e.dest("next")}}, scratchContext(t, "n"))
	if b := wait(t, next, time.Minute); b.Status != api.StatusSucceeded {
		t.Errorf("job after cancellations ended %v (%q), want %v", b.Status, b.Error, api.StatusSucceeded)
	}
	if ws := e.workspaces(t); len(ws) != 0 {
		t.Errorf("workspaces left after all jobs ended: %q, want none", ws)
	}
}

func TestManagerJobTimeout(t *testing.T) {
	e := newEnv(t, jobs.WithJobTimeout(2*time.Second))
	base := testenv.Busybox(t, e.reg)
	start := time.Now()
	j := e.submit(t, "alice", api.BuildSpec{Destinations: []string{e.dest("slow")}}, busyboxContext(t, base, "sleep 30"))
	b := wait(t, j, time.Minute)
	if took := time.Since(start); took > testenv.Scale(20*time.Second) {
		t.Errorf("job with a 2s timeout took %s, want it killed soon after 2s", took)
	}
	if b.Status != api.StatusFailed || !strings.Contains(b.Error, "timeout") {
		t.Errorf("job with a 2s timeout = %v %q, want %v with a timeout error", b.Status, b.Error, api.StatusFailed)
	}
	if log := logOf(t, j); !strings.Contains(log, "#buildgw timeout") {
		t.Errorf("log of timed-out job lacks the timeout line:\n%s", log)
	}
	if e.workspaceExists(t, j.ID) {
		t.Errorf("workspace of timed-out job %s still exists", j.ID)
	}
}

func TestManagerOwnership(t *testing.T) {
	e := newEnv(t)
	ctx := scratchContext(t, "x")
	a1 := e.submit(t, "alice", api.BuildSpec{Destinations: []string{e.dest("a1")}}, ctx)
	b1 := e.submit(t, "bob", api.BuildSpec{Destinations: []string{e.dest("b1")}}, ctx)
	a2 := e.submit(t, "alice", api.BuildSpec{Destinations: []string{e.dest("a2")}}, ctx)

	ids := func(js []*jobs.Job) []string {
		var out []string
		for _, j := range js {
			out = append(out, j.ID)
		}
		return out
	}
	listTests := []struct {
		owner string
		want  []string
	}{
		{"alice", []string{a2.ID, a1.ID}},
		{"bob", []string{b1.ID}},
		{"carol", nil},
	}
	for _, tc := range listTests {
		if got := ids(e.m.List(tc.owner)); strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("List(%q) = %q, want %q", tc.owner, got, tc.want)
		}
	}

	getTests := []struct {
		owner, id string
		want      *jobs.Job
		wantErr   error
	}{
		{"alice", a1.ID, a1, nil},
		{"bob", b1.ID, b1, nil},
		{"bob", a1.ID, nil, jobs.ErrNotFound},
		{"alice", b1.ID, nil, jobs.ErrNotFound},
		{"alice", "nosuchbuild", nil, jobs.ErrNotFound},
		{"", a1.ID, nil, jobs.ErrNotFound},
	}
	for _, tc := range getTests {
		j, err := e.m.Get(tc.owner, tc.id)
		if j != tc.want || !errors.Is(err, tc.wantErr) {
			t.Errorf("Get(%q, %q) = %v, %v, want %v, %v", tc.owner, tc.id, j, err, tc.want, tc.wantErr)
		}
		if tc.wantErr != nil {
			if _, err := e.m.Cancel(tc.owner, tc.id); !errors.Is(err, tc.wantErr) {
				t.Errorf("Cancel(%q, %q) = %v, want %v", tc.owner, tc.id, err, tc.wantErr)
			}
		}
	}
	for _, j := range []*jobs.Job{a1, b1, a2} {
		if b := wait(t, j, time.Minute); b.Status != api.StatusSucceeded {
			t.Errorf("job %s ended %v (%q), want %v", j.ID, b.Status, b.Error, api.StatusSucceeded)
		}
	}
}

func TestManagerIdempotency(t *testing.T) {
	e := newEnv(t)
	good := scratchContext(t, "idem")
	spec := func(repo string) api.BuildSpec { return api.BuildSpec{Destinations: []string{e.dest(repo)}} }
	submit := func(owner, key string, spec api.BuildSpec, r io.Reader) (*jobs.Job, error) {
		return e.m.Submit(context.Background(), jobs.SubmitRequest{Owner: owner, Spec: spec, IdempotencyKey: key}, r)
	}

	t.Run("sequential", func(t *testing.T) {
		j1, err := submit("seq", "key-1", spec("seq"), bytes.NewReader(good))
		if err != nil {
			t.Fatalf("Submit(key-1) = %v", err)
		}
		j2, err := submit("seq", "key-1", spec("seq"), bytes.NewReader(good))
		if err != nil || j2 != j1 {
			t.Fatalf("second Submit(key-1) = %v, %v, want job %s", j2, err, j1.ID)
		}
		// Another key, or the same key of another owner, is another build.
		j3, err := submit("seq", "key-2", spec("seq"), bytes.NewReader(good))
		if err != nil || j3 == j1 {
			t.Fatalf("Submit(key-2) = %v, %v, want a new job", j3, err)
		}
		j4, err := submit("other", "key-1", spec("seq"), bytes.NewReader(good))
		if err != nil || j4 == j1 {
			t.Fatalf("Submit(key-1) by another owner = %v, %v, want a new job", j4, err)
		}
		if n := len(e.m.List("seq")); n != 2 {
			t.Errorf("List(seq) has %d builds, want 2", n)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		// The first attempt is still uploading while the retries arrive.
		pr, pw := io.Pipe()
		defer pr.Close()
		const n = 8
		jobs := make([]*jobs.Job, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			jobs[0], errs[0] = submit("conc", "key", spec("conc"), pr)
		}()
		time.Sleep(50 * time.Millisecond)
		for i := 1; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				jobs[i], errs[i] = submit("conc", "key", spec("conc"), bytes.NewReader(good))
			}()
		}
		time.Sleep(100 * time.Millisecond)
		go func() {
			pw.Write(good)
			pw.Close()
		}()
		wg.Wait()
		for i := range n {
			if errs[i] != nil || jobs[i] == nil || jobs[i] != jobs[0] {
				t.Errorf("concurrent Submit #%d = %v, %v, want job %v", i, jobs[i], errs[i], jobs[0])
			}
		}
		if l := e.m.List("conc"); len(l) != 1 {
			t.Errorf("List(conc) has %d builds after %d concurrent submits with one key, want 1", len(l), n)
		}
	})

	t.Run("failed first attempt", func(t *testing.T) {
		_, err := submit("retry", "key", spec("retry"), bytes.NewReader(good[:len(good)/2]))
		var ae *archive.Error
		if !errors.As(err, &ae) {
			t.Fatalf("Submit(truncated archive) = %v, want an *archive.Error", err)
		}
		j, err := submit("retry", "key", spec("retry"), bytes.NewReader(good))
		if err != nil {
			t.Fatalf("retry Submit after a failed attempt = %v, want success", err)
		}
		if l := e.m.List("retry"); len(l) != 1 || l[0] != j {
			t.Errorf("List(retry) = %v, want just the retried job", l)
		}
		if b := wait(t, j, time.Minute); b.Status != api.StatusSucceeded {
			t.Errorf("retried job ended %v (%q), want %v", b.Status, b.Error, api.StatusSucceeded)
		}
	})
}

func TestManagerRejects(t *testing.T) {
	e := newEnv(t)
	good := scratchContext(t, "x")
	var abs bytes.Buffer
	tw := tar.NewWriter(&abs)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "/etc/evil", Mode: 0o644})
	tw.Close()
	tests := []struct {
		name     string
		spec     api.BuildSpec
		ctx      []byte
		wantSpec bool   // a *jobs.SpecError, else an *archive.Error
		wantIn   string // substring of the error
	}{
		{"truncated gzip", api.BuildSpec{Destinations: []string{e.dest("r")}}, good[:len(good)-20], false, "truncated"},
		{"not an archive", api.BuildSpec{Destinations: []string{e.dest("r")}}, []byte("hello, world, this is not a tar archive at all"), false, "context"},
		{"absolute entry", api.BuildSpec{Destinations: []string{e.dest("r")}}, abs.Bytes(), false, "/etc/evil"},
		{"missing dockerfile", api.BuildSpec{Destinations: []string{e.dest("r")}, Dockerfile: "nope/Dockerfile"}, good, false, "does not exist"},
		{"bad spec", api.BuildSpec{Destinations: []string{"busybox"}}, good, true, "destinations"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			j, err := e.m.Submit(context.Background(), jobs.SubmitRequest{Owner: "alice", Spec: tc.spec}, bytes.NewReader(tc.ctx))
			var (
				ae *archive.Error
				se *jobs.SpecError
			)
			if tc.wantSpec && !errors.As(err, &se) || !tc.wantSpec && !errors.As(err, &ae) {
				t.Fatalf("Submit(%q) = %v, %v, want a rejection of the spec (%v) or archive", tc.name, j, err, tc.wantSpec)
			}
			if !strings.Contains(err.Error(), tc.wantIn) {
				t.Errorf("Submit(%q) = %q, want it to contain %q", tc.name, err, tc.wantIn)
			}
			if ws := e.workspaces(t); len(ws) != 0 {
				t.Errorf("Submit(%q) left workspaces %q, want none", tc.name, ws)
			}
			if logs, _ := os.ReadDir(e.l.Logs); len(logs) != 0 {
				t.Errorf("Submit(%q) left %d logs, want none", tc.name, len(logs))
			}
		})
	}
	if l := e.m.List("alice"); len(l) != 0 {
		t.Errorf("List after rejected submits = %d builds, want 0", len(l))
	}
}

// A grant's MaxConcurrent holds an owner's further builds in the queue
// without holding up other owners, and its Timeout bounds the build.
func TestManagerGrants(t *testing.T) {
	e := newEnv(t, jobs.WithConcurrency(2))
	base := testenv.Busybox(t, e.reg)
	grant := func(g jobs.Grant) jobs.AuthorizeFunc {
		return func(*jobs.ValidSpec, []byte, *dockerfile.Analysis) (jobs.Grant, error) { return g, nil }
	}
	submit := func(owner, repo, run string, g jobs.Grant) *jobs.Job {
		t.Helper()
		j, err := e.m.Submit(context.Background(), jobs.SubmitRequest{
			Owner: owner, Spec: api.BuildSpec{Destinations: []string{e.dest(repo)}}, Authorize: grant(g),
		}, bytes.NewReader(busyboxContext(t, base, run)))
		if err != nil {
			t.Fatalf("Submit(%s) = %v, want nil", repo, err)
		}
		return j
	}
	one := jobs.Grant{MaxConcurrent: 1}
	first := submit("alice", "a1", "sleep 30", one)
	waitStatus(t, first, api.StatusRunning, time.Minute)
	second := submit("alice", "a2", "true", one)
	other := submit("bob", "b1", "true", jobs.Grant{})
	if b := wait(t, other, time.Minute); b.Status != api.StatusSucceeded {
		t.Fatalf("bob's build = %s (%s), want succeeded while alice's first runs", b.Status, b.Error)
	}
	if s := second.Status(); s != api.StatusQueued {
		t.Errorf("alice's second build = %s while her first runs, want queued (max_concurrent 1)", s)
	}
	if _, err := e.m.Cancel("alice", first.ID); err != nil {
		t.Fatal(err)
	}
	if b := wait(t, second, time.Minute); b.Status != api.StatusSucceeded {
		t.Errorf("alice's second build = %s (%s), want succeeded once the first ended", b.Status, b.Error)
	}

	slow := submit("carol", "c1", "sleep 30", jobs.Grant{Timeout: 2 * time.Second})
	if b := wait(t, slow, time.Minute); b.Status != api.StatusFailed || !strings.Contains(b.Error, "timeout") {
		t.Errorf("build with a 2s grant = %s (%q), want failed with a timeout", b.Status, b.Error)
	}

	// A refusal stops the submission before any of the context is read.
	deny := func(*jobs.ValidSpec, []byte, *dockerfile.Analysis) (jobs.Grant, error) {
		return jobs.Grant{}, &jobs.DeniedError{Rule: "r", Reason: `policy rule "r" refuses`}
	}
	_, err := e.m.Submit(context.Background(), jobs.SubmitRequest{
		Owner: "dave", Spec: api.BuildSpec{Destinations: []string{e.dest("d1")}}, Authorize: deny,
	}, iotest.ErrReader(errors.New("context must not be read")))
	var de *jobs.DeniedError
	if !errors.As(err, &de) {
		t.Errorf("Submit(denied) = %v, want a *DeniedError", err)
	}
}

// TestManagerTenantRunning: the bound on running builds per identity
// (WithOwnerConcurrency) counts a tenant's builds from any of its
// identities, one per branch here, and holds them without holding up
// another tenant.
func TestManagerTenantRunning(t *testing.T) {
	e := newEnv(t, jobs.WithConcurrency(2), jobs.WithOwnerConcurrency(1))
	base := testenv.Busybox(t, e.reg)
	submit := func(project, ref, run string) *jobs.Job {
		t.Helper()
		authorize := func(*jobs.ValidSpec, []byte, *dockerfile.Analysis) (jobs.Grant, error) {
			return jobs.Grant{LimitTenant: "project " + project}, nil
		}
		j, err := e.m.Submit(context.Background(), jobs.SubmitRequest{
			Owner: "gitlab:project_path:" + project + ":ref:" + ref, Spec: api.BuildSpec{Destinations: []string{e.dest(ref)}}, Authorize: authorize,
		}, bytes.NewReader(busyboxContext(t, base, run)))
		if err != nil {
			t.Fatalf("Submit(%s %s) = %v, want nil", project, ref, err)
		}
		return j
	}
	// Longer than the rest of the test can take: it is canceled.
	first := submit("g/a", "b1", "sleep 600")
	waitStatus(t, first, api.StatusRunning, time.Minute)
	second := submit("g/a", "b2", "true")
	other := submit("g/b", "b1", "true")
	if b := wait(t, other, time.Minute); b.Status != api.StatusSucceeded {
		t.Fatalf("g/b's build = %s (%s), want succeeded while g/a's first runs", b.Status, b.Error)
	}
	if s := second.Status(); s != api.StatusQueued {
		t.Errorf("g/a's build of branch b2 = %s while branch b1's runs, want queued (one build per tenant)", s)
	}
	if _, err := e.m.Cancel(first.Owner, first.ID); err != nil {
		t.Fatal(err)
	}
	if b := wait(t, second, time.Minute); b.Status != api.StatusSucceeded {
		t.Errorf("g/a's build of branch b2 = %s (%s), want succeeded once b1's ended", b.Status, b.Error)
	}
}

// TestJobSnapshotJSON: the status kept encoded between changes is always
// the job's current Snapshot, through every state to the final one.
func TestJobSnapshotJSON(t *testing.T) {
	e := newEnv(t)
	j := e.submit(t, "alice", api.BuildSpec{Destinations: []string{e.dest("snap")}}, scratchContext(t, "snap"))
	seen := map[api.Status]bool{}
	check := func() bool {
		t.Helper()
		before := j.Snapshot()
		got, err := j.SnapshotJSON()
		if err != nil {
			t.Fatalf("SnapshotJSON() = %v", err)
		}
		if after := j.Snapshot(); after.Status != before.Status || after.Digest != before.Digest {
			return false // changed while being read: try again
		}
		want, err := json.Marshal(before)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("SnapshotJSON() in state %s = %s, want %s", before.Status, got, want)
		}
		seen[before.Status] = true
		return before.Status.Final()
	}
	d := testenv.Scale(2 * time.Minute)
	deadline := time.Now().Add(d)
	for !check() {
		if time.Now().After(deadline) {
			t.Fatalf("build still %s after %s", j.Status(), d)
		}
		time.Sleep(time.Millisecond)
	}
	if !seen[api.StatusSucceeded] {
		t.Errorf("states seen = %v, want it to end succeeded; log:\n%s", seen, logOf(t, j))
	}
}

// seenObserver records, for each final state it hears of, what anyone else
// could see of the job at that moment.
type seenObserver struct {
	mu   sync.Mutex
	seen map[string][2]api.Status // job id: {what it was told, what the job showed}
}

func (o *seenObserver) Accepted(*jobs.Job, int64) {}

func (o *seenObserver) Finished(j *jobs.Job, b api.Build) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seen[j.ID] = [2]api.Status{b.Status, j.Snapshot().Status}
}

// An observer (the audit log) hears of a job's end before a status poll
// can see it, so a client that sees a build final finds its audit record.
func TestObserverHearsFirst(t *testing.T) {
	o := &seenObserver{seen: map[string][2]api.Status{}}
	e := newEnv(t, jobs.WithConcurrency(1), jobs.WithObserver(o))
	base := testenv.Busybox(t, e.reg)

	long := e.submit(t, "alice", api.BuildSpec{Destinations: []string{e.dest("long")}}, busyboxContext(t, base, "sleep 30"))
	waitStatus(t, long, api.StatusRunning, time.Minute)
	queued := e.submit(t, "alice", api.BuildSpec{Destinations: []string{e.dest("queued")}}, scratchContext(t, "q"))
	if _, err := e.m.Cancel("alice", queued.ID); err != nil {
		t.Fatalf("Cancel(%q) = %v", queued.ID, err)
	}
	if _, err := e.m.Cancel("alice", long.ID); err != nil {
		t.Fatalf("Cancel(%q) = %v", long.ID, err)
	}
	ok := e.submit(t, "alice", api.BuildSpec{Destinations: []string{e.dest("ok")}}, scratchContext(t, "ok"))
	wait(t, long, time.Minute)
	wait(t, ok, time.Minute)

	tests := []struct {
		name string
		job  *jobs.Job
		want api.Status
	}{
		{"cancelled while queued", queued, api.StatusCancelled},
		{"cancelled while running", long, api.StatusCancelled},
		{"succeeded", ok, api.StatusSucceeded},
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, tt := range tests {
		got, heard := o.seen[tt.job.ID]
		if !heard {
			t.Errorf("%s: observer never heard of job %s", tt.name, tt.job.ID)
			continue
		}
		if got[0] != tt.want || got[1].Final() {
			t.Errorf("%s: Finished got %v while the job showed %v, want %v while it showed a state not final", tt.name, got[0], got[1], tt.want)
		}
	}
}
