package oidc

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/buildgw/buildgw/auth"
	"github.com/buildgw/buildgw/auth/authtest"
)

const gatewayAud = "https://buildgw.example.com"

// gitlabClaims are shaped like a GitLab id_token of a branch pipeline.
func gitlabClaims(iss string, now time.Time) map[string]any {
	return map[string]any{
		"iss":                   iss,
		"aud":                   gatewayAud,
		"sub":                   "project_path:group/proj:ref_type:branch:ref:main",
		"iat":                   now.Unix(),
		"nbf":                   now.Unix() - 5,
		"exp":                   now.Add(5 * time.Minute).Unix(),
		"jti":                   "7f3c9a2e-0d1b-4c55-9a51-3b8f2f1e6a10",
		"namespace_id":          "12",
		"namespace_path":        "group",
		"project_id":            "34",
		"project_path":          "group/proj",
		"user_id":               "56",
		"user_login":            "alice",
		"user_email":            "alice@example.com",
		"pipeline_id":           "1001",
		"pipeline_source":       "push",
		"job_id":                "2002",
		"ref":                   "main",
		"ref_type":              "branch",
		"ref_path":              "refs/heads/main",
		"ref_protected":         "true",
		"runner_id":             7,
		"runner_environment":    "self-hosted",
		"sha":                   "0123456789abcdef0123456789abcdef01234567",
		"project_visibility":    "private",
		"ci_config_ref_uri":     "gitlab.example.com/group/proj//.gitlab-ci.yml@refs/heads/main",
		"ci_config_sha":         "0123456789abcdef0123456789abcdef01234567",
		"environment_protected": false,
	}
}

// jenkinsClaims are shaped like a token of the Jenkins oidc-provider
// plugin.
func jenkinsClaims(iss string, now time.Time) map[string]any {
	return map[string]any{
		"iss":          iss,
		"aud":          gatewayAud,
		"sub":          "https://jenkins.example.com/job/app/",
		"iat":          now.Unix(),
		"exp":          now.Add(time.Hour).Unix(),
		"build_number": 42,
	}
}

// with returns a copy of claims changed by f.
func with(claims map[string]any, f func(c map[string]any)) map[string]any {
	c := make(map[string]any, len(claims))
	for k, v := range claims {
		c[k] = v
	}
	f(c)
	return c
}

// tamper replaces the payload of a signed token, keeping its signature.
func tamper(t *testing.T, tok string, f func(c map[string]any)) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	f(c)
	if b, err = json.Marshal(c); err != nil {
		t.Fatal(err)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString(b)
	return strings.Join(parts, ".")
}

func bearerRequest(tok string) *http.Request {
	r := httptest.NewRequest("POST", "/v1/builds", nil)
	if tok != "" {
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	return r
}

func TestAuthenticate(t *testing.T) {
	now := time.Now()
	gitlabKey := rsaKey(t, "gitlab-1")
	jenkinsEC, jenkinsRSA := ecKey(t, "jenkins-ec"), rsaKey(t, "jenkins-rsa")
	gitlab := newTestIssuer(t, "", "/oauth/discovery/keys", gitlabKey)
	jenkins := newTestIssuer(t, "/oidc", "/oidc/jwks", jenkinsEC, jenkinsRSA)

	gitlabCfg := gitlab.config("gitlab", gatewayAud, "buildgw")
	gitlabCfg.Algorithms = []string{"RS256"} // all GitLab signs with
	a, err := New(context.Background(), []Issuer{gitlabCfg, jenkins.config("jenkins", gatewayAud)})
	if err != nil {
		t.Fatal(err)
	}

	gl := gitlabClaims(gitlab.url, now)
	jk := jenkinsClaims(jenkins.url, now)
	unpublished := rsaKey(t, "not-in-jwks")
	impostor := rsaKey(t, "gitlab-1") // GitLab's kid, another key
	gitlabPub, err := x509.MarshalPKIXPublicKey(gitlabKey.priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	gitlabPubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: gitlabPub})
	valid := gitlabKey.sign(t, gl)
	const gitlabName = "gitlab:project_path:group/proj:ref_type:branch:ref:main"
	trusted := strings.Join([]string{gitlab.url, jenkins.url}, ", ")
	if jenkins.url < gitlab.url {
		trusted = jenkins.url + ", " + gitlab.url
	}

	tests := []struct {
		name      string
		tok       string // the bearer; "" means no Authorization header
		wantName  string
		wantAttrs map[string]string // a subset of the identity's attributes
		wantErr   error
		// wantPrefix: the reason starts with wantErr's (what follows is
		// a duration measured by the test's clock).
		wantPrefix bool
	}{
		{name: "valid gitlab rsa", tok: valid, wantName: gitlabName, wantAttrs: map[string]string{
			"iss": gitlab.url, "aud": gatewayAud, "sub": "project_path:group/proj:ref_type:branch:ref:main",
			"namespace_path": "group", "project_path": "group/proj", "ref": "main", "ref_type": "branch",
			"ref_protected": "true", "pipeline_source": "push", "user_login": "alice",
			"runner_id": "7", "environment_protected": "false", "exp": itoa(now.Add(5 * time.Minute).Unix()),
		}},
		{name: "valid jenkins ecdsa", tok: jenkinsEC.sign(t, jk), wantName: "jenkins:https://jenkins.example.com/job/app/",
			wantAttrs: map[string]string{"iss": jenkins.url, "aud": gatewayAud, "build_number": "42"}},
		{name: "valid jenkins rsa", tok: jenkinsRSA.sign(t, jk), wantName: "jenkins:https://jenkins.example.com/job/app/"},
		{name: "aud list with an accepted one", tok: gitlabKey.sign(t, with(gl, func(c map[string]any) { c["aud"] = []string{"other", "buildgw"} })),
			wantName: gitlabName, wantAttrs: map[string]string{"aud": "other,buildgw"}},
		{name: "expired", tok: gitlabKey.sign(t, with(gl, func(c map[string]any) { c["exp"] = now.Add(-2 * time.Minute).Unix() })),
			wantErr: fail(reasonExpired + " at " + time.Unix(now.Add(-2*time.Minute).Unix(), 0).UTC().Format(time.RFC3339) + ", 2m"), wantPrefix: true},
		{name: "expired within skew", tok: gitlabKey.sign(t, with(gl, func(c map[string]any) { c["exp"] = now.Add(-30 * time.Second).Unix() })),
			wantName: gitlabName},
		{name: "lifetime of one year", tok: gitlabKey.sign(t, with(gl, func(c map[string]any) { c["exp"] = now.Add(365 * 24 * time.Hour).Unix() })),
			wantErr: fail("token lifetime 8760h0m0s (exp - iat) is longer than max_token_age 24h0m0s of issuer gitlab")},
		{name: "lifetime of one year, iat in the past", tok: gitlabKey.sign(t, with(gl, func(c map[string]any) {
			c["iat"], c["exp"] = now.Add(-364*24*time.Hour).Unix(), now.Add(time.Hour).Unix()
		})), wantErr: fail("token lifetime 8737h0m0s (exp - iat) is longer than max_token_age 24h0m0s of issuer gitlab")},
		{name: "lifetime of a long gitlab job", tok: gitlabKey.sign(t, with(gl, func(c map[string]any) { c["exp"] = now.Add(23 * time.Hour).Unix() })),
			wantName: gitlabName},
		{name: "no iat", tok: gitlabKey.sign(t, with(gl, func(c map[string]any) { delete(c, "iat") })), wantErr: fail(reasonNoIssuedAt)},
		{name: "iat not a number", tok: gitlabKey.sign(t, with(gl, func(c map[string]any) { c["iat"] = "now" })), wantErr: fail(reasonMalformed)},
		{name: "no exp", tok: gitlabKey.sign(t, with(gl, func(c map[string]any) { delete(c, "exp") })), wantErr: fail(reasonNoExpiry)},
		{name: "nbf beyond skew", tok: gitlabKey.sign(t, with(gl, func(c map[string]any) { c["nbf"] = now.Add(2 * time.Minute).Unix() })),
			wantErr: fail(reasonNotYetValid)},
		{name: "nbf far in the future", tok: gitlabKey.sign(t, with(gl, func(c map[string]any) { c["nbf"] = now.Add(time.Hour).Unix() })),
			wantErr: fail(reasonNotYetValid)},
		{name: "nbf within skew", tok: gitlabKey.sign(t, with(gl, func(c map[string]any) { c["nbf"] = now.Add(30 * time.Second).Unix() })),
			wantName: gitlabName},
		{name: "nbf not a number", tok: gitlabKey.sign(t, with(gl, func(c map[string]any) { c["nbf"] = "soon" })), wantErr: fail(reasonMalformed)},
		{name: "wrong aud", tok: gitlabKey.sign(t, with(gl, func(c map[string]any) { c["aud"] = "https://other.example.com" })),
			wantErr: fail(reasonAudience + ` "https://other.example.com": tokens of issuer ` + gitlab.url + ` must have aud "https://buildgw.example.com" or "buildgw"`)},
		{name: "aud list without an accepted one", tok: gitlabKey.sign(t, with(gl, func(c map[string]any) { c["aud"] = []string{"a", "b"} })),
			wantErr: fail(reasonAudience + ` "a", "b": tokens of issuer ` + gitlab.url + ` must have aud "https://buildgw.example.com" or "buildgw"`)},
		{name: "no aud", tok: gitlabKey.sign(t, with(gl, func(c map[string]any) { delete(c, "aud") })),
			wantErr: fail(reasonAudience + ` (none): tokens of issuer ` + gitlab.url + ` must have aud "https://buildgw.example.com" or "buildgw"`)},
		{name: "unknown iss", tok: gitlabKey.sign(t, with(gl, func(c map[string]any) { c["iss"] = "https://gitlab.evil.example" })),
			wantErr: fail(reasonUnknownIssuer + ` "https://gitlab.evil.example": this gateway accepts tokens of ` + trusted)},
		{name: "iss with trailing slash", tok: gitlabKey.sign(t, with(gl, func(c map[string]any) { c["iss"] = gitlab.url + "/" })),
			wantErr: fail(reasonUnknownIssuer + ` "` + gitlab.url + `/": this gateway accepts tokens of ` + trusted)},
		{name: "no iss", tok: gitlabKey.sign(t, with(gl, func(c map[string]any) { delete(c, "iss") })),
			wantErr: fail(reasonUnknownIssuer + ` (none): this gateway accepts tokens of ` + trusted)},
		{name: "long iss is cut", tok: gitlabKey.sign(t, with(gl, func(c map[string]any) { c["iss"] = strings.Repeat("i", 5000) })),
			wantErr: fail(reasonUnknownIssuer + ` "` + strings.Repeat("i", 200) + `...": this gateway accepts tokens of ` + trusted)},
		{name: "unknown kid", tok: unpublished.sign(t, gl), wantErr: fail(reasonSignature)},
		{name: "known kid, other key", tok: impostor.sign(t, gl), wantErr: fail(reasonSignature)},
		{name: "alg none", tok: unsigned(t, gl), wantErr: fail(reasonAlgorithm)},
		{name: "hs256 keyed with the rsa public key", wantErr: fail(reasonAlgorithm),
			tok: signJWS(t, jose.SigningKey{Algorithm: jose.HS256, Key: gitlabPubPEM}, map[jose.HeaderKey]any{"kid": "gitlab-1"}, gl)},
		{name: "es256 to an rs256-only issuer", tok: jenkinsEC.sign(t, gl), wantErr: fail(reasonAlgorithm)},
		{name: "tampered payload", tok: tamper(t, valid, func(c map[string]any) { c["project_path"] = "group/other" }),
			wantErr: fail(reasonSignature)},
		{name: "gitlab iss signed with a jenkins key", tok: jenkinsRSA.sign(t, gl), wantErr: fail(reasonSignature)},
		{name: "jenkins iss signed with the gitlab key", tok: gitlabKey.sign(t, jk), wantErr: fail(reasonSignature)},
		{name: "no sub", tok: gitlabKey.sign(t, with(gl, func(c map[string]any) { delete(c, "sub") })),
			wantErr: fail("token has no sub claim")},
		{name: "payload not json", tok: strings.Split(valid, ".")[0] + ".bm90IGpzb24." + strings.Split(valid, ".")[2],
			wantErr: fail(reasonMalformed)},
		{name: "too large", tok: gitlabKey.sign(t, with(gl, func(c map[string]any) { c["pad"] = strings.Repeat("x", maxTokenSize) })),
			wantErr: fail(reasonTooLarge)},
		{name: "no authorization", tok: "", wantErr: auth.ErrNoCredentials},
		{name: "static token", tok: "glpat-0123456789", wantErr: auth.ErrNoCredentials},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := a.Authenticate(bearerRequest(tt.tok))
			if !authtest.SameError(err, tt.wantErr) && !(tt.wantPrefix && err != nil && strings.HasPrefix(err.Error(), tt.wantErr.Error())) {
				t.Fatalf("Authenticate(%s) error = %v, want %v", tt.name, err, tt.wantErr)
			}
			if err != nil {
				if sig := tt.tok[strings.LastIndex(tt.tok, ".")+1:]; sig != "" && strings.Contains(err.Error(), sig) {
					t.Errorf("Authenticate(%s) error %q quotes the token", tt.name, err)
				}
				return
			}
			if id.Name != tt.wantName || id.Kind != auth.KindOIDC {
				t.Errorf("Authenticate(%s) = {Name: %q, Kind: %q}, want {%q, %q}", tt.name, id.Name, id.Kind, tt.wantName, auth.KindOIDC)
			}
			issuerName, _, _ := strings.Cut(tt.wantName, ":")
			if want := map[string]string{"gitlab": gitlab.url, "jenkins": jenkins.url}[issuerName]; id.Issuer != want {
				t.Errorf("Authenticate(%s).Issuer = %q, want %q", tt.name, id.Issuer, want)
			}
			for k, want := range tt.wantAttrs {
				if got, ok := id.Attributes[k]; !ok || got != want {
					t.Errorf("Authenticate(%s).Attributes[%q] = %q, want %q", tt.name, k, got, want)
				}
			}
		})
	}
}

// TestKeyRotation checks that a token signed with a key the issuer
// published after the authenticator cached its keys verifies: the
// unknown kid makes go-oidc refetch the JWKS.
func TestKeyRotation(t *testing.T) {
	oldKey, newKey := rsaKey(t, "2024"), rsaKey(t, "2025")
	gitlab := newTestIssuer(t, "", "/oauth/discovery/keys", oldKey)
	a, err := New(context.Background(), []Issuer{gitlab.config("gitlab", gatewayAud)})
	if err != nil {
		t.Fatal(err)
	}
	claims := gitlabClaims(gitlab.url, time.Now())
	steps := []struct {
		name        string
		key         signingKey
		rotate      bool
		wantErr     error
		wantFetches int // JWKS fetches so far
	}{
		{"old key, first use", oldKey, false, nil, 1},
		{"old key, cached", oldKey, false, nil, 1},
		{"new key after rotation", newKey, true, nil, 2},
		{"new key, cached", newKey, false, nil, 2},
		{"old key after it was withdrawn", oldKey, false, fail(reasonSignature), 3},
	}
	for _, s := range steps {
		if s.rotate {
			gitlab.setKeys(newKey)
		}
		_, err := a.Authenticate(bearerRequest(s.key.sign(t, claims)))
		if !authtest.SameError(err, s.wantErr) {
			t.Errorf("%s: Authenticate = %v, want %v", s.name, err, s.wantErr)
		}
		if _, fetches := gitlab.counts(); fetches != s.wantFetches {
			t.Errorf("%s: JWKS fetched %d times, want %d", s.name, fetches, s.wantFetches)
		}
	}
}

// TestLazyDiscovery checks that New makes no request, that a failed
// discovery is neither an authentication failure nor retried on every
// request, and that discovery succeeds once the issuer is back.
func TestLazyDiscovery(t *testing.T) {
	key := rsaKey(t, "k")
	gitlab := newTestIssuer(t, "", "/oauth/discovery/keys", key)
	gitlab.set(func(ti *testIssuer) { ti.failDiscovery = true })
	a, err := New(context.Background(), []Issuer{gitlab.config("gitlab", gatewayAud)})
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	a.now = func() time.Time { return clock }
	tok := key.sign(t, gitlabClaims(gitlab.url, time.Now()))

	if d, _ := gitlab.counts(); d != 0 {
		t.Fatalf("New made %d discovery requests, want 0", d)
	}
	steps := []struct {
		name            string
		advance         time.Duration
		issuerUp        bool
		wantOK          bool
		wantDiscoveries int
	}{
		{"issuer down", 0, false, false, 1},
		{"issuer down, within retry interval", time.Second, false, false, 1},
		{"issuer back, within retry interval", time.Second, true, false, 1},
		{"issuer back, retry", discoveryRetryInterval, true, true, 2},
		{"discovered once and for all", time.Minute, false, true, 2},
	}
	for _, s := range steps {
		clock = clock.Add(s.advance)
		gitlab.set(func(ti *testIssuer) { ti.failDiscovery = !s.issuerUp })
		_, err := a.Authenticate(bearerRequest(tok))
		var authErr *auth.Error
		switch {
		case s.wantOK && err != nil:
			t.Errorf("%s: Authenticate = %v, want success", s.name, err)
		case !s.wantOK && (err == nil || errors.As(err, &authErr)):
			t.Errorf("%s: Authenticate = %#v, want an error that is not an *auth.Error", s.name, err)
		case !s.wantOK && strings.Contains(err.Error(), tok):
			t.Errorf("%s: Authenticate error quotes the token", s.name)
		}
		if d, _ := gitlab.counts(); d != s.wantDiscoveries {
			t.Errorf("%s: %d discovery requests, want %d", s.name, d, s.wantDiscoveries)
		}
	}
}

func TestJWKSURLSkipsDiscovery(t *testing.T) {
	key := ecKey(t, "k")
	jenkins := newTestIssuer(t, "/oidc", "/oidc/jwks", key)
	jenkins.set(func(ti *testIssuer) { ti.failDiscovery = true })
	cfg := jenkins.config("jenkins", gatewayAud)
	cfg.JWKSURL = jenkins.srv.URL + "/oidc/jwks"
	a, err := New(context.Background(), []Issuer{cfg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(bearerRequest(key.sign(t, jenkinsClaims(jenkins.url, time.Now())))); err != nil {
		t.Errorf("Authenticate with JWKSURL = %v, want success", err)
	}
	if d, f := jenkins.counts(); d != 0 || f != 1 {
		t.Errorf("discoveries, JWKS fetches = %d, %d, want 0, 1", d, f)
	}
}

func TestIssuerUnreachableIsNotAnAuthFailure(t *testing.T) {
	key := rsaKey(t, "k")
	tests := []struct {
		name      string
		configure func(ti *testIssuer, cfg *Issuer)
	}{
		{"jwks fails", func(ti *testIssuer, cfg *Issuer) { ti.failJWKS = true }},
		{"discovery names another issuer", func(ti *testIssuer, cfg *Issuer) { cfg.URL += "/" }},
		{"untrusted issuer certificate", func(ti *testIssuer, cfg *Issuer) { cfg.HTTPClient = nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gitlab := newTestIssuer(t, "", "/oauth/discovery/keys", key)
			cfg := gitlab.config("gitlab", gatewayAud)
			gitlab.set(func(ti *testIssuer) { tt.configure(ti, &cfg) })
			a, err := New(context.Background(), []Issuer{cfg})
			if err != nil {
				t.Fatal(err)
			}
			_, err = a.Authenticate(bearerRequest(key.sign(t, gitlabClaims(cfg.URL, time.Now()))))
			var authErr *auth.Error
			if err == nil || errors.As(err, &authErr) {
				t.Errorf("Authenticate with %s = %#v, want an error that is not an *auth.Error", tt.name, err)
			}
		})
	}
}

func TestNew(t *testing.T) {
	ok := Issuer{Name: "gitlab", URL: "https://gitlab.example.com", Audiences: []string{gatewayAud}}
	tests := []struct {
		name    string
		issuers []Issuer
		wantErr string // substring; "" means success
	}{
		{"minimal", []Issuer{ok}, ""},
		{"two issuers", []Issuer{ok, {Name: "jenkins", URL: "https://jenkins.example.com/oidc", Audiences: []string{"x"}}}, ""},
		{"http on loopback", []Issuer{{Name: "dev", URL: "http://127.0.0.1:8080", Audiences: []string{"x"}}}, ""},
		{"http on localhost", []Issuer{{Name: "dev", URL: "http://localhost:8080", Audiences: []string{"x"}}}, ""},
		{"all asymmetric algorithms", []Issuer{with2(ok, func(i *Issuer) { i.Algorithms = strings.Split(asymmetricAlgorithms, ", ") })}, ""},
		{"max skew", []Issuer{with2(ok, func(i *Issuer) { i.ClockSkew = MaxClockSkew })}, ""},
		{"no issuers", nil, "no issuers"},
		{"no name", []Issuer{with2(ok, func(i *Issuer) { i.Name = "" })}, "issuer #1: name must be"},
		{"name with colon", []Issuer{with2(ok, func(i *Issuer) { i.Name = "git:lab" })}, "issuer git:lab: name must be"},
		{"duplicate name", []Issuer{ok, with2(ok, func(i *Issuer) { i.URL = "https://other.example.com" })}, "issuer gitlab: name is used twice"},
		{"duplicate url", []Issuer{ok, with2(ok, func(i *Issuer) { i.Name = "gitlab2" })}, "url https://gitlab.example.com is also issuer gitlab"},
		{"no url", []Issuer{with2(ok, func(i *Issuer) { i.URL = "" })}, "url:"},
		{"http url", []Issuer{with2(ok, func(i *Issuer) { i.URL = "http://gitlab.example.com" })}, `url: "http://gitlab.example.com" is not https`},
		{"url with query", []Issuer{with2(ok, func(i *Issuer) { i.URL = "https://gitlab.example.com/?x=1" })}, "url:"},
		{"http jwks url", []Issuer{with2(ok, func(i *Issuer) { i.JWKSURL = "http://gitlab.example.com/keys" })}, "jwks url:"},
		{"no audiences", []Issuer{with2(ok, func(i *Issuer) { i.Audiences = nil })}, "no audiences"},
		{"empty audience", []Issuer{with2(ok, func(i *Issuer) { i.Audiences = []string{""} })}, "empty audience"},
		{"hs256", []Issuer{with2(ok, func(i *Issuer) { i.Algorithms = []string{"RS256", "HS256"} })}, `algorithm "HS256" is symmetric`},
		{"hs512 lower case", []Issuer{with2(ok, func(i *Issuer) { i.Algorithms = []string{"hs512"} })}, `algorithm "hs512" is symmetric`},
		{"none", []Issuer{with2(ok, func(i *Issuer) { i.Algorithms = []string{"none"} })}, `algorithm "none"`},
		{"unknown algorithm", []Issuer{with2(ok, func(i *Issuer) { i.Algorithms = []string{"ES256K"} })}, `unsupported algorithm "ES256K"`},
		{"negative skew", []Issuer{with2(ok, func(i *Issuer) { i.ClockSkew = -time.Second })}, "clock skew -1s is not within"},
		{"negative max token age", []Issuer{with2(ok, func(i *Issuer) { i.MaxTokenAge = -time.Hour })}, "max token age -1h0m0s is negative"},
		{"skew too large", []Issuer{with2(ok, func(i *Issuer) { i.ClockSkew = 6 * time.Minute })}, "clock skew 6m0s is not within 0 to 5m0s"},
	}
	for _, tt := range tests {
		_, err := New(context.Background(), tt.issuers)
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%s: New(%+v) = %v, want error containing %q", tt.name, tt.issuers, err, tt.wantErr)
		}
	}
}

func TestNewDefaults(t *testing.T) {
	a, err := New(context.Background(), []Issuer{{Name: "gitlab", URL: "https://gitlab.example.com", Audiences: []string{"x"}}})
	if err != nil {
		t.Fatal(err)
	}
	is := a.issuers["https://gitlab.example.com"]
	if strings.Join(is.Algorithms, ",") != "RS256,ES256" || is.ClockSkew != DefaultClockSkew || is.NameClaim != "sub" || is.HTTPClient == nil || is.HTTPClient.Timeout == 0 {
		t.Errorf("defaults = {Algorithms: %v, ClockSkew: %v, NameClaim: %q, HTTPClient: %v}, want {[RS256 ES256], %v, \"sub\", a client with a timeout}",
			is.Algorithms, is.ClockSkew, is.NameClaim, is.HTTPClient, DefaultClockSkew)
	}
}

// TestMaxTokenAge checks an issuer's own bound: the Jenkins
// oidc-provider's default one-hour token passes a bound of one hour, a
// two-hour one does not.
func TestMaxTokenAge(t *testing.T) {
	key := rsaKey(t, "k")
	jenkins := newTestIssuer(t, "/oidc", "/oidc/jwks", key)
	cfg := jenkins.config("jenkins", gatewayAud)
	cfg.MaxTokenAge = time.Hour
	a, err := New(context.Background(), []Issuer{cfg})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, life := range []time.Duration{time.Hour, 2 * time.Hour} {
		claims := with(jenkinsClaims(jenkins.url, now), func(c map[string]any) { c["exp"] = now.Add(life).Unix() })
		_, err := a.Authenticate(bearerRequest(key.sign(t, claims)))
		wantErr := life > time.Hour
		if (err != nil) != wantErr || wantErr && !strings.Contains(err.Error(), "max_token_age 1h0m0s") {
			t.Errorf("Authenticate(token living %v) = %v, want refused: %v, naming max_token_age", life, err, wantErr)
		}
	}
}

func TestNameClaim(t *testing.T) {
	key := rsaKey(t, "k")
	gitlab := newTestIssuer(t, "", "/oauth/discovery/keys", key)
	cfg := gitlab.config("gl", gatewayAud)
	cfg.NameClaim = "project_path"
	a, err := New(context.Background(), []Issuer{cfg})
	if err != nil {
		t.Fatal(err)
	}
	id, err := a.Authenticate(bearerRequest(key.sign(t, gitlabClaims(gitlab.url, time.Now()))))
	if err != nil || id.Name != "gl:group/proj" {
		t.Errorf("Authenticate with NameClaim project_path = %q, %v, want %q", id.Name, err, "gl:group/proj")
	}
}

func TestClaimString(t *testing.T) {
	tests := []struct {
		raw    string
		want   string
		wantOK bool
	}{
		{`"main"`, "main", true},
		{`"true"`, "true", true},
		{`""`, "", true},
		{`true`, "true", true},
		{`false`, "false", true},
		{`42`, "42", true},
		{`1700000000`, "1700000000", true},
		{`123456789012345678901234567890`, "123456789012345678901234567890", true},
		{`1.7e9`, "1700000000", true},
		{`1.5`, "1.5", true},
		{`-3`, "-3", true},
		{`["a","b"]`, "a,b", true},
		{`["only"]`, "only", true},
		{`[]`, "", true},
		{`["a",1]`, "", false},
		{`{"a":"b"}`, "", false},
		{`null`, "", false},
	}
	for _, tt := range tests {
		got, ok := claimString(json.RawMessage(tt.raw))
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("claimString(%q) = %q, %v, want %q, %v", tt.raw, got, ok, tt.want, tt.wantOK)
		}
	}
}

func with2(i Issuer, f func(i *Issuer)) Issuer {
	f(&i)
	return i
}

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// TestConcurrentFirstUse checks that requests racing on an undiscovered
// issuer all succeed with a single discovery.
func TestConcurrentFirstUse(t *testing.T) {
	key := rsaKey(t, "k")
	gitlab := newTestIssuer(t, "", "/oauth/discovery/keys", key)
	a, err := New(context.Background(), []Issuer{gitlab.config("gitlab", gatewayAud)})
	if err != nil {
		t.Fatal(err)
	}
	tok := key.sign(t, gitlabClaims(gitlab.url, time.Now()))
	const n = 16
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := a.Authenticate(bearerRequest(tok))
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("concurrent Authenticate = %v, want success", err)
		}
	}
	if d, _ := gitlab.counts(); d != 1 {
		t.Errorf("%d concurrent first requests made %d discoveries, want 1", n, d)
	}
}
