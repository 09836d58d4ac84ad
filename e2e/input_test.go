package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/buildgw/buildgw/api"
)

type entry struct {
	name, body, link string
	typ              byte
	mode             int64
}

func tarOf(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode, Size: int64(len(e.body))}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, e.body)
	}
	tw.Close()
	return buf.Bytes()
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// post sends spec and context as `curl -F spec=@spec.json -F context=@ctx`
// would, and returns the status and decoded error body.
func (g *gateway) post(t *testing.T, token string, spec any, ctx []byte) (int, api.ErrorBody, []byte) {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	sb, _ := json.Marshal(spec)
	w, _ := mw.CreateFormFile("spec", "spec.json")
	w.Write(sb)
	w, _ = mw.CreateFormFile("context", "ctx.tar.gz")
	w.Write(ctx)
	mw.Close()
	status, raw := g.do(t, http.MethodPost, "/v1/builds", token, mw.FormDataContentType(), &body)
	var eb api.ErrorBody
	json.Unmarshal(raw, &eb)
	return status, eb, raw
}

func TestBadInput(t *testing.T) {
	g := startGateway(t)
	tok := g.tokens["ci"]
	// Targets for escapes: a sibling of the state directory, which must
	// stay empty whatever the archives say.
	outside := filepath.Join(filepath.Dir(g.stateDir), "outside")
	if err := os.Mkdir(outside, 0o777); err != nil {
		t.Fatal(err)
	}
	df := entry{name: "Dockerfile", body: "FROM scratch\nCOPY . /\n"}
	spec := api.BuildSpec{Destinations: []string{g.dest.Host + "/team/bad:1"}}
	truncated := gz(tarOf(t, df, entry{name: "big", body: strings.Repeat("x", 100000)}))
	truncated = truncated[:len(truncated)/2]
	many := []entry{df}
	for i := range 2100 {
		many = append(many, entry{name: "f/" + strings.Repeat("a", 3) + string(rune('a'+i%26)) + "/" + string(rune('a'+i/26%26)) + string(rune('a'+i/676)), body: ""})
	}

	tests := []struct {
		name     string
		spec     api.BuildSpec
		ctx      []byte
		status   int
		code     string
		mentions string
	}{
		{"absolute path", spec, tarOf(t, df, entry{name: outside + "/abs", body: "x"}), 400, api.CodeInvalidContext, "abs"},
		{"dot-dot escape", spec, tarOf(t, df, entry{name: "../../outside/dotdot", body: "x"}), 400, api.CodeInvalidContext, "dotdot"},
		{"symlink escape", spec, tarOf(t, df, entry{name: "evil", typ: tar.TypeSymlink, link: outside}, entry{name: "evil/pwned", body: "x"}), 400, api.CodeInvalidContext, "evil"},
		{"relative symlink escape", spec, tarOf(t, df, entry{name: "up", typ: tar.TypeSymlink, link: "../../../outside"}), 400, api.CodeInvalidContext, "up"},
		{"hardlink escape", spec, tarOf(t, df, entry{name: "hl", typ: tar.TypeLink, link: "../../outside/x"}), 400, api.CodeInvalidContext, "hl"},
		{"device node", spec, tarOf(t, df, entry{name: "dev0", typ: tar.TypeChar}), 400, api.CodeInvalidContext, "dev0"},
		{"fifo", spec, tarOf(t, df, entry{name: "pipe", typ: tar.TypeFifo}), 400, api.CodeInvalidContext, "pipe"},
		{"truncated gzip", spec, truncated, 400, api.CodeInvalidContext, "truncated"},
		{"not an archive", spec, []byte("this is not a tar archive at all, just text....."), 400, api.CodeInvalidContext, "archive"},
		{"too many files", spec, gz(tarOf(t, many...)), 413, api.CodeTooLarge, "more than 2000 entries"},
		{"too many bytes", spec, gz(tarOf(t, df, entry{name: "huge", body: strings.Repeat("\x00", 70<<20)})), 413, api.CodeTooLarge, "huge"},
		{"dockerfile outside", api.BuildSpec{Dockerfile: "../Dockerfile", Destinations: spec.Destinations}, tarOf(t, df), 400, api.CodeInvalidSpec, "../Dockerfile"},
		{"dockerfile missing", api.BuildSpec{Dockerfile: "build/Dockerfile", Destinations: spec.Destinations}, tarOf(t, df), 400, api.CodeInvalidContext, "build/Dockerfile"},
		{"no destination", api.BuildSpec{}, tarOf(t, df), 400, api.CodeInvalidSpec, "destinations"},
		{"destination without tag", api.BuildSpec{Destinations: []string{g.dest.Host + "/team/bad"}}, tarOf(t, df), 400, api.CodeInvalidSpec, "team/bad"},
		{"bad build arg", api.BuildSpec{Destinations: spec.Destinations, BuildArgs: map[string]string{"A B": "x"}}, tarOf(t, df), 400, api.CodeInvalidSpec, "A B"},
		{"unknown runner", api.BuildSpec{Destinations: spec.Destinations, Runner: "docker-sock"}, tarOf(t, df), 400, api.CodeInvalidSpec, "docker-sock"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, eb, raw := g.post(t, tok, tc.spec, tc.ctx)
			if status != tc.status || eb.Error.Code != tc.code {
				t.Fatalf("POST /v1/builds (%s) = %d %s, want %d %s", tc.name, status, raw, tc.status, tc.code)
			}
			if !strings.Contains(eb.Error.Message, tc.mentions) {
				t.Errorf("error message = %q, want it to name %q", eb.Error.Message, tc.mentions)
			}
			if left, _ := os.ReadDir(outside); len(left) > 0 {
				t.Errorf("%s wrote outside the workspace: %v", tc.name, left)
			}
			if ws := g.jobsLeft(t); len(ws) > 0 {
				t.Errorf("%s left workspaces behind: %v", tc.name, ws)
			}
		})
	}
	if n := len(g.listBuilds(t, tok)); n != 0 {
		t.Errorf("builds after only bad requests = %d, want 0", n)
	}

	t.Run("unauthenticated", func(t *testing.T) {
		for _, token := range []string{"", "not-a-token"} {
			status, eb, raw := g.post(t, token, spec, tarOf(t, df))
			if status != http.StatusUnauthorized || eb.Error.Code != api.CodeUnauthorized {
				t.Errorf("POST with token %q = %d %s, want 401 %s", token, status, raw, api.CodeUnauthorized)
			}
		}
	})

	t.Run("curl-style upload is accepted", func(t *testing.T) {
		status, _, raw := g.post(t, tok, spec, gz(tarOf(t, df, entry{name: "a.txt", body: "a"})))
		if status != http.StatusAccepted {
			t.Fatalf("POST /v1/builds = %d %s, want 202", status, raw)
		}
		var acc api.Accepted
		json.Unmarshal(raw, &acc)
		if acc.ID == "" || acc.StatusURL != "/v1/builds/"+acc.ID || acc.LogsURL != "/v1/builds/"+acc.ID+"/logs" {
			t.Errorf("answer = %s, want id, status_url and logs_url", raw)
		}
	})
}
