package cmd

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"github.com/buildgw/buildgw/api/client"
)

// ExitError carries an exit status other than 1, e.g. for audit findings.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

var _ error = (*ExitError)(nil)

// ExitCode is the process exit status for err: 0 for nil.
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return 1
}

// wrapErrors makes every command's error one readable line that says
// what to do about it.
func wrapErrors(c *cobra.Command) {
	if run := c.RunE; run != nil {
		c.RunE = func(cmd *cobra.Command, args []string) error { return describe(run(cmd, args)) }
	}
	for _, sub := range c.Commands() {
		wrapErrors(sub)
	}
}

func describe(err error) error {
	var ce *client.Error
	if err == nil || !errors.As(err, &ce) {
		return oneLine(err)
	}
	var hint string
	switch ce.StatusCode {
	case http.StatusUnauthorized:
		hint = "unauthorized: %s"
		// Another token helps a caller that sent none or a wrong static
		// one; a CI job's ID token needs the issuer or audience the
		// gateway's message names, or a fresh token, instead.
		if ce.Message == "" || ce.Message == "invalid token" || strings.HasPrefix(ce.Message, "missing credentials") {
			hint += " (give --token, set BUILDGW_TOKEN or run buildctl-lite login)"
		}
	case http.StatusForbidden:
		hint = "denied: %s"
	case http.StatusRequestEntityTooLarge:
		hint = "context too large: %s (exclude files with .dockerignore)"
	case http.StatusTooManyRequests:
		hint = "gateway busy: %s"
	default:
		return oneLine(err)
	}
	return oneLine(fmt.Errorf(hint, ce.Error()))
}

// oneLine keeps a multi-line error (errors.Join, say) on one line.
func oneLine(err error) error {
	if err == nil || !strings.Contains(err.Error(), "\n") {
		return err
	}
	return &lineError{err}
}

type lineError struct{ err error }

func (e *lineError) Error() string { return strings.ReplaceAll(e.err.Error(), "\n", "; ") }
func (e *lineError) Unwrap() error { return e.err }
