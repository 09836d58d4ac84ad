// Package layoutcheck holds tests of the repository's shape, so that the
// docs and the package boundaries cannot drift from the code: README.md's
// layout table against `go list ./...`, and which packages may import
// which. It has no code of its own.
package layoutcheck
