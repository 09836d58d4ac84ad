package hostfs

// MountTmpfs lets the external tests, which need testenv (itself built on
// this package), mount a small tmpfs as the internal ones do.
var MountTmpfs = mountTmpfs
