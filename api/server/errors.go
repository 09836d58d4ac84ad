package server

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/archive"
	"github.com/buildgw/buildgw/jobs"
)

// Error is an error the server raises itself, with its HTTP status.
type Error struct {
	Status  int
	Code    string
	Message string
	// RetryAfter, if set, is sent as the Retry-After header.
	RetryAfter time.Duration
}

func (e *Error) Error() string { return e.Message }

var _ error = (*Error)(nil)

func errorf(status int, code, msg string) *Error {
	return &Error{Status: status, Code: code, Message: msg}
}

// toHTTP is the one place where errors become HTTP statuses and codes.
func toHTTP(err error) *Error {
	var (
		se  *Error
		spe *jobs.SpecError
		de  *jobs.DeniedError
		ae  *archive.Error
		qf  *jobs.QueueFullError
	)
	switch {
	case errors.As(err, &se):
		return se
	case errors.As(err, &spe):
		return errorf(http.StatusBadRequest, api.CodeInvalidSpec, spe.Error())
	case errors.As(err, &de):
		// The code says denied; the message is the reason alone, which
		// names the rule (clients add their own "denied: ").
		return errorf(http.StatusForbidden, api.CodeDenied, de.Reason)
	case errors.As(err, &ae):
		if ae.TooLarge {
			return errorf(http.StatusRequestEntityTooLarge, api.CodeTooLarge, ae.Error())
		}
		return errorf(http.StatusBadRequest, api.CodeInvalidContext, ae.Error())
	case errors.As(err, &qf):
		e := errorf(http.StatusTooManyRequests, api.CodeQueueFull, qf.Error())
		e.RetryAfter = qf.RetryAfter
		return e
	case errors.Is(err, jobs.ErrNotFound):
		return errorf(http.StatusNotFound, api.CodeNotFound, err.Error())
	case errors.Is(err, jobs.ErrFinished):
		return errorf(http.StatusConflict, api.CodeConflict, err.Error())
	case errors.Is(err, syscall.ENOSPC):
		return errorf(http.StatusInsufficientStorage, api.CodeUnavailable, "the gateway is out of space for build workspaces; retry later")
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads this answer.
		return errorf(http.StatusBadRequest, api.CodeInvalidContext, "request cancelled")
	}
	return errorf(http.StatusInternalServerError, api.CodeInternal, "internal error")
}

// errorMiddleware writes the last error a handler recorded with c.Error
// as {"error": {"code", "message"}}.
func (s *Server) errorMiddleware(c *gin.Context) {
	c.Next()
	if len(c.Errors) == 0 || c.Writer.Written() {
		return
	}
	err := c.Errors.Last().Err
	he := toHTTP(err)
	if he.Status >= 500 {
		s.log.Error("request failed", "request_id", requestID(c), "method", c.Request.Method, "path", c.FullPath(), "error", err)
	}
	if he.RetryAfter > 0 {
		c.Header("Retry-After", strconv.Itoa(int(he.RetryAfter.Round(time.Second)/time.Second)))
	}
	c.JSON(he.Status, api.ErrorBody{Error: api.ErrorDetail{Code: he.Code, Message: he.Message}})
}
