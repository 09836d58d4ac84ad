// Package hostfs is the gateway's one reader of the host's mount table
// and process table: the mounts under a directory and how they go away,
// the processes working under a directory and how they are killed (by
// pid and start time, so a recycled pid is never hit), the deleted files
// processes hold, and the space of a tmpfs. Everything that needs
// /proc/self/mountinfo or a scan of /proc, production code and tests
// alike, comes here.
package hostfs
