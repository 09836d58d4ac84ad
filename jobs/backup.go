package jobs

import "io"

// BackupStore writes a consistent copy of the job store to w while builds
// go on; size, if not nil, is told its size first.
func (m *Manager) BackupStore(w io.Writer, size func(int64)) (int64, error) {
	b, ok := m.store.(backuper)
	if !ok {
		return 0, errNoBackup
	}
	return b.Backup(w, size)
}
