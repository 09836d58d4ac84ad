package gateway

import (
	"testing"

	"github.com/buildgw/buildgw/auth"
)

// TestIdentityNetworks: a read token is held to the allow_networks of its
// owner's identity source, by kind, as the authenticator holds the owner.
func TestIdentityNetworks(t *testing.T) {
	cfg := &Config{
		Tokens:         []Token{{Name: "office", AllowNetworks: []string{"10.0.0.0/8"}}, {Name: "ci"}},
		OIDCIssuers:    []OIDCIssuer{{Name: "gitlab", URL: "https://gitlab.example.com", AllowNetworks: []string{"192.168.0.0/16"}}},
		MTLSIdentities: []MTLSIdentity{{Name: "deployer", AllowNetworks: []string{"172.16.0.0/12"}}},
	}
	f, err := cfg.identityNetworks()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		id      auth.Identity
		addr    string
		allowed bool
	}{
		{auth.Identity{Name: "office", Kind: auth.KindToken}, "10.1.2.3:5000", true},
		{auth.Identity{Name: "office", Kind: auth.KindToken}, "127.0.0.1:5000", false},
		{auth.Identity{Name: "ci", Kind: auth.KindToken}, "127.0.0.1:5000", true},
		{auth.Identity{Name: "gitlab:project_path:a/b", Kind: auth.KindOIDC, Issuer: "https://gitlab.example.com"}, "192.168.1.1:5000", true},
		{auth.Identity{Name: "gitlab:project_path:a/b", Kind: auth.KindOIDC, Issuer: "https://gitlab.example.com"}, "10.1.2.3:5000", false},
		{auth.Identity{Name: "deployer", Kind: auth.KindMTLS}, "10.1.2.3:5000", false},
		{auth.Identity{Name: "deployer", Kind: auth.KindToken}, "10.1.2.3:5000", true}, // another kind's name
	}
	for _, tc := range tests {
		n := f(tc.id)
		if got := n == nil || n.Allows(tc.addr); got != tc.allowed {
			t.Errorf("identityNetworks(%s %s).Allows(%q) = %v, want %v", tc.id.Kind, tc.id.Name, tc.addr, got, tc.allowed)
		}
	}
}
