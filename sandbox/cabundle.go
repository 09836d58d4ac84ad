package sandbox

import (
	"errors"
	"fmt"
	"os"
)

// WriteCABundle writes to dst the CA bundle a sandbox trusts: the host's
// bundle at system followed by extra (PEM roots of the build's policy).
// A host without a system bundle (a minimal gateway image) still gets
// extra: losing the roots the build was given would turn a pull from a
// private registry into a certificate error that names neither. Any
// other error reading system is returned.
func WriteCABundle(dst, system string, extra []byte) error {
	b, err := os.ReadFile(system)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reading the system CA bundle: %w", err)
	}
	if len(b) > 0 && b[len(b)-1] != '\n' && len(extra) > 0 {
		b = append(b, '\n')
	}
	if err := os.WriteFile(dst, append(b, extra...), 0o644); err != nil {
		return fmt.Errorf("writing the CA bundle: %w", err)
	}
	return nil
}
