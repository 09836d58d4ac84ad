//go:build !linux

package socketaudit

import "errors"

// ScanHost needs Linux's /proc and sock_diag.
func ScanHost(procRoot, socket string) (*HostReport, error) {
	return nil, errors.New("audit --host works on Linux only")
}
