package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"gopkg.in/yaml.v3"

	"github.com/buildgw/buildgw/netmode"
)

// The policy file as written. Strings that validation may refuse are
// scalars, which remember their line so that errors can point at it.
type fileYAML struct {
	Rules []ruleYAML `yaml:"rules"`
}

type ruleYAML struct {
	Name  scalar            `yaml:"name"`
	Match map[string]scalar `yaml:"match"`
	Allow allowYAML         `yaml:"allow"`
	Cache cacheYAML         `yaml:"cache"`
	// Tenant is whose share of the queue and limits a build counts
	// against (see Decision.Tenant).
	Tenant scalar `yaml:"tenant"`
}

type cacheYAML struct {
	Scope scalar `yaml:"scope"`
}

type allowYAML struct {
	Destinations []scalar  `yaml:"destinations"`
	Tags         []scalar  `yaml:"tags"`
	DenyTags     []scalar  `yaml:"deny_tags"`
	From         []scalar  `yaml:"from"`
	Runners      []scalar  `yaml:"runners"`
	Limits       limitYAML `yaml:"limits"`
	Network      scalar    `yaml:"network"`
}

type limitYAML struct {
	MaxContextBytes scalar `yaml:"max_context_bytes"`
	Timeout         scalar `yaml:"timeout"`
	MaxConcurrent   scalar `yaml:"max_concurrent"`
}

// scalar is a YAML scalar taken as its text, with its position. Taking the
// text means ref_protected: true and ref_protected: "true" both match the
// claim "true", which is what a policy author means.
type scalar struct {
	Value string
	Line  int
	set   bool
}

func (s *scalar) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a single value, not a list or mapping", n.Line)
	}
	// A null (key: ~ or key: with nothing) is as if the key were absent.
	s.Line, s.set = n.Line, n.Tag != "!!null"
	if s.set {
		s.Value = n.Value
	}
	return nil
}

// lineError is a validation error and the line it refers to, so that Parse
// can put the line first: "line 7: rule "x": allow.tags: ...".
type lineError struct {
	line int
	err  error
}

func (e *lineError) Error() string {
	if e.line > 0 {
		return fmt.Sprintf("line %d: %v", e.line, e.err)
	}
	return e.err.Error()
}

func (e *lineError) Unwrap() error { return e.err }

func errAt(line int, format string, args ...any) error {
	return &lineError{line: line, err: fmt.Errorf(format, args...)}
}

// Load reads and validates the policy file at path.
func Load(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	p, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", path, err)
	}
	return p, nil
}

// Parse parses and validates a policy document.
func Parse(b []byte) (*Policy, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	// Unknown keys are errors: a misspelled deny_tags must not silently
	// allow everything it was meant to deny.
	dec.KnownFields(true)
	var f fileYAML
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("policy is empty: at least one rule is required")
		}
		return nil, fmt.Errorf("parse policy: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("parse policy: want a single YAML document")
	}
	if len(f.Rules) == 0 {
		return nil, errors.New("policy has no rules: at least one is required (an empty policy would deny everything)")
	}
	p := &Policy{}
	seen := map[string]int{}
	for i, ry := range f.Rules {
		r, err := compileRule(ry)
		if err != nil {
			which := fmt.Sprintf("rule %d", i+1)
			if ry.Name.Value != "" {
				which = fmt.Sprintf("rule %q", ry.Name.Value)
			}
			if le := (*lineError)(nil); errors.As(err, &le) && le.line > 0 {
				return nil, fmt.Errorf("line %d: %s: %w", le.line, which, le.err)
			}
			return nil, fmt.Errorf("%s: %w", which, err)
		}
		if prev, dup := seen[r.name]; dup {
			return nil, errAt(ry.Name.Line, "rule name %q is already used by the rule on line %d", r.name, prev)
		}
		seen[r.name] = ry.Name.Line
		p.rules = append(p.rules, r)
	}
	return p, nil
}

func compileRule(ry ruleYAML) (rule, error) {
	r := rule{name: strings.TrimSpace(ry.Name.Value)}
	if r.name == "" {
		return r, errAt(ry.Name.Line, "name is required")
	}
	// An empty match would apply the rule to every identity; make the
	// author say so with a glob such as kind: "*".
	if len(ry.Match) == 0 {
		return r, errAt(ry.Name.Line, "match is required (to match every identity, write kind: \"*\")")
	}
	for _, k := range sortedKeys(ry.Match) {
		v := ry.Match[k]
		if k == "" {
			return r, errAt(v.Line, "match has an empty key")
		}
		if _, err := globCheck(v.Value); err != nil {
			return r, errAt(v.Line, "match %s: %q is not a valid glob: %v", k, v.Value, err)
		}
		r.match = append(r.match, matcher{key: k, pattern: v.Value})
	}

	a := ry.Allow
	for _, d := range a.Destinations {
		rp, err := parseRepoPattern(d.Value)
		if err != nil {
			return r, errAt(d.Line, "allow.destinations: %v", err)
		}
		r.destinations = append(r.destinations, rp)
	}
	if a.Tags == nil {
		tp, _ := parseTagPattern("*", true)
		r.tags = []tagPattern{tp}
	}
	for _, t := range a.Tags {
		tp, err := parseTagPattern(t.Value, true)
		if err != nil {
			return r, errAt(t.Line, "allow.tags: %v", err)
		}
		r.tags = append(r.tags, tp)
	}
	for _, t := range a.DenyTags {
		// No placeholders: a deny entry that an identity could make
		// unusable by lacking an attribute would fail open.
		tp, err := parseTagPattern(t.Value, false)
		if err != nil {
			return r, errAt(t.Line, "allow.deny_tags: %v", err)
		}
		r.denyTags = append(r.denyTags, tp.src)
	}
	for _, f := range a.From {
		fe, err := parseFrom(f.Value)
		if err != nil {
			return r, errAt(f.Line, "allow.from: %v", err)
		}
		r.from = append(r.from, fe)
	}
	if a.Runners == nil {
		r.runners = []string{"kaniko"}
	}
	for _, rn := range a.Runners {
		if strings.TrimSpace(rn.Value) == "" {
			return r, errAt(rn.Line, "allow.runners: empty runner name")
		}
		r.runners = append(r.runners, rn.Value)
	}
	lim, err := compileLimits(a.Limits)
	if err != nil {
		return r, err
	}
	r.limits = lim
	if r.cacheScope, err = compileCacheScope(ry.Cache.Scope); err != nil {
		return r, err
	}
	if r.tenant, err = compileTenant(ry.Tenant, r.cacheScope); err != nil {
		return r, err
	}
	if a.Network.Value != "" {
		if r.network, err = netmode.Parse(a.Network.Value); err != nil {
			return r, errAt(a.Network.Line, "allow.network: %v", err)
		}
	}
	return r, nil
}

// parseFrom parses an allow.from entry: a repository pattern as in
// allow.destinations, or a bare registry or "*" (any repository).
func parseFrom(s string) (fromEntry, error) {
	fe := fromEntry{src: s}
	if !strings.Contains(s, "/") {
		host, err := fromRegistry(s)
		if err != nil {
			return fe, err
		}
		fe.any, fe.host = host == "*", host
		if fe.any {
			fe.host = ""
		}
		return fe, nil
	}
	rp, err := parseRepoPattern(s)
	if err != nil {
		return fe, err
	}
	fe.repo = rp
	return fe, nil
}

// fromRegistry validates a registry of allow.from and normalizes it to
// what name.Registry.RegistryStr gives.
func fromRegistry(s string) (string, error) {
	if s == "*" {
		return s, nil
	}
	if s == "" || !registryRE.MatchString(s) {
		return "", fmt.Errorf("%q is not a repository pattern, a registry host[:port] or \"*\"", s)
	}
	reg, err := name.NewRegistry(s, name.StrictValidation)
	if err != nil {
		return "", fmt.Errorf("%q is not a registry host[:port]: %w", s, err)
	}
	host := strings.ToLower(reg.RegistryStr())
	if host == "docker.io" {
		host = dockerHub
	}
	return host, nil
}

func compileLimits(l limitYAML) (Limits, error) {
	var lim Limits
	if l.MaxContextBytes.set {
		n, err := strconv.ParseInt(l.MaxContextBytes.Value, 10, 64)
		if err != nil || n < 0 {
			return lim, errAt(l.MaxContextBytes.Line, "limits.max_context_bytes: %q is not a non-negative number of bytes", l.MaxContextBytes.Value)
		}
		lim.MaxContextBytes = n
	}
	if l.Timeout.set {
		d, err := time.ParseDuration(l.Timeout.Value)
		if err != nil || d < 0 {
			return lim, errAt(l.Timeout.Line, "limits.timeout: %q is not a duration such as 30m or 1h30m", l.Timeout.Value)
		}
		lim.Timeout = d
	}
	if l.MaxConcurrent.set {
		n, err := strconv.Atoi(l.MaxConcurrent.Value)
		if err != nil || n < 0 {
			return lim, errAt(l.MaxConcurrent.Line, "limits.max_concurrent: %q is not a non-negative integer", l.MaxConcurrent.Value)
		}
		lim.MaxConcurrent = n
	}
	return lim, nil
}

// globCheck reports whether pattern is a well-formed path.Match glob.
func globCheck(pattern string) (bool, error) {
	return path.Match(pattern, "")
}
