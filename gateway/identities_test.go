package gateway

import (
	"testing"

	"github.com/buildgw/buildgw/auth"
)

// TestIdentities: a read token is held to the allow_networks of its
// owner's identity source, by kind, as the authenticator holds the owner,
// and to the owner still being configured.
func TestIdentities(t *testing.T) {
	cfg := &Config{
		Tokens:         []Token{{Name: "office", AllowNetworks: []string{"10.0.0.0/8"}}, {Name: "ci"}},
		OIDCIssuers:    []OIDCIssuer{{Name: "gitlab", URL: "https://gitlab.example.com", AllowNetworks: []string{"192.168.0.0/16"}}},
		MTLSIdentities: []MTLSIdentity{{Name: "deployer", AllowNetworks: []string{"172.16.0.0/12"}}},
	}
	f, err := cfg.identities()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		id      auth.Identity
		addr    string
		allowed bool
		known   bool
	}{
		{auth.Identity{Name: "office", Kind: auth.KindToken}, "10.1.2.3:5000", true, true},
		{auth.Identity{Name: "office", Kind: auth.KindToken}, "127.0.0.1:5000", false, true},
		{auth.Identity{Name: "ci", Kind: auth.KindToken}, "127.0.0.1:5000", true, true},
		{auth.Identity{Name: "gitlab:project_path:a/b", Kind: auth.KindOIDC, Issuer: "https://gitlab.example.com"}, "192.168.1.1:5000", true, true},
		{auth.Identity{Name: "gitlab:project_path:a/b", Kind: auth.KindOIDC, Issuer: "https://gitlab.example.com"}, "10.1.2.3:5000", false, true},
		{auth.Identity{Name: "deployer", Kind: auth.KindMTLS}, "10.1.2.3:5000", false, true},
		// Removed from the configuration, or never in it.
		{auth.Identity{Name: "deployer", Kind: auth.KindToken}, "10.1.2.3:5000", true, false}, // another kind's name
		{auth.Identity{Name: "old-ci", Kind: auth.KindToken}, "127.0.0.1:5000", true, false},
		{auth.Identity{Name: "jenkins:sub:x", Kind: auth.KindOIDC, Issuer: "https://jenkins.example.com"}, "127.0.0.1:5000", true, false},
	}
	for _, tc := range tests {
		n, known := f(tc.id)
		if got := n == nil || n.Allows(tc.addr); got != tc.allowed || known != tc.known {
			t.Errorf("identities(%s %s) = networks allowing %q %v, known %v; want %v, %v", tc.id.Kind, tc.id.Name, tc.addr, got, known, tc.allowed, tc.known)
		}
	}
}
