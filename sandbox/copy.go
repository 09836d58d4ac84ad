package sandbox

import (
	"io"
	"os"
)

// CopyFile copies the file at src to a new file dst with mode. dst must
// not exist: it is created exclusively, so that a link planted where a
// sandbox could write is never written through.
func CopyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
