package server

import (
	"context"
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/builder/archive"
)

// Error is an error the server raises itself, with its HTTP status.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

var _ error = (*Error)(nil)

func errorf(status int, code, msg string) *Error { return &Error{status, code, msg} }

// toHTTP is the one place where errors become HTTP statuses and codes.
func toHTTP(err error) *Error {
	var (
		se  *Error
		spe *builder.SpecError
		de  *builder.DeniedError
		ae  *archive.Error
	)
	switch {
	case errors.As(err, &se):
		return se
	case errors.As(err, &spe):
		return &Error{http.StatusBadRequest, api.CodeInvalidSpec, spe.Error()}
	case errors.As(err, &de):
		return &Error{http.StatusForbidden, api.CodeDenied, de.Error()}
	case errors.As(err, &ae):
		if ae.TooLarge {
			return &Error{http.StatusRequestEntityTooLarge, api.CodeTooLarge, ae.Error()}
		}
		return &Error{http.StatusBadRequest, api.CodeInvalidContext, ae.Error()}
	case errors.Is(err, builder.ErrNotFound):
		return &Error{http.StatusNotFound, api.CodeNotFound, err.Error()}
	case errors.Is(err, builder.ErrFinished):
		return &Error{http.StatusConflict, api.CodeConflict, err.Error()}
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads this answer.
		return &Error{http.StatusBadRequest, api.CodeInvalidContext, "request cancelled"}
	}
	return &Error{http.StatusInternalServerError, api.CodeInternal, "internal error"}
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
		s.log.Error("request failed", "method", c.Request.Method, "path", c.FullPath(), "error", err)
	}
	c.JSON(he.Status, api.ErrorBody{Error: api.ErrorDetail{Code: he.Code, Message: he.Message}})
}
