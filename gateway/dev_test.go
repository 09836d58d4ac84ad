package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testenv"
)

// startDev runs gateway.RunDev until the test ends and returns what it
// wrote to dev.env.
func startDev(t *testing.T) map[string]string {
	t.Helper()
	testenv.RequireSandbox(t)
	state := testenv.StateDir(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- gateway.RunDev(ctx, gateway.DevOptions{StateDir: state, Executor: testenv.Executor(t)}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("RunDev = %v", err)
			}
		case <-time.After(testenv.Scale(30 * time.Second)):
			t.Errorf("RunDev did not return %s after its context ended", testenv.Scale(30*time.Second))
		}
	})
	envFile := filepath.Join(state, "dev.env")
	deadline := time.Now().Add(testenv.Scale(30 * time.Second))
	for {
		select {
		case err := <-done:
			t.Fatalf("RunDev = %v before writing dev.env", err)
		default:
		}
		if f, err := os.Open(envFile); err == nil {
			env := map[string]string{}
			s := bufio.NewScanner(f)
			for s.Scan() {
				if k, v, ok := strings.Cut(s.Text(), "="); ok {
					env[k] = v
				}
			}
			f.Close()
			return env
		}
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for dev.env")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDevPolicyAllowsDind: the README offers --runner dind in dev mode, so
// the dev token's policy must allow it (it allowed kaniko only). The build
// asks for a Dockerfile the context lacks, so what answers is the check
// after the policy, not a dind daemon.
func TestDevPolicyAllowsDind(t *testing.T) {
	env := startDev(t)
	for _, runner := range []string{"kaniko", "dind"} {
		spec := api.BuildSpec{Dockerfile: "Absent.Dockerfile", Destinations: []string{env["BUILDGW_REGISTRY"] + "/me/app:1"}, Runner: runner}
		ct, body := multipartBody(t, spec, map[string]string{"Dockerfile": "FROM scratch\n"})
		req, _ := http.NewRequest(http.MethodPost, env["BUILDGW_URL"]+"/v1/builds", bytes.NewReader(body))
		req.Header.Set("Content-Type", ct)
		req.Header.Set("Authorization", "Bearer "+env["BUILDGW_TOKEN"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e api.ErrorBody
		err = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusBadRequest || !strings.Contains(e.Error.Message, "Absent.Dockerfile") {
			t.Errorf("POST /v1/builds runner %s without its Dockerfile = %d %+v (%v), want 400 naming Absent.Dockerfile (past the policy)", runner, resp.StatusCode, e.Error, err)
		}
	}
}
