package gateway_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/auth"
	"github.com/buildgw/buildgw/auth/token"
	"github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testoidc"
)

// aud is the audience the CI jobs put in their tokens: the gateway URL.
const aud = "https://buildgw.test"

// authzEnv is an in-process gateway with every kind of identity, the
// registry it pushes to and pulls from, and the issuers of its JWTs.
type authzEnv struct {
	g          *gateway.Gateway
	url        string
	reg        string // in-memory registry host: FROM and pushes
	busybox    string
	gitlab     *testoidc.Issuer
	jenkins    *testoidc.Issuer
	policyFile string
	policy     string // the policy as first written
	auditFile  string
	tokens     map[string]string // static tokens by name
	password   string            // of the registry: must never be audited
	client     *http.Client      // trusts the gateway; no client certificate
	mtls       *http.Client      // presents the trusted "deployer" certificate
	unmapped   *http.Client      // a trusted certificate no identity maps
	untrusted  *http.Client      // presents a certificate of an unknown CA
	log        *lockedBuffer

	mu      sync.Mutex
	secrets []string // every credential and secret build-arg value used
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (e *authzEnv) secret(s string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.secrets = append(e.secrets, s)
	return s
}

// jwt mints a token of is and remembers it as a secret.
func (e *authzEnv) jwt(t *testing.T, is *testoidc.Issuer, claims map[string]any, opts ...testoidc.MintOption) string {
	t.Helper()
	return e.secret(is.MustMint(t, claims, opts...))
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func newAuthzEnv(t *testing.T) *authzEnv {
	t.Helper()
	testenv.RequireSandbox(t)
	e := &authzEnv{tokens: map[string]string{}, log: &lockedBuffer{}}
	e.reg = testenv.Registry(t)
	e.busybox = testenv.Busybox(t, e.reg)
	e.gitlab = testoidc.Start(t, testoidc.Options{})
	e.jenkins = testoidc.Start(t, testoidc.Options{Prefix: "/oidc", JWKSPath: "/oidc/jwks", Alg: jose.ES256})

	dir := t.TempDir()
	serverCert, serverKey, serverCA := testenv.SelfSigned(t, dir)
	clientCA := newCA(t, "buildgw test client CA")
	otherCA := newCA(t, "some other CA")
	clientCAFile := filepath.Join(dir, "client-ca.pem")
	writeFile(t, clientCAFile, string(clientCA.pem))

	e.password = e.secret("registry-password-" + randHex(t))
	pwFile := filepath.Join(dir, "registry-password")
	writeFile(t, pwFile, e.password+"\n")

	cfg := gateway.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.StateDir = testenv.StateDir(t)
	cfg.Concurrency = 2
	cfg.JobTimeout = gateway.Duration(3 * time.Minute)
	cfg.Runners.Kaniko.Executor = testenv.Executor(t)
	cfg.Runners.Kaniko.User = testenv.SandboxUser
	cfg.TLS = gateway.TLS{CertFile: serverCert, KeyFile: serverKey, ClientCAFile: clientCAFile}
	cfg.Registries = map[string]gateway.Registry{e.reg: {Insecure: true, Username: "pusher", PasswordFile: pwFile}}
	for _, n := range []string{"ci", "dind-only", "stranger", "office"} {
		e.tokens[n] = e.secret("bgw_" + n + "_" + randHex(t))
		tok := gateway.Token{Name: n, SHA256: token.HashToken(e.tokens[n]), Attributes: map[string]string{"team": "t-" + n}}
		if n == "office" {
			tok.AllowNetworks = []string{"10.0.0.0/8"}
		}
		cfg.Tokens = append(cfg.Tokens, tok)
	}
	cfg.OIDCIssuers = []gateway.OIDCIssuer{
		{Name: "gitlab", URL: e.gitlab.URL, Audiences: []string{aud}, Algorithms: []string{"RS256"}},
		{Name: "jenkins", URL: e.jenkins.URL, Audiences: []string{aud}},
	}
	cfg.MTLSIdentities = []gateway.MTLSIdentity{
		{Name: "deployer", SubjectCN: "deployer.ci.test", Attributes: map[string]string{"env": "prod"}},
	}
	e.policyFile = filepath.Join(dir, "policy.yaml")
	e.policy = policyYAML(e, false)
	writeFile(t, e.policyFile, e.policy)
	cfg.PolicyFile = e.policyFile
	e.auditFile = filepath.Join(t.TempDir(), "audit.log")
	cfg.Audit.File = e.auditFile

	log := slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	g, err := gateway.New(cfg, log)
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	e.g, e.url = g, g.URL()
	// Registered first, so it runs after serve has stopped the gateway.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gateway log:\n%s", e.log.String())
		}
	})
	serve(t, g)

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(readFile(t, serverCA)))
	newClient := func(certs ...tls.Certificate) *http.Client {
		tc := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		if len(certs) > 0 {
			// Present the certificate whatever CAs the server asks for:
			// Go's client would otherwise send none for an unknown CA.
			tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &certs[0], nil }
		}
		return &http.Client{Timeout: testenv.Scale(30 * time.Second), Transport: &http.Transport{TLSClientConfig: tc}}
	}
	e.client = newClient()
	e.mtls = newClient(clientCA.issue(t, "deployer.ci.test"))
	e.unmapped = newClient(clientCA.issue(t, "intruder.ci.test"))
	e.untrusted = newClient(otherCA.issue(t, "deployer.ci.test"))
	for _, c := range []*http.Client{e.client, e.mtls, e.unmapped, e.untrusted} {
		t.Cleanup(c.CloseIdleConnections)
	}
	waitHealthy(t, e.client, e.url)
	return e
}

// policyYAML is the policy of the test. With denyCI the ci token's rule
// has no destinations: an explicit deny rule.
func policyYAML(e *authzEnv, denyCI bool) string {
	ciDest := "[" + e.reg + "/ci/*]"
	if denyCI {
		ciDest = "[]"
	}
	return fmt.Sprintf(`rules:
  - name: gitlab-protected
    match: {kind: oidc, issuer: %[1]s, ref_protected: "true"}
    allow:
      destinations: ["%[3]s/{project_path}", "%[3]s/{project_path}/*"]
      from: [%[3]s]
      limits: {max_context_bytes: 1048576, timeout: 5m, max_concurrent: 4}
  - name: gitlab-branches
    match: {kind: oidc, issuer: %[1]s, ref_protected: "false"}
    allow:
      destinations: ["%[3]s/{project_path}"]
      tags: ["*"]
      deny_tags: [latest, "v[0-9]*"]
      from: [%[3]s]
  - name: jenkins-jobs
    match: {kind: oidc, issuer: %[2]s}
    allow:
      destinations: [%[3]s/jenkins/*]
      deny_tags: [latest]
      from: [%[3]s]
  - name: ci-token
    match: {kind: token, name: ci}
    allow:
      destinations: %[4]s
      from: [%[3]s]
  - name: dind-only
    match: {kind: token, name: dind-only}
    allow:
      destinations: [%[3]s/**]
      from: [%[3]s]
      runners: [dind]
  - name: office
    match: {kind: token, name: office}
    allow:
      destinations: [%[3]s/office/*]
      from: [%[3]s]
  - name: deployer
    match: {kind: mtls, name: deployer, env: prod}
    allow:
      destinations: [%[3]s/deploy/*]
      from: [%[3]s]
`, e.gitlab.URL, e.jenkins.URL, e.reg, ciDest)
}

// request is one POST /v1/builds.
type request struct {
	client     *http.Client // default: no client certificate
	bearer     string
	header     map[string]string
	spec       api.BuildSpec
	dockerfile string            // default: FROM the registry's busybox
	files      map[string]string // more context files
}

// auditWant is the audit record a request must leave: exactly one authn
// or authz record, unless none is set.
type auditWant struct {
	none                          bool
	event, decision, rule, reason string
	identity                      string
	kind                          auth.Kind
	buildArgNames                 []string
}

type response struct {
	status int
	code   string
	msg    string
	id     string
	err    error // the request failed without an answer
	raw    string
}

func (e *authzEnv) submit(t *testing.T, r request) response {
	t.Helper()
	if r.dockerfile == "" {
		r.dockerfile = "FROM " + e.busybox + "\nARG NPM_TOKEN\nCOPY hello.txt /hello.txt\n"
	}
	files := map[string]string{"Dockerfile": r.dockerfile, "hello.txt": "hello\n"}
	for k, v := range r.files {
		files[k] = v
	}
	ct, body := multipartBody(t, r.spec, files)
	req, err := http.NewRequest(http.MethodPost, e.url+"/v1/builds", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ct)
	if r.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+r.bearer)
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	c := r.client
	if c == nil {
		c = e.client
	}
	resp, err := c.Do(req)
	if err != nil {
		return response{err: err}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := response{status: resp.StatusCode, raw: string(raw)}
	if resp.StatusCode == http.StatusAccepted {
		var acc api.Accepted
		if err := json.Unmarshal(raw, &acc); err != nil || acc.ID == "" {
			t.Fatalf("202 body %s: %v", raw, err)
		}
		out.id = acc.ID
		return out
	}
	var eb api.ErrorBody
	if err := json.Unmarshal(raw, &eb); err != nil {
		t.Fatalf("error body %q of %d: %v", raw, resp.StatusCode, err)
	}
	out.code, out.msg = eb.Error.Code, eb.Error.Message
	return out
}

// auditRecord is the part of an audit line the test checks.
type auditRecord struct {
	Event         string         `json:"event"`
	RequestID     string         `json:"request_id"`
	JobID         string         `json:"job_id"`
	Identity      *auth.Identity `json:"identity"`
	SourceIP      string         `json:"source_ip"`
	Action        string         `json:"action"`
	Decision      string         `json:"decision"`
	Rule          string         `json:"rule"`
	Reason        string         `json:"reason"`
	Destinations  []string       `json:"destinations"`
	BuildArgNames []string       `json:"build_arg_names"`
	Status        string         `json:"status"`
	Digest        string         `json:"digest"`
}

func auditSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// auditSince returns the records written after offset.
func auditSince(t *testing.T, path string, offset int64) []auditRecord {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	var recs []auditRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r auditRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("audit line %q is not JSON: %v", sc.Text(), err)
		}
		recs = append(recs, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return recs
}

// requestRecords drops the build outcome records, which builds accepted
// earlier write whenever they finish.
func requestRecords(recs []auditRecord) []auditRecord {
	return slices.DeleteFunc(recs, func(r auditRecord) bool { return r.Event == "build" })
}

func checkAudit(t *testing.T, recs []auditRecord, w auditWant) {
	t.Helper()
	recs = requestRecords(recs)
	if w.none {
		if len(recs) != 0 {
			t.Errorf("audit records = %+v, want none", recs)
		}
		return
	}
	if len(recs) != 1 {
		t.Fatalf("audit records = %+v, want exactly one", recs)
	}
	r := recs[0]
	if r.Event != w.event || r.Decision != w.decision || r.Rule != w.rule {
		t.Errorf("audit record event/decision/rule = %q/%q/%q, want %q/%q/%q (%+v)", r.Event, r.Decision, r.Rule, w.event, w.decision, w.rule, r)
	}
	if !strings.Contains(r.Reason, w.reason) || (w.reason == "" && r.Reason != "") {
		t.Errorf("audit reason = %q, want it to contain %q", r.Reason, w.reason)
	}
	if r.SourceIP != "127.0.0.1" {
		t.Errorf("audit source_ip = %q, want 127.0.0.1", r.SourceIP)
	}
	if r.RequestID == "" {
		t.Errorf("audit record has no request_id")
	}
	switch {
	case w.identity == "" && r.Identity != nil:
		t.Errorf("audit identity = %+v, want none", r.Identity)
	case w.identity != "" && r.Identity == nil:
		t.Errorf("audit record has no identity, want %q", w.identity)
	case w.identity != "" && (r.Identity.Name != w.identity || r.Identity.Kind != w.kind):
		t.Errorf("audit identity = %q (%s), want %q (%s)", r.Identity.Name, r.Identity.Kind, w.identity, w.kind)
	}
	if w.buildArgNames != nil && !slices.Equal(r.BuildArgNames, w.buildArgNames) {
		t.Errorf("audit build_arg_names = %q, want %q", r.BuildArgNames, w.buildArgNames)
	}
	if w.event == "authz" && r.Action != "build.submit" {
		t.Errorf("audit action = %q, want build.submit", r.Action)
	}
}

func TestAuthorization(t *testing.T) {
	e := newAuthzEnv(t)
	now := time.Now()
	gl := e.gitlab.GitLabClaims(aud, testoidc.GitLab{ProjectPath: "group/app", Protected: true}, now)
	const glName = "gitlab:project_path:group/app:ref_type:branch:ref:main"
	glBranch := e.gitlab.GitLabClaims(aud, testoidc.GitLab{ProjectPath: "group/app", Ref: "feature-x", Protected: false}, now)
	jk := e.jenkins.JenkinsClaims(aud, "https://jenkins.test/job/app/", 42, now)
	npmToken := e.secret("npm_" + randHex(t))
	secretArgs := map[string]string{"NPM_TOKEN": npmToken}

	valid := e.jwt(t, e.gitlab, gl)
	tampered := e.secret(must[string](t)(testoidc.Tamper(valid, func(c map[string]any) { c["project_path"] = "group/other" })))
	algNone := e.secret(must[string](t)(testoidc.AlgNone(gl)))
	hs256 := e.secret(must[string](t)(e.gitlab.HS256WithPublicKey(gl)))
	unknownKID := e.secret(must[string](t)(e.gitlab.UnknownKID(gl)))
	evil := "evil.test/library/busybox:latest"
	big := zeros(2 << 20) // 2 MiB after decompression, a few KiB gzipped

	dest := func(repo string) []string { return []string{e.reg + "/" + repo} }
	authn := func(reason string) auditWant {
		return auditWant{event: "authn", decision: "deny", reason: reason}
	}
	deny := func(rule, identity string, kind auth.Kind, reason string) auditWant {
		return auditWant{event: "authz", decision: "deny", rule: rule, identity: identity, kind: kind, reason: reason}
	}

	tests := []struct {
		name   string
		req    request
		status int    // 0: the request must fail without an answer
		code   string // the JSON error code
		msg    string // a substring of the message
		audit  auditWant
		wait   bool // the build must succeed
	}{
		{
			name:   "gitlab protected ref pushes to its own repository",
			req:    request{bearer: valid, spec: api.BuildSpec{Destinations: dest("group/app:1"), BuildArgs: secretArgs}},
			status: http.StatusAccepted, wait: true,
			audit: auditWant{event: "authz", decision: "allow", rule: "gitlab-protected", identity: glName, kind: auth.KindOIDC, buildArgNames: []string{"NPM_TOKEN"}},
		},
		{
			name: "expired",
			req: request{bearer: e.jwt(t, e.gitlab, testoidc.With(gl, func(c map[string]any) {
				c["iat"], c["nbf"], c["exp"] = now.Add(-20*time.Minute).Unix(), now.Add(-20*time.Minute).Unix(), now.Add(-10*time.Minute).Unix()
			})), spec: api.BuildSpec{Destinations: dest("group/app:1")}},
			status: http.StatusUnauthorized, code: api.CodeUnauthorized, msg: "token expired", audit: authn("token expired"),
		},
		{
			name: "token minted to live a year",
			req: request{bearer: e.jwt(t, e.gitlab, testoidc.With(gl, func(c map[string]any) {
				c["iat"], c["nbf"], c["exp"] = now.Unix(), now.Unix(), now.Add(365*24*time.Hour).Unix()
			})), spec: api.BuildSpec{Destinations: dest("group/app:1")}},
			status: http.StatusUnauthorized, code: api.CodeUnauthorized, msg: "is longer than max_token_age 24h0m0s of issuer gitlab",
			audit: authn("is longer than max_token_age 24h0m0s"),
		},
		{
			name: "not yet valid",
			req: request{bearer: e.jwt(t, e.gitlab, testoidc.With(gl, func(c map[string]any) {
				c["iat"], c["nbf"], c["exp"] = now.Add(10*time.Minute).Unix(), now.Add(10*time.Minute).Unix(), now.Add(20*time.Minute).Unix()
			})), spec: api.BuildSpec{Destinations: dest("group/app:1")}},
			status: http.StatusUnauthorized, code: api.CodeUnauthorized, msg: "token not yet valid", audit: authn("token not yet valid"),
		},
		{
			name:   "wrong audience",
			req:    request{bearer: e.jwt(t, e.gitlab, testoidc.With(gl, func(c map[string]any) { c["aud"] = "https://other.test" })), spec: api.BuildSpec{Destinations: dest("group/app:1")}},
			status: http.StatusUnauthorized, code: api.CodeUnauthorized, msg: "wrong token audience", audit: authn("wrong token audience"),
		},
		{
			name:   "unknown issuer",
			req:    request{bearer: e.jwt(t, e.gitlab, testoidc.With(gl, func(c map[string]any) { c["iss"] = "https://gitlab.evil.test" })), spec: api.BuildSpec{Destinations: dest("group/app:1")}},
			status: http.StatusUnauthorized, code: api.CodeUnauthorized, msg: "unknown token issuer", audit: authn("unknown token issuer"),
		},
		{
			// A token naming the Jenkins issuer, signed with GitLab's key.
			name:   "issuer of another ci",
			req:    request{bearer: e.jwt(t, e.gitlab, testoidc.With(jk, func(c map[string]any) {})), spec: api.BuildSpec{Destinations: dest("jenkins/app:1")}},
			status: http.StatusUnauthorized, code: api.CodeUnauthorized, msg: "bad token signature", audit: authn("bad token signature"),
		},
		{
			name:   "unknown kid",
			req:    request{bearer: unknownKID, spec: api.BuildSpec{Destinations: dest("group/app:1")}},
			status: http.StatusUnauthorized, code: api.CodeUnauthorized, msg: "bad token signature", audit: authn("bad token signature"),
		},
		{
			name:   "alg none",
			req:    request{bearer: algNone, spec: api.BuildSpec{Destinations: dest("group/app:1")}},
			status: http.StatusUnauthorized, code: api.CodeUnauthorized, msg: "unsupported token algorithm", audit: authn("unsupported token algorithm"),
		},
		{
			name:   "hs256 keyed with the public key",
			req:    request{bearer: hs256, spec: api.BuildSpec{Destinations: dest("group/app:1")}},
			status: http.StatusUnauthorized, code: api.CodeUnauthorized, msg: "unsupported token algorithm", audit: authn("unsupported token algorithm"),
		},
		{
			name:   "tampered payload",
			req:    request{bearer: tampered, spec: api.BuildSpec{Destinations: dest("group/other:1")}},
			status: http.StatusUnauthorized, code: api.CodeUnauthorized, msg: "bad token signature", audit: authn("bad token signature"),
		},
		{
			name:   "project a pushes to project b",
			req:    request{bearer: valid, spec: api.BuildSpec{Destinations: dest("group/other:1"), BuildArgs: secretArgs}},
			status: http.StatusForbidden, code: api.CodeDenied,
			msg:   `policy rule "gitlab-protected" does not allow pushing to ` + e.reg + `/group/other:1: repository not in allow.destinations`,
			audit: deny("gitlab-protected", glName, auth.KindOIDC, `does not allow pushing to `+e.reg+`/group/other:1`),
		},
		{
			// A build arg holding the job's own project path must not
			// blank it out of its identity in the audit log.
			name: "build arg equal to the project path",
			req: request{bearer: valid, spec: api.BuildSpec{Destinations: dest("group/other:1"),
				BuildArgs: map[string]string{"X": "group/app", "NPM_TOKEN": npmToken}}},
			status: http.StatusForbidden, code: api.CodeDenied, msg: `does not allow pushing to ` + e.reg + `/group/other:1`,
			audit: deny("gitlab-protected", glName, auth.KindOIDC, `policy rule "gitlab-protected" does not allow pushing to `+e.reg+`/group/other:1`),
		},
		{
			name:   "latest from an unprotected ref",
			req:    request{bearer: e.jwt(t, e.gitlab, glBranch), spec: api.BuildSpec{Destinations: dest("group/app:latest")}},
			status: http.StatusForbidden, code: api.CodeDenied,
			msg:   `policy rule "gitlab-branches" does not allow pushing to ` + e.reg + `/group/app:latest: tag matches deny_tags "latest"`,
			audit: deny("gitlab-branches", "gitlab:project_path:group/app:ref_type:branch:ref:feature-x", auth.KindOIDC, `tag matches deny_tags "latest"`),
		},
		{
			name:   "from a registry not allowed",
			req:    request{bearer: valid, spec: api.BuildSpec{Destinations: dest("group/app:1"), BuildArgs: secretArgs}, dockerfile: "FROM " + evil + "\nARG NPM_TOKEN\n"},
			status: http.StatusForbidden, code: api.CodeDenied,
			msg:   `policy rule "gitlab-protected" does not allow image ` + evil + ` (FROM on line 1): repository evil.test/library/busybox is not in allow.from`,
			audit: deny("gitlab-protected", glName, auth.KindOIDC, `repository evil.test/library/busybox is not in allow.from`),
		},
		{
			name:   "from a registry not allowed behind an arg default",
			req:    request{bearer: valid, spec: api.BuildSpec{Destinations: dest("group/app:1")}, dockerfile: "ARG BASE=" + evil + "\nFROM ${BASE}\n"},
			status: http.StatusForbidden, code: api.CodeDenied,
			msg:   `does not allow image ` + evil + ` (FROM on line 2): repository evil.test/library/busybox is not in allow.from`,
			audit: deny("gitlab-protected", glName, auth.KindOIDC, `repository evil.test/library/busybox is not in allow.from`),
		},
		{
			name: "from a registry not allowed by build arg",
			req: request{bearer: valid, spec: api.BuildSpec{Destinations: dest("group/app:1"), BuildArgs: map[string]string{"BASE": evil, "NPM_TOKEN": npmToken}},
				dockerfile: "ARG BASE=" + e.busybox + "\nFROM ${BASE}\nARG NPM_TOKEN\n"},
			status: http.StatusForbidden, code: api.CodeDenied,
			msg: `does not allow image ` + evil + ` (FROM on line 2): repository evil.test/library/busybox is not in allow.from`,
			// The image is a build-arg value, but no secret: the audit log
			// names it.
			audit: deny("gitlab-protected", glName, auth.KindOIDC, evil+` (FROM on line 2): repository evil.test/library/busybox is not in allow.from`),
		},
		{
			// Refused before the policy looks at it: the caller's to fix.
			name:   "from an image that cannot be resolved",
			req:    request{bearer: valid, spec: api.BuildSpec{Destinations: dest("group/app:1")}, dockerfile: "ARG BASE\nFROM ${BASE}\n"},
			status: http.StatusBadRequest, code: api.CodeInvalidSpec,
			msg:   `invalid spec: dockerfile: Dockerfile: FROM on line 2: cannot resolve "${BASE}": ARG BASE has no value`,
			audit: deny("", glName, auth.KindOIDC, `FROM on line 2: cannot resolve "${BASE}": ARG BASE has no value`),
		},
		{
			// ARG VARIANT="" is a value every runner agrees on: docker,
			// BuildKit and kaniko all build FROM busybox${VARIANT}.
			name: "from an image named with a declared-empty arg",
			req: request{bearer: valid, spec: api.BuildSpec{Destinations: dest("group/app:variant"), BuildArgs: secretArgs},
				dockerfile: "ARG VARIANT=\"\"\nFROM " + strings.TrimSuffix(e.busybox, ":latest") + "${VARIANT}:latest\nARG NPM_TOKEN\n"},
			status: http.StatusAccepted, wait: true,
			audit: auditWant{event: "authz", decision: "allow", rule: "gitlab-protected", identity: glName, kind: auth.KindOIDC, buildArgNames: []string{"NPM_TOKEN"}},
		},
		{
			name:   "runner the rule does not allow",
			req:    request{bearer: e.tokens["dind-only"], spec: api.BuildSpec{Destinations: dest("any/app:1"), Runner: "kaniko"}},
			status: http.StatusForbidden, code: api.CodeDenied, msg: `policy rule "dind-only" does not allow runner "kaniko" (allowed: dind)`,
			audit: deny("dind-only", "dind-only", auth.KindToken, `does not allow runner "kaniko"`),
		},
		{
			name:   "context over the rule's max_context_bytes",
			req:    request{bearer: valid, spec: api.BuildSpec{Destinations: dest("group/app:big")}, files: map[string]string{"big.bin": big}},
			status: http.StatusRequestEntityTooLarge, code: api.CodeTooLarge, msg: "archive content exceeds 1048576 bytes",
			// Policy allowed the destinations; the limit it granted
			// stopped the upload, and that refusal is recorded.
			audit: deny("", glName, auth.KindOIDC, "archive content exceeds 1048576 bytes"),
		},
		{
			name:   "token used outside its allowed networks",
			req:    request{bearer: e.tokens["office"], spec: api.BuildSpec{Destinations: dest("office/app:1")}},
			status: http.StatusUnauthorized, code: api.CodeUnauthorized, msg: "identity office may not be used from this address",
			audit: authn("identity office may not be used from this address"),
		},
		{
			name:   "invalid static token",
			req:    request{bearer: e.secret("bgw_not_a_token_" + randHex(t)), spec: api.BuildSpec{Destinations: dest("ci/app:1")}},
			status: http.StatusUnauthorized, code: api.CodeUnauthorized, msg: "invalid token", audit: authn("invalid token"),
		},
		{
			name:   "static token without a policy rule",
			req:    request{bearer: e.tokens["stranger"], spec: api.BuildSpec{Destinations: dest("ci/app:1"), BuildArgs: secretArgs}},
			status: http.StatusForbidden, code: api.CodeDenied, msg: `no policy rule matches identity "stranger"`,
			audit: deny("", "stranger", auth.KindToken, `no policy rule matches identity "stranger"`),
		},
		{
			name:  "mtls certificate of an untrusted ca",
			req:   request{client: e.untrusted, spec: api.BuildSpec{Destinations: dest("deploy/app:1")}},
			audit: auditWant{none: true},
		},
		{
			name:   "mtls trusted certificate no identity maps",
			req:    request{client: e.unmapped, spec: api.BuildSpec{Destinations: dest("deploy/app:1")}},
			status: http.StatusUnauthorized, code: api.CodeUnauthorized, msg: "client certificate matches no identity",
			audit: authn("client certificate matches no identity"),
		},
		{
			name:   "mtls trusted certificate allowed by policy",
			req:    request{client: e.mtls, spec: api.BuildSpec{Destinations: dest("deploy/app:1")}},
			status: http.StatusAccepted,
			audit:  auditWant{event: "authz", decision: "allow", rule: "deployer", identity: "deployer", kind: auth.KindMTLS},
		},
		{
			name:   "jenkins es256 token",
			req:    request{bearer: e.jwt(t, e.jenkins, jk), spec: api.BuildSpec{Destinations: dest("jenkins/app:42")}},
			status: http.StatusAccepted,
			audit:  auditWant{event: "authz", decision: "allow", rule: "jenkins-jobs", identity: "jenkins:https://jenkins.test/job/app/", kind: auth.KindOIDC},
		},
		{
			// The audit log records the peer, not what a client claims.
			name: "forwarded-for header is not the source address",
			req: request{bearer: e.tokens["stranger"], header: map[string]string{"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9"},
				spec: api.BuildSpec{Destinations: dest("ci/app:1")}},
			status: http.StatusForbidden, code: api.CodeDenied, msg: `no policy rule matches identity "stranger"`,
			audit: deny("", "stranger", auth.KindToken, `no policy rule matches identity "stranger"`),
		},
	}
	ran := 0 // cases that expect a record
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.audit.none {
				ran++
			}
			off := auditSize(t, e.auditFile)
			got := e.submit(t, tt.req)
			checkAudit(t, auditSince(t, e.auditFile, off), tt.audit)
			if tt.status == 0 {
				if got.err == nil {
					t.Fatalf("request answered %d %s, want a failed TLS handshake", got.status, got.raw)
				}
				if !strings.Contains(got.err.Error(), "tls") {
					t.Errorf("request error = %v, want a TLS failure", got.err)
				}
				return
			}
			if got.err != nil {
				t.Fatalf("request failed: %v", got.err)
			}
			if got.status != tt.status || got.code != tt.code || !strings.Contains(got.msg, tt.msg) {
				t.Fatalf("POST /v1/builds = %d %s %q, want %d %s containing %q", got.status, got.code, got.msg, tt.status, tt.code, tt.msg)
			}
			if tt.wait {
				b := e.wait(t, tt.req.bearer, got.id)
				if b.Status != api.StatusSucceeded || b.Digest == "" {
					t.Fatalf("build %s = %s (%s), want succeeded with a digest", got.id, b.Status, b.Error)
				}
				ref := must[name.Tag](t)(name.NewTag(tt.req.spec.Destinations[0], name.Insecure))
				desc, err := remote.Head(ref)
				if err != nil {
					t.Fatalf("pushed image %s: %v", ref, err)
				}
				if desc.Digest.String() != b.Digest {
					t.Errorf("digest of %s = %s, want the build's %s", ref, desc.Digest, b.Digest)
				}
				// Its outcome is audited with the identity and the names,
				// not the values, of its build args.
				var rec *auditRecord
				for _, r := range auditSince(t, e.auditFile, off) {
					if r.Event == "build" && r.JobID == got.id {
						rec = &r
					}
				}
				if rec == nil {
					t.Fatalf("no build record for job %s in the audit log", got.id)
				}
				if rec.Status != "succeeded" || rec.Digest != b.Digest || rec.Identity == nil || rec.Identity.Name != glName ||
					!slices.Equal(rec.BuildArgNames, []string{"NPM_TOKEN"}) {
					t.Errorf("build record = %+v, want succeeded, digest %s, identity %s, build_arg_names [NPM_TOKEN]", rec, b.Digest, glName)
				}
			} else if got.id != "" {
				e.cancel(t, tt.req, got.id)
			}
		})
	}

	t.Run("issuer rotates its key", func(t *testing.T) {
		_, before := e.gitlab.Counts()
		if _, err := e.gitlab.Rotate(false); err != nil {
			t.Fatal(err)
		}
		off := auditSize(t, e.auditFile)
		fresh := e.jwt(t, e.gitlab, testoidc.With(gl, func(c map[string]any) { c["jti"] = "after-rotation" }))
		got := e.submit(t, request{bearer: fresh, spec: api.BuildSpec{Destinations: dest("group/app:rotated")}})
		if got.status != http.StatusAccepted {
			t.Fatalf("token of the new key: %d %s %q, want 202", got.status, got.code, got.msg)
		}
		checkAudit(t, auditSince(t, e.auditFile, off), auditWant{event: "authz", decision: "allow", rule: "gitlab-protected", identity: glName, kind: auth.KindOIDC})
		e.cancel(t, request{bearer: fresh}, got.id)
		if _, after := e.gitlab.Counts(); after <= before {
			t.Errorf("JWKS fetches = %d before, %d after the rotation: want a refetch for the new kid", before, after)
		}
		// The withdrawn key no longer verifies anything.
		off = auditSize(t, e.auditFile)
		got = e.submit(t, request{bearer: valid, spec: api.BuildSpec{Destinations: dest("group/app:1")}})
		if got.status != http.StatusUnauthorized || !strings.Contains(got.msg, "bad token signature") {
			t.Errorf("token of the withdrawn key: %d %s %q, want 401 bad token signature", got.status, got.code, got.msg)
		}
		checkAudit(t, auditSince(t, e.auditFile, off), authn("bad token signature"))
	})

	t.Run("reload", func(t *testing.T) {
		ci := request{bearer: e.tokens["ci"], spec: api.BuildSpec{Destinations: dest("ci/app:1"), BuildArgs: secretArgs}}
		expect := func(t *testing.T, status int, msg string, w auditWant) {
			t.Helper()
			off := auditSize(t, e.auditFile)
			got := e.submit(t, ci)
			if got.status != status || !strings.Contains(got.msg, msg) {
				t.Fatalf("POST /v1/builds = %d %s %q, want %d containing %q", got.status, got.code, got.msg, status, msg)
			}
			checkAudit(t, auditSince(t, e.auditFile, off), w)
			if got.id != "" {
				e.cancel(t, ci, got.id)
			}
		}
		allowed := auditWant{event: "authz", decision: "allow", rule: "ci-token", identity: "ci", kind: auth.KindToken, buildArgNames: []string{"NPM_TOKEN"}}
		expect(t, http.StatusAccepted, "", allowed)

		// A broken file keeps the policy in force.
		writeFile(t, e.policyFile, strings.Replace(e.policy, "deny_tags:", "deny_tagz:", 1))
		e.g.Reload()
		expect(t, http.StatusAccepted, "", allowed)
		if !strings.Contains(e.log.String(), "policy reload failed; keeping the old policy") {
			t.Errorf("gateway log lacks the failed reload")
		}

		// A valid file that denies takes effect at once.
		writeFile(t, e.policyFile, policyYAML(e, true))
		e.g.Reload()
		expect(t, http.StatusForbidden, `policy rule "ci-token" does not allow pushing to `+e.reg+`/ci/app:1`,
			deny("ci-token", "ci", auth.KindToken, `does not allow pushing to `+e.reg+`/ci/app:1: repository not in allow.destinations`))

		// And a broken file now keeps the deny.
		writeFile(t, e.policyFile, "rules: [")
		e.g.Reload()
		expect(t, http.StatusForbidden, `policy rule "ci-token" does not allow pushing`,
			deny("ci-token", "ci", auth.KindToken, `does not allow pushing`))
	})

	t.Run("no secret in the audit log", func(t *testing.T) {
		b, err := os.ReadFile(e.auditFile)
		if err != nil {
			t.Fatal(err)
		}
		log := string(b)
		if os.Getenv("BUILDGW_DUMP_AUDIT") != "" {
			t.Logf("audit log:\n%s", log)
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, s := range e.secrets {
			if strings.Contains(log, s) {
				t.Errorf("audit log holds a secret (%.12s...)", s)
			}
			// A JWT's signature alone would be enough to recognise it.
			if parts := strings.Split(s, "."); len(parts) == 3 && len(parts[2]) > 16 && strings.Contains(log, parts[2]) {
				t.Errorf("audit log holds the signature of a token (%.12s...)", parts[2])
			}
		}
		if n := strings.Count(log, "\n"); n < ran {
			t.Errorf("audit log has %d lines, want at least %d", n, ran)
		}
	})
}

// wait polls the build until it is final.
func (e *authzEnv) wait(t *testing.T, bearer, id string) api.Build {
	t.Helper()
	d := testenv.Scale(3 * time.Minute)
	deadline := time.Now().Add(d)
	for {
		req, _ := http.NewRequest(http.MethodGet, e.url+"/v1/builds/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+bearer)
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var b api.Build
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /v1/builds/%s = %d %s", id, resp.StatusCode, raw)
		}
		if err := json.Unmarshal(raw, &b); err != nil {
			t.Fatal(err)
		}
		if b.Status.Final() {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("build %s still %s after %s", id, b.Status, d)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// cancel stops a build the test does not need to run.
func (e *authzEnv) cancel(t *testing.T, r request, id string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.url+"/v1/builds/"+id+"/cancel", nil)
	if r.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+r.bearer)
	}
	c := r.client
	if c == nil {
		c = e.client
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusConflict {
		t.Errorf("cancel %s = %d", id, resp.StatusCode)
	}
}

func multipartBody(t *testing.T, spec api.BuildSpec, files map[string]string) (string, []byte) {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="spec"`)
	h.Set("Content-Type", "application/json")
	pw, err := mw.CreatePart(h)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewEncoder(pw).Encode(spec); err != nil {
		t.Fatal(err)
	}
	cw, err := mw.CreateFormFile("context", "context.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cw.Write(tarGz(t, files)); err != nil {
		t.Fatal(err)
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return mw.FormDataContentType(), body.Bytes()
}

func tarGz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg, ModTime: time.Unix(1700000000, 0)}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, files[n]); err != nil {
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

func zeros(n int) string { return string(make([]byte, n)) }

func waitHealthy(t *testing.T, c *http.Client, url string) {
	t.Helper()
	deadline := time.Now().Add(testenv.Scale(10 * time.Second))
	for {
		resp, err := c.Get(url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not healthy: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testCA is a certificate authority for client certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key := must[*ecdsa.PrivateKey](t)(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der := must[[]byte](t)(x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key))
	return &testCA{cert: must[*x509.Certificate](t)(x509.ParseCertificate(der)), key: key,
		pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a client certificate for cn signed by ca.
func (ca *testCA) issue(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	key := must[*ecdsa.PrivateKey](t)(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{cn},
	}
	der := must[[]byte](t)(x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key))
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func randHex(t *testing.T) string {
	t.Helper()
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", b)
}
