package gateway_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/jobs/store"
	"github.com/buildgw/buildgw/workspace"
)

const allPolicy = "rules:\n  - name: all\n    match: {kind: token}\n    allow:\n      destinations: [\"127.0.0.1:1/**\"]\n"

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestSecondGatewayTouchesNothing: a second gateway on a state directory
// in use fails at once, naming the lock, and reaps nothing of the first's:
// a running dind job's daemon and directory survive.
func TestSecondGatewayTouchesNothing(t *testing.T) {
	testenv.RequireSandbox(t)
	cfg := testConfig(t, "bgw_test_lock", allPolicy)
	g1, err := gateway.New(cfg, discard())
	if err != nil {
		t.Fatal(err)
	}
	serve(t, g1)

	// What a dind build of the first gateway has while it runs: the job's
	// dind directory and a daemon process whose command line names it.
	dindDir := filepath.Join(workspace.NewLayout(cfg.StateDir).Jobs, "running-job", "dind")
	if err := os.MkdirAll(dindDir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dindDir, "daemon.json"), "{}")
	daemon := exec.Command("sh", "-c", "sleep 600", filepath.Join(dindDir, "dockerd"))
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { daemon.Wait(); close(exited) }()
	t.Cleanup(func() { daemon.Process.Kill(); <-exited })

	start := time.Now()
	g2, err := gateway.New(cfg, discard())
	took := time.Since(start)
	if err == nil {
		serve(t, g2)
		t.Fatal("second gateway.New on a state directory in use = a gateway, want an error")
	}
	if !strings.Contains(err.Error(), "in use") || !strings.Contains(err.Error(), "buildgw.lock") {
		t.Errorf("second gateway.New = %q, want it to say the state directory is in use, naming the lock file", err)
	}
	if took > testenv.Scale(3*time.Second) {
		t.Errorf("second gateway.New took %s to fail, want at once", took)
	}
	select {
	case <-exited:
		t.Errorf("the first gateway's dind daemon was killed by the second gateway's start")
	default:
	}
	if _, err := os.Stat(filepath.Join(dindDir, "daemon.json")); err != nil {
		t.Errorf("the first gateway's dind directory after the second's start: %v, want it intact", err)
	}
	resp, err := http.Get(g1.URL() + "/readyz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("first gateway's /readyz after the second's start = %v, %v, want 200", resp, err)
	}
	if resp != nil {
		resp.Body.Close()
	}
}

// stopped runs a gateway on cfg until it has started and stopped again,
// so that its state directory is a used one.
func stopped(t *testing.T, cfg gateway.Config) {
	t.Helper()
	g, err := gateway.New(cfg, discard())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.Serve(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestLostJobStore: a used state directory whose jobs.db was deleted,
// emptied or damaged stops start-up with an error naming the file and the
// way out, and touches no workspace; --accept-empty-store starts afresh.
func TestLostJobStore(t *testing.T) {
	testenv.RequireSandbox(t)
	tests := []struct {
		name    string
		lose    func(db string) error
		want    []string
		accepts bool // whether AcceptEmptyStore starts anyway
	}{
		{"deleted", os.Remove, []string{"is missing", "--accept-empty-store", "backup"}, true},
		{"emptied", func(db string) error { return os.Truncate(db, 0) }, []string{"is empty", "--accept-empty-store", "backup"}, true},
		{"truncated", func(db string) error { return os.Truncate(db, 8<<10) }, []string{"damaged", "--accept-empty-store", "backup"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, "bgw_test_lost", allPolicy)
			stopped(t, cfg)
			// A queued build and a log, as a previous run left them.
			ws := filepath.Join(workspace.NewLayout(cfg.StateDir).Jobs, "queuedjob")
			os.MkdirAll(filepath.Join(ws, "context"), 0o755)
			writeFile(t, filepath.Join(ws, "context", "Dockerfile"), "FROM scratch\n")
			writeFile(t, workspace.NewLayout(cfg.StateDir).Log("queuedjob"), "queued\n")
			db := workspace.NewLayout(cfg.StateDir).JobStore
			if err := tc.lose(db); err != nil {
				t.Fatal(err)
			}

			g, err := gateway.New(cfg, discard())
			if err == nil {
				serve(t, g)
				t.Fatalf("gateway.New with jobs.db %s = a gateway, want an error", tc.name)
			}
			for _, w := range append(tc.want, db) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("gateway.New with jobs.db %s = %q, want it to name %q", tc.name, err, w)
				}
			}
			if _, err := os.Stat(filepath.Join(ws, "context", "Dockerfile")); err != nil {
				t.Errorf("queued workspace after a refused start: %v, want it untouched", err)
			}

			if !tc.accepts {
				return
			}
			cfg.AcceptEmptyStore = true
			g, err = gateway.New(cfg, discard())
			if err != nil {
				t.Fatalf("gateway.New with AcceptEmptyStore = %v, want a gateway", err)
			}
			serve(t, g)
		})
	}
}

// TestBackup copies the job store of a running gateway, and of a stopped
// one, and each copy holds the recorded build.
func TestBackup(t *testing.T) {
	testenv.RequireSandbox(t)
	cfg := testConfig(t, "bgw_test_backup", allPolicy)
	os.MkdirAll(cfg.StateDir, 0o711)
	st, err := store.Open(workspace.NewLayout(cfg.StateDir).JobStore)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	rec := &store.Record{ID: "b1", Owner: "ci", Status: api.StatusSucceeded, Digest: "sha256:abc", CreatedAt: now, FinishedAt: now,
		Spec: api.BuildSpec{Destinations: []string{"127.0.0.1:1/a:1"}}, LogPath: workspace.NewLayout(cfg.StateDir).Log("b1")}
	if err := st.Put(rec); err != nil {
		t.Fatal(err)
	}
	st.Close()

	check := func(when, out string) {
		t.Helper()
		fi, err := os.Stat(out)
		if err != nil {
			t.Fatalf("backup %s: %v", when, err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("backup %s has mode %v, want 0600", when, fi.Mode().Perm())
		}
		b, err := store.OpenReadOnly(out)
		if err != nil {
			t.Fatalf("opening the backup %s: %v", when, err)
		}
		defer b.Close()
		if r, err := b.Get("b1"); err != nil || r.Digest != "sha256:abc" {
			t.Errorf("backup %s: Get(b1) = %+v, %v, want the recorded build", when, r, err)
		}
	}

	g, err := gateway.New(cfg, discard())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx) }()
	waitFor(t, func() bool { _, err := os.Stat(filepath.Join(cfg.StateDir, "admin", "backup.sock")); return err == nil })
	running := filepath.Join(t.TempDir(), "running.db")
	if _, err := gateway.BackupStore(context.Background(), cfg.StateDir, running); err != nil {
		t.Fatalf("BackupStore of a running gateway = %v", err)
	}
	check("of a running gateway", running)
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}

	idle := filepath.Join(t.TempDir(), "stopped.db")
	if _, err := gateway.BackupStore(context.Background(), cfg.StateDir, idle); err != nil {
		t.Fatalf("BackupStore of a stopped gateway = %v", err)
	}
	check("of a stopped gateway", idle)

	// Nothing to copy is an error, and leaves no file.
	empty := testenv.StateDir(t)
	none := filepath.Join(t.TempDir(), "none.db")
	if _, err := gateway.BackupStore(context.Background(), empty, none); err == nil {
		t.Errorf("BackupStore of a state directory without jobs.db = nil error, want one")
	}
	if _, err := os.Stat(none); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed backup left %s: %v", none, err)
	}
}

// TestBackupReplacesFile: a backup over an existing file, of any mode, or
// over a symbolic link, leaves a regular file of mode 0600 there, and the
// link's target as it was; a failed backup leaves an existing file as it
// was.
func TestBackupReplacesFile(t *testing.T) {
	dir := testenv.StateDir(t)
	st, err := store.Open(workspace.NewLayout(dir).JobStore)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if err := st.Put(&store.Record{ID: "b1", Owner: "ci", Status: api.StatusSucceeded, Digest: "sha256:abc", CreatedAt: now, FinishedAt: now}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	const old = "an older backup"
	for _, tc := range []struct {
		name string
		// prepare makes what is at out before the backup, and returns the
		// file that must stay as it was, if any.
		prepare func(t *testing.T, out string) string
	}{
		{"no file", func(*testing.T, string) string { return "" }},
		{"a file of mode 0644", func(t *testing.T, out string) string {
			if err := os.WriteFile(out, []byte(old), 0o644); err != nil {
				t.Fatal(err)
			}
			return ""
		}},
		{"a symbolic link", func(t *testing.T, out string) string {
			target := filepath.Join(t.TempDir(), "elsewhere")
			if err := os.WriteFile(target, []byte(old), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, out); err != nil {
				t.Fatal(err)
			}
			return target
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "jobs.db")
			kept := tc.prepare(t, out)
			if _, err := gateway.BackupStore(context.Background(), dir, out); err != nil {
				t.Fatalf("BackupStore(%s) = %v", out, err)
			}
			fi, err := os.Lstat(out)
			if err != nil {
				t.Fatal(err)
			}
			if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
				t.Errorf("BackupStore(%s) left mode %v, want a regular file of mode 0600", out, fi.Mode())
			}
			b, err := store.OpenReadOnly(out)
			if err != nil {
				t.Fatalf("opening the backup: %v", err)
			}
			defer b.Close()
			if r, err := b.Get("b1"); err != nil || r.Digest != "sha256:abc" {
				t.Errorf("backup: Get(b1) = %+v, %v, want the recorded build", r, err)
			}
			if kept != "" {
				got, err := os.ReadFile(kept)
				fi, serr := os.Stat(kept)
				if err != nil || string(got) != old || serr != nil || fi.Mode().Perm() != 0o644 {
					t.Errorf("BackupStore(%s) changed the link's target %s: %d bytes, mode %v, want %q, mode 0644", out, kept, len(got), fi.Mode(), old)
				}
			}
			if ents, _ := os.ReadDir(filepath.Dir(out)); len(ents) != 1 {
				t.Errorf("BackupStore(%s) left %d files in its directory, want 1", out, len(ents))
			}
		})
	}

	// A state directory without a store: the backup fails, and the older
	// one stays.
	out := filepath.Join(t.TempDir(), "jobs.db")
	if err := os.WriteFile(out, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := gateway.BackupStore(context.Background(), testenv.StateDir(t), out); err == nil {
		t.Errorf("BackupStore of a state directory without jobs.db = nil error, want one")
	}
	if got, err := os.ReadFile(out); err != nil || string(got) != old {
		t.Errorf("a failed BackupStore(%s) left %q, %v, want the older backup %q", out, got, err, old)
	}
}

// waitFor polls cond for up to 30s, scaled.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	d := testenv.Scale(30 * time.Second)
	for deadline := time.Now().Add(d); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", d)
		}
	}
}
