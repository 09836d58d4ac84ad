package server

import (
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/audit"
	"github.com/buildgw/buildgw/auth"
)

const identityKey = "buildgw.identity"

// authMiddleware authenticates every request it guards. Missing or
// invalid credentials get 401; an authenticator that cannot decide (an
// OIDC issuer unreachable) gets 503, without its details.
func (s *Server) authMiddleware(c *gin.Context) {
	if tok, ok := bearerReadToken(c.Request); ok {
		s.authReadToken(c, tok)
		return
	}
	id, err := s.auth.Authenticate(c.Request)
	if err == nil {
		c.Set(identityKey, id)
		c.Next()
		return
	}
	var ae *auth.Error
	reason := "credentials could not be checked"
	if errors.As(err, &ae) {
		reason = ae.Reason
		if ae == auth.ErrNoCredentials {
			reason = "missing credentials: send a bearer token or a client certificate"
		}
	}
	if s.metrics != nil {
		s.metrics.authFailures.Inc()
	}
	s.log.Info("authentication failed", "request_id", requestID(c), "remote", c.ClientIP(), "path", c.Request.URL.Path, "error", err)
	s.audit(audit.Record{
		Event: audit.EventAuthn, RequestID: requestID(c), SourceIP: c.ClientIP(),
		Action: c.Request.Method + " " + c.FullPath(), Decision: audit.DecisionDeny, Reason: reason,
	})
	if ae == nil {
		c.Error(errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "authentication is unavailable, try again"))
		c.Abort()
		return
	}
	c.Header("WWW-Authenticate", `Bearer realm="buildgw"`)
	c.Error(errorf(http.StatusUnauthorized, api.CodeUnauthorized, reason))
	c.Abort()
}

func identity(c *gin.Context) auth.Identity {
	return c.MustGet(identityKey).(auth.Identity)
}

// networkMiddleware refuses clients outside the listener's allowlist
// before anything else is looked at.
func (s *Server) networkMiddleware(c *gin.Context) {
	if s.networks != nil && !s.networks.Allows(c.Request.RemoteAddr) {
		s.audit(audit.Record{
			Event: audit.EventAuthn, RequestID: requestID(c), SourceIP: c.ClientIP(),
			Action: c.Request.Method + " " + c.Request.URL.Path, Decision: audit.DecisionDeny, Reason: "source address not allowed",
		})
		c.Error(errorf(http.StatusForbidden, api.CodeDenied, "source address not allowed"))
		c.Abort()
		return
	}
	c.Next()
}
