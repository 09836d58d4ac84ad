package workspace_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/buildgw/buildgw/archive"
	"github.com/buildgw/buildgw/internal/hostfs"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/workspace"
)

func TestNewLayout(t *testing.T) {
	l := workspace.NewLayout("/srv/gw/")
	for _, tc := range []struct{ name, got, want string }{
		{"Root", l.Root, "/srv/gw"},
		{"Jobs", l.Jobs, "/srv/gw/jobs"},
		{"Logs", l.Logs, "/srv/gw/logs"},
		{"Log", l.Log("abc"), "/srv/gw/logs/abc.log"},
		{"Trash", l.Trash, "/srv/gw/trash"},
		{"Mem", l.Mem, "/srv/gw/mem"},
		{"MemTrash", l.MemTrash, "/srv/gw/mem/.trash"},
		{"LayerCache", l.LayerCache, "/srv/gw/layer-cache"},
		{"ResultCache", l.ResultCache, "/srv/gw/result-cache"},
		{"BaseImages", l.BaseImages, "/srv/gw/base-images"},
		{"JobStore", l.JobStore, "/srv/gw/jobs.db"},
		{"BackupSocket", l.BackupSocket, "/srv/gw/admin/backup.sock"},
	} {
		if tc.got != tc.want {
			t.Errorf("NewLayout(%q).%s = %q, want %q", "/srv/gw/", tc.name, tc.got, tc.want)
		}
	}
}

// small is a context limit whose largest context fits a 4 MiB tmpfs.
var small = archive.Limits{MaxBytes: 1 << 20, MaxFiles: 64}

// TestPlacement: with memory for two builds, two workspaces get a tmpfs
// of their own, sized from the limit; the third goes to disk; removing
// one gives its room back, and nothing stays mounted.
func TestPlacement(t *testing.T) {
	l := workspace.NewLayout(t.TempDir())
	w, err := workspace.New(l, workspace.WithMemory(8<<20), workspace.WithConcurrency(2), workspace.WithMaxBytes(3<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var made []string
	for _, id := range []string{"a", "b", "c"} {
		ws, err := w.Create(id, small)
		if err != nil {
			t.Fatalf("Create(%q) = %v", id, err)
		}
		made = append(made, ws)
	}
	for i, want := range []string{filepath.Join(l.Mem, "a"), filepath.Join(l.Mem, "b"), filepath.Join(l.Jobs, "c")} {
		if made[i] != want {
			t.Errorf("workspace %d = %s, want %s", i, made[i], want)
		}
	}
	// 3 MiB each, the workspace limit (under the 4 MiB share): the third
	// would need 9 of the 8 MiB.
	if size, ok := w.OwnTmpfs(made[0]); !ok || size != 3<<20 {
		t.Errorf("OwnTmpfs(%s) = %d, %v, want %d, true", made[0], size, ok, 3<<20)
	}
	if size, _, ok := hostfs.TmpfsSpace(made[0]); !ok || size != 3<<20 {
		t.Errorf("TmpfsSpace(%s) = %d, %v, want a tmpfs of %d", made[0], size, ok, 3<<20)
	}
	if fi, err := os.Stat(made[0]); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("mode of %s = %v, %v, want 0700", made[0], fi.Mode(), err)
	}
	if mem, disk := w.Placed(); mem != 2 || disk != 1 {
		t.Errorf("Placed() = %d, %d, want 2, 1", mem, disk)
	}
	if size, free := w.Memory(); size != 8<<20 || free != 2<<20 {
		t.Errorf("Memory() = %d, %d, want %d, %d", size, free, 8<<20, 2<<20)
	}
	// A context that cannot fit its tmpfs goes to disk at once.
	if ws, err := w.Create("big", archive.Limits{}); err != nil || filepath.Dir(ws) != l.Jobs {
		t.Errorf("Create with the default (2 GiB) context limit = %s, %v, want a workspace on disk", ws, err)
	}
	for _, ws := range made {
		if err := w.Remove(context.Background(), ws, nil); err != nil {
			t.Errorf("Remove(%s) = %v", ws, err)
		}
	}
	if _, free := w.Memory(); free != 8<<20 {
		t.Errorf("free memory after removing every workspace = %d, want %d", free, 8<<20)
	}
	ms, err := hostfs.Mounts(l.Root)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		t.Errorf("%s still mounted after Remove", m.Mountpoint)
	}
}

// TestDiscard: a discarded workspace leaves its directory at once and
// the reaper removes it from the trash, with the remover given.
func TestDiscard(t *testing.T) {
	l := workspace.NewLayout(t.TempDir())
	w, err := workspace.New(l)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reaped := make(chan struct{})
	removed := make(chan string, 1)
	rm := func(_ context.Context, dir string) error { removed <- dir; return os.RemoveAll(dir) }
	go func() { defer close(reaped); w.Reap(ctx, nil) }()
	defer func() { cancel(); <-reaped }()
	ws, err := w.Create("x", small)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(ws, "f"), []byte("x"), 0o600)
	// Until the reaper runs, Discard removes in place; both end the same.
	w.Discard(context.Background(), ws, rm)
	if _, err := os.Stat(ws); !os.IsNotExist(err) {
		t.Errorf("Discard(%s) left it in place: %v", ws, err)
	}
	select {
	case got := <-removed:
		if got != ws && got != filepath.Join(l.Trash, "x") {
			t.Errorf("the remover got %s, want %s or its place in the trash", got, ws)
		}
	case <-time.After(testenv.Scale(10 * time.Second)):
		t.Fatal("the remover was never called")
	}
	for deadline := time.Now().Add(testenv.Scale(10 * time.Second)); ; time.Sleep(10 * time.Millisecond) {
		ents, _ := os.ReadDir(l.Trash)
		if len(ents) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("trash still holds %v", ents)
		}
	}
}
