package gateway

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestLoadConfigDefaults(t *testing.T) {
	c, err := LoadConfig("testdata/good.yaml")
	if err != nil {
		t.Fatalf("LoadConfig(good.yaml) = %v, want nil", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", c.Listen, "127.0.0.1:0"},
		{"job_timeout", time.Duration(c.JobTimeout), 90 * time.Second},
		{"context.max_bytes", c.Context.MaxBytes, int64(2 << 30)},
		{"context.max_files", c.Context.MaxFiles, 100000},
		{"concurrency", c.Concurrency, 0},
		{"runners.kaniko.user", c.Runners.Kaniko.User, "someone"},
		{"runners.kaniko.flags", strings.Join(c.Runners.Kaniko.Flags, ","), "--snapshot-mode=redo"},
		{"registries.username", c.Registries["registry.example.com"].Username, "pusher"},
		{"runners.kaniko.pids_max", c.Runners.Kaniko.PidsMax, int64(512)},
		{"runners.kaniko.memory_max", c.Runners.Kaniko.MemoryMax, int64(4 << 30)},
		{"queue.max_queued", c.Queue.MaxQueued, 50},
		{"queue.max_queued_per_identity", c.Queue.MaxQueuedPerIdentity, 0},
		{"queue.max_running_per_identity", c.Queue.MaxRunningPerIdentity, 1},
		{"shutdown_grace", time.Duration(c.ShutdownGrace), 10 * time.Second},
		{"retention", time.Duration(c.Retention), 7 * 24 * time.Hour},
		{"min_free_bytes", c.MinFreeBytes, uint64(1 << 30)},
		{"workspace_max_bytes", c.WorkspaceMaxBytes, int64(20 << 30)},
		{"pprof_listen", c.PprofListen, ""},
		{"idle_timeout", time.Duration(c.IdleTimeout), 2 * time.Minute},
		{"request_body_timeout", time.Duration(c.RequestBodyTimeout), 30 * time.Second},
	}
	for _, tc := range checks {
		if tc.got != tc.want {
			t.Errorf("LoadConfig(good.yaml).%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

// TestLoadConfigErrors: what Validate finds in the file alone. What needs
// a file it names, or a component, is found by New (TestNewConfigErrors).
func TestLoadConfigErrors(t *testing.T) {
	const token = "  - name: ci\n    sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n"
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown key", "listen: 127.0.0.1:1\nlisten_addr: x\ntokens:\n" + token, "listen_addr"},
		{"no identities", "listen: 127.0.0.1:1\n", "no identities"},
		{"public listen without TLS", "listen: 0.0.0.0:8443\ntokens:\n" + token, "tls.cert_file"},
		{"bad listen", "listen: nonsense\ntokens:\n" + token, "host:port"},
		{"bad duration", "listen: 127.0.0.1:1\njob_timeout: soon\ntokens:\n" + token, "not a duration"},
		{"negative timeout", "listen: 127.0.0.1:1\njob_timeout: -1s\ntokens:\n" + token, "job_timeout"},
		{"negative queue bound", "listen: 127.0.0.1:1\nqueue:\n  max_queued: -1\ntokens:\n" + token, "queue: bounds"},
		{"zero idle timeout", "listen: 127.0.0.1:1\nidle_timeout: 0s\ntokens:\n" + token, "idle_timeout: 0s: want at least 1s"},
		{"short request body timeout", "listen: 127.0.0.1:1\nrequest_body_timeout: 500ms\ntokens:\n" + token, "request_body_timeout: 500ms: want at least 1s"},
		{"zero retention", "listen: 127.0.0.1:1\nretention: 0s\ntokens:\n" + token, "retention"},
		{"negative workspace limit", "listen: 127.0.0.1:1\nworkspace_max_bytes: -1\ntokens:\n" + token, "workspace_max_bytes"},
		{"pprof off loopback", "listen: 127.0.0.1:1\npprof_listen: 0.0.0.0:6060\ntokens:\n" + token, "pprof_listen"},
		{"unknown queue key", "listen: 127.0.0.1:1\nqueue:\n  max_waiting: 3\ntokens:\n" + token, "max_waiting"},
		{"relative state dir", "listen: 127.0.0.1:1\nstate_dir: state\ntokens:\n" + token, "absolute path"},
		{"not yaml", "listen: [\n", "config"},
		{"no policy", "listen: 127.0.0.1:1\ntokens:\n" + token, "policy_file: required"},
		{"relative downloads dir", "listen: 127.0.0.1:1\ntokens:\n" + token + "downloads_dir: dl\n", "downloads_dir"},
		{"mtls without CA", "listen: 127.0.0.1:1\nmtls_identities:\n  - name: m\n    subject_cn: builder\n", "client_ca_file"},
		{"bad dind data root", "listen: 127.0.0.1:1\ntokens:\n" + token + "runners:\n  dind:\n    data_root: ram\n", "data_root"},
		{"bad sandbox network", "listen: 127.0.0.1:1\ntokens:\n" + token + "runners:\n  kaniko:\n    network: host\n", "runners.kaniko.network"},
		{"bad dind network", "listen: 127.0.0.1:1\ntokens:\n" + token + "runners:\n  dind:\n    network: host\n", "runners.dind.network"},
		{"bad egress refusal", "listen: 127.0.0.1:1\ntokens:\n" + token + "runners:\n  egress_refuse: [10.0.0.0/8, intranet]\n", "runners.egress_refuse: refused destination \"intranet\""},
		{"kubernetes without data server", "listen: 127.0.0.1:1\ntokens:\n" + token + "runners:\n  kubernetes:\n    enabled: true\n", "runners.kubernetes.data_listen"},
		{"bad kubernetes network", "listen: 127.0.0.1:1\ntokens:\n" + token + "runners:\n  kubernetes:\n    enabled: true\n    data_listen: 127.0.0.1:0\n    network: host\n", "runners.kubernetes.network"},
		{"bad workspaces", "listen: 127.0.0.1:1\ntokens:\n" + token + "workspaces: ram\n", "workspaces"},
		{"small workspace tmpfs", "listen: 127.0.0.1:1\ntokens:\n" + token + "workspace_memory_bytes: 4096\n", "workspace_memory_bytes"},
		{"zero base image store", "listen: 127.0.0.1:1\ntokens:\n" + token + "base_images:\n  max_bytes: 0\n", "base_images"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(p, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadConfig(p)
			// The file's path holds the test's name: not what counts.
			if err == nil || !strings.Contains(strings.ReplaceAll(err.Error(), p, ""), tc.want) {
				t.Errorf("LoadConfig(%q) = %v, want an error naming %q", tc.yaml, err, tc.want)
			}
		})
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	if _, err := LoadConfig("testdata/nope.yaml"); err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Errorf("LoadConfig(nope.yaml) = %v, want an error naming the file", err)
	}
}

func TestCheckTraversable(t *testing.T) {
	// Not t.TempDir: its parent is 0700, which is just what is checked.
	dir, err := os.MkdirTemp("", "traverse-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	closed := filepath.Join(dir, "closed")
	inner := filepath.Join(closed, "state")
	if err := os.MkdirAll(inner, 0o711); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o711)
	os.Chmod(closed, 0o700)
	if err := checkTraversable(inner); err == nil || !strings.Contains(err.Error(), closed) {
		t.Errorf("checkTraversable(%q) = %v, want an error naming %s", inner, err, closed)
	}
	os.Chmod(closed, 0o711)
	if err := checkTraversable(inner); err != nil {
		t.Errorf("checkTraversable(%q) = %v, want nil", inner, err)
	}
}

// The documented example must stay in step with Config: every key in it
// must be known (its files do not exist here, so it is not validated).
func TestExampleConfigParses(t *testing.T) {
	b, err := os.ReadFile("../examples/deploy/buildgw.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("decoding examples/deploy/buildgw.yaml = %v, want nil", err)
	}
	if c.PolicyFile == "" || len(c.OIDCIssuers) != 2 || c.Audit.File == "" {
		t.Errorf("example config = %+v, want policy_file, two oidc_issuers and an audit file", c)
	}
}

func TestDindDataRoot(t *testing.T) {
	mem := memTotal()
	if mem <= 0 {
		t.Fatal("memTotal() = 0, want the host's memory")
	}
	auto := func(conc int64) string {
		size := min(mem/(2*conc), maxDefaultTmpfs) &^ (1<<20 - 1)
		if size < minDefaultTmpfs {
			return fmt.Sprintf("disk (%d MiB of memory per job is too little for a tmpfs)", size>>20)
		}
		return fmt.Sprintf("tmpfs of %d MiB", size>>20)
	}
	tests := []struct {
		name string
		conc int
		dind DindRunner
		want string
	}{
		{"disk", 2, DindRunner{DataRoot: "disk", TmpfsBytes: 1 << 30}, "disk"},
		{"explicit size", 2, DindRunner{TmpfsBytes: 256 << 20}, "tmpfs of 256 MiB"},
		{"default, one job", 1, DindRunner{}, auto(1)},
		{"default, many jobs", 64, DindRunner{DataRoot: "tmpfs"}, auto(64)},
		{"default, too many jobs", 1 << 20, DindRunner{}, auto(1 << 20)},
	}
	for _, tc := range tests {
		c := Config{Concurrency: tc.conc, Runners: Runners{Dind: tc.dind}}
		if _, got := c.dindOptions(); got != tc.want {
			t.Errorf("dindOptions(%s) data root = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestWorkspaceMemory(t *testing.T) {
	mem := memTotal()
	auto := min(mem/4, maxDefaultWorkspaceMemory) &^ (1<<20 - 1)
	tests := []struct {
		name       string
		workspaces string
		bytes      int64
		canMount   bool
		mounted    int64
		want       int64
	}{
		{"disk", "disk", 1 << 30, true, 0, 0},
		{"disk, a tmpfs mounted", "disk", 0, false, 1 << 30, 0},
		{"auto without CAP_SYS_ADMIN", "auto", 1 << 30, false, 0, 0},
		{"auto without CAP_SYS_ADMIN, a tmpfs mounted", "auto", 0, false, 2 << 30, 2 << 30},
		{"auto, default size", "auto", 0, true, 0, auto},
		{"auto, explicit size", "", 512 << 20, true, 0, 512 << 20},
		// Asked for explicitly: the Manager's mount fails at start-up,
		// naming what is missing, rather than falling back quietly.
		{"memory without CAP_SYS_ADMIN", "memory", 512 << 20, false, 0, 512 << 20},
	}
	for _, tc := range tests {
		c := Config{Lifecycle: Lifecycle{Workspaces: tc.workspaces, WorkspaceMemoryBytes: tc.bytes}}
		if got, where := c.workspaceMemory(func() bool { return tc.canMount }, tc.mounted); got != tc.want {
			t.Errorf("workspaceMemory(%s) = %d (%s), want %d", tc.name, got, where, tc.want)
		}
	}
	// Root may mount here (CI runs as root); other users may not.
	dir := t.TempDir()
	if got, want := canMount(dir), os.Geteuid() == 0; got != want {
		t.Errorf("canMount(%s) = %v as uid %d, want %v", dir, got, os.Geteuid(), want)
	}
	if left, _ := os.ReadDir(dir); len(left) > 0 {
		t.Errorf("canMount(%s) left %v behind", dir, left)
	}
}
