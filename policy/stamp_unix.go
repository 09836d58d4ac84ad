//go:build unix

package policy

import (
	"os"
	"syscall"
)

func fileID(fi os.FileInfo) (dev, ino uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), uint64(st.Ino) //nolint:unconvert // the field types differ between platforms
	}
	return 0, 0
}
