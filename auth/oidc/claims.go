package oidc

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
)

// attributes turns verified top-level claims into the strings policy
// matches on:
//   - strings as they are;
//   - booleans as "true" or "false", so a GitLab ref_protected, sent as
//     the string "true", and a boolean true read the same;
//   - numbers in plain decimal, never with an exponent (1700000000, not
//     1.7e+09);
//   - arrays of strings joined with "," (so "aud" reads the same whether
//     the token has one audience or a list of them).
//
// Objects, null, and arrays holding anything but strings are left out:
// there is no faithful flat string for them.
func attributes(claims map[string]json.RawMessage) map[string]string {
	attrs := make(map[string]string, len(claims))
	for name, raw := range claims {
		if v, ok := claimString(raw); ok {
			attrs[name] = v
		}
	}
	return attrs
}

func claimString(raw json.RawMessage) (string, bool) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return "", false
	}
	switch v := v.(type) {
	case string:
		return v, true
	case bool:
		return strconv.FormatBool(v), true
	case json.Number:
		return plainNumber(v)
	case []any:
		s := make([]string, len(v))
		for i, e := range v {
			str, ok := e.(string)
			if !ok {
				return "", false
			}
			s[i] = str
		}
		return strings.Join(s, ","), true
	}
	return "", false
}

func plainNumber(n json.Number) (string, bool) {
	s := n.String()
	if !strings.ContainsAny(s, ".eE") {
		// An integer literal, kept digit for digit however large.
		return s, true
	}
	f, err := n.Float64()
	if err != nil {
		return "", false
	}
	return strconv.FormatFloat(f, 'f', -1, 64), true
}
