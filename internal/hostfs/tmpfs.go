package hostfs

import (
	"path/filepath"

	"golang.org/x/sys/unix"
)

// TmpfsSpace returns the size and free bytes of the tmpfs dir is on; ok
// is false if dir is on no tmpfs.
func TmpfsSpace(dir string) (size, free int64, ok bool) {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil || st.Type != unix.TMPFS_MAGIC {
		return 0, 0, false
	}
	return int64(st.Blocks) * st.Bsize, int64(st.Bavail) * st.Bsize, true
}

// IsTmpfsMount reports whether a tmpfs is mounted right at dir: a tmpfs
// further up (/tmp, say) does not count.
func IsTmpfsMount(dir string) bool {
	if _, _, ok := TmpfsSpace(dir); !ok {
		return false
	}
	var a, b unix.Stat_t
	return unix.Stat(dir, &a) == nil && unix.Stat(filepath.Dir(dir), &b) == nil && a.Dev != b.Dev
}
