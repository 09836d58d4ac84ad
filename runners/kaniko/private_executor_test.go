package kaniko_test

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testmanager"
	"github.com/buildgw/buildgw/jobs"
	"github.com/buildgw/buildgw/runners/kaniko"
)

// TestPrivateExecutor builds with an executor the sandbox user cannot
// reach (under a 0700 directory, as a checkout in root's home is): the
// runner must hand the sandbox a copy instead of binding it.
func TestPrivateExecutor(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the sandbox user differs from the gateway's only as root")
	}
	src, err := os.ReadFile(testenv.Executor(t))
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(t.TempDir(), "kaniko-executor") // 0700 directory
	if err := os.WriteFile(exe, src, 0o755); err != nil {
		t.Fatal(err)
	}
	te := testmanager.New(t, testmanager.Options{Kaniko: []kaniko.Option{kaniko.WithExecutor(exe)}})
	var ctxTar bytes.Buffer
	tw := tar.NewWriter(&ctxTar)
	for _, f := range []struct{ name, body string }{{"Dockerfile", "FROM scratch\nCOPY a.txt /a.txt\n"}, {"a.txt", "a\n"}} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: int64(len(f.body))})
		tw.Write([]byte(f.body))
	}
	tw.Close()
	j, err := te.M.Submit(context.Background(), jobs.SubmitRequest{Owner: "o", Spec: api.BuildSpec{Destinations: []string{te.Registry + "/test/private:1"}}}, &ctxTar)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(2*time.Minute))
	defer cancel()
	if err := jobs.Wait(ctx, j); err != nil {
		t.Fatal(err)
	}
	if b := j.Snapshot(); b.Status != api.StatusSucceeded {
		var log bytes.Buffer
		j.Log.WriteTo(context.Background(), &log, 0, false)
		t.Errorf("build with an executor the sandbox cannot reach = %v %q, want succeeded; log:\n%s", b.Status, b.Error, log.String())
	}
}
