package server

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/audit"
)

// viaReadToken is what the audit log says of a request a build's read
// token authenticated: its owner acted through that capability.
const viaReadToken = "read_token"

const viaKey = "buildgw.via"

// readTokenBytes is the read token's randomness: 256 bits.
const readTokenBytes = 32

// readTokenRoutes are what a read token opens, of its own build only.
var readTokenRoutes = map[string]string{
	http.MethodGet + " /v1/builds/:id":         "build.status",
	http.MethodGet + " /v1/builds/:id/logs":    "build.logs",
	http.MethodPost + " /v1/builds/:id/cancel": "build.cancel",
}

// newReadToken returns a fresh read token and its sha256, which is all the
// gateway keeps of it.
func newReadToken() (string, [sha256.Size]byte, error) {
	var b [readTokenBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", [sha256.Size]byte{}, fmt.Errorf("making read token: %w", err)
	}
	tok := api.ReadTokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return tok, sha256.Sum256([]byte(tok)), nil
}

// bearerReadToken returns the request's bearer token if it is a read
// token.
func bearerReadToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, strings.HasPrefix(tok, api.ReadTokenPrefix)
}

// authReadToken authenticates a request that carries a build's read token
// as that build's owner, for the build's status, log and cancel only. The
// token is compared by its sha256, in constant time.
func (s *Server) authReadToken(c *gin.Context, tok string) {
	route := c.Request.Method + " " + c.FullPath()
	action, ok := readTokenRoutes[route]
	if !ok {
		s.refuseReadToken(c, http.StatusForbidden, api.CodeDenied,
			"a build read token only reads that build's status and log and cancels it; "+c.Request.Method+" "+c.Request.URL.Path+" needs the caller's own credentials")
		return
	}
	id := c.Param("id")
	j, err := s.m.GetByReadToken(id, sha256.Sum256([]byte(tok)))
	if err != nil {
		s.refuseReadToken(c, http.StatusUnauthorized, api.CodeUnauthorized,
			"the read token is not valid for build "+id+": it opens only the build whose submission returned it, until the gateway forgets that build")
		return
	}
	owner := j.Identity
	owner.Name = j.Owner
	if s.identities != nil {
		n, known := s.identities(owner)
		if !known {
			s.refuseReadToken(c, http.StatusUnauthorized, api.CodeUnauthorized, "identity "+owner.Name+" is no longer configured, and its builds' read tokens ended with it")
			return
		}
		if n != nil && !n.Allows(c.Request.RemoteAddr) {
			s.refuseReadToken(c, http.StatusUnauthorized, api.CodeUnauthorized, "identity "+owner.Name+" may not be used from this address, nor may its builds' read tokens")
			return
		}
	}
	c.Set(identityKey, owner)
	c.Set(viaKey, viaReadToken)
	s.audit(audit.Record{
		Event: audit.EventAuthz, RequestID: requestID(c), JobID: j.ID, Identity: &owner, Via: viaReadToken,
		SourceIP: c.ClientIP(), Action: action, Decision: audit.DecisionAllow,
	})
	c.Next()
}

func (s *Server) refuseReadToken(c *gin.Context, status int, code, reason string) {
	if s.metrics != nil {
		s.metrics.authFailures.Inc()
	}
	s.log.Info("read token refused", "request_id", requestID(c), "remote", c.ClientIP(), "path", c.Request.URL.Path, "error", reason)
	s.audit(audit.Record{
		Event: audit.EventAuthn, RequestID: requestID(c), SourceIP: c.ClientIP(), Via: viaReadToken,
		Action: c.Request.Method + " " + c.FullPath(), Decision: audit.DecisionDeny, Reason: reason,
	})
	if status == http.StatusUnauthorized {
		c.Header("WWW-Authenticate", `Bearer realm="buildgw"`)
	}
	c.Error(errorf(status, code, reason))
	c.Abort()
}
