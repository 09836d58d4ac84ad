// Package jobs is buildgw's job scheduler: it accepts builds (specs and
// their validation, idempotency), queues them fairly between owners, runs
// each on a sandboxed runner (builder.Runner), keeps their logs and
// records, pushes what a runner built and recovers after a restart.
package jobs
