package gateway

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/buildgw/buildgw/push"
)

// readDockerConfig reads the "auths" of a Docker config.json as push
// credentials, keyed by registry host. Credential helpers are not run: the
// gateway keeps its secrets in files it controls.
func readDockerConfig(path string) (map[string]push.Registry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	var cf struct {
		Auths map[string]struct {
			Auth     string `json:"auth"`
			Username string `json:"username"`
			Password string `json:"password"`
		} `json:"auths"`
	}
	if err := json.Unmarshal(b, &cf); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", path, err)
	}
	out := map[string]push.Registry{}
	for host, a := range cf.Auths {
		// Docker writes Docker Hub as a URL; everything else as host[:port].
		h := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(host, "https://"), "http://"), "/")
		if h == "index.docker.io/v1" {
			h = "index.docker.io"
		}
		r := push.Registry{Username: a.Username, Password: a.Password}
		if a.Auth != "" {
			dec, err := base64.StdEncoding.DecodeString(a.Auth)
			if err != nil {
				return nil, fmt.Errorf("%s: auth of %s is not base64", path, host)
			}
			user, pass, ok := strings.Cut(string(dec), ":")
			if !ok {
				return nil, fmt.Errorf("%s: auth of %s is not user:password", path, host)
			}
			r.Username, r.Password = user, pass
		}
		out[h] = r
	}
	return out, nil
}
