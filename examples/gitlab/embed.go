// Package gitlab holds buildgw's GitLab CI template, embedded so that the
// gateway serves the very file in this directory at
// GET /ci/gitlab/buildgw.yml.
package gitlab

import _ "embed"

// Template is buildgw.yml, the template a project includes.
//
//go:embed buildgw.yml
var Template []byte
