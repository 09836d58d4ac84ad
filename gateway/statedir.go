package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/buildgw/buildgw/jobs/pgstore"
	"github.com/buildgw/buildgw/jobs/store"
	"github.com/buildgw/buildgw/runners/kubernetes"
	"github.com/buildgw/buildgw/statedir"
	"github.com/buildgw/buildgw/workspace"
)

// checkJobStore refuses to start on a state directory that has been used
// but whose job store is missing or empty: bbolt would make a new one, and
// recovery would then remove every queued build's workspace as an upload
// never accepted. accept (--accept-empty-store) starts afresh anyway.
func checkJobStore(dir string, accept bool, log *slog.Logger) error {
	db := workspace.NewLayout(dir).JobStore
	fi, err := os.Stat(db)
	switch {
	case err == nil && fi.Size() > 0:
		return nil
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("job store: %w", err)
	}
	what := "missing"
	if err == nil {
		what = "empty"
	}
	used, err := statedir.Evidence(dir, filepath.Base(db))
	if err != nil || used == "" {
		return err
	}
	if accept {
		log.Warn("starting with an empty job store (--accept-empty-store): builds recorded before are forgotten, their workspaces removed", "job_store", db, "was", what)
		return nil
	}
	return fmt.Errorf("job store %s is %s, but state directory %s has been used (%s): "+
		"restore jobs.db from a backup (buildgw backup), or start with --accept-empty-store to begin afresh, forgetting earlier builds", db, what, dir, used)
}

// backupSocket is where a running gateway hands out copies of its job
// store (buildgw backup).
func backupSocket(stateDir string) string { return workspace.NewLayout(stateDir).BackupSocket }

// A copy holds a read transaction of the job store while it is written
// to the backup socket, and bbolt cannot grow the store's file mapping
// while one is open: a client that stopped reading would freeze every
// write of the store behind it. So each write to the socket must be done
// within the write timeout (backupWriteTimeout in the gateway), and the
// copy as a whole at backupMinRate (bytes per second), with the write
// timeout besides; else the connection is cut and the transaction ends.
const (
	backupWriteTimeout       = 30 * time.Second
	backupMinRate      int64 = 1 << 20
)

// serveBackups answers each connection to the backup socket with a
// consistent copy of the job store, written by backup (the Manager's
// BackupStore), until the returned function is called. bbolt's own file
// lock keeps any other process from opening jobs.db while the gateway
// runs, even read-only, so copies come from here.
func serveBackups(stateDir string, backup func(io.Writer, func(int64)) (int64, error), writeTimeout time.Duration, log *slog.Logger) (func(), error) {
	sock := backupSocket(stateDir)
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		return nil, fmt.Errorf("creating backup socket directory: %w", err)
	}
	if err := os.Chmod(filepath.Dir(sock), 0o700); err != nil {
		return nil, fmt.Errorf("securing backup socket directory: %w", err)
	}
	// A socket left by a killed gateway; the state lock says it is ours.
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("listening on the backup socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /jobs.db", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		start := time.Now()
		dw := &deadlineWriter{w: w, rc: http.NewResponseController(w), timeout: writeTimeout, end: start.Add(writeTimeout)}
		n, err := backup(dw, func(size int64) {
			w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
			dw.end = start.Add(writeTimeout + time.Duration(size/backupMinRate+1)*time.Second)
		})
		if err != nil {
			log.Error("backing up the job store", "error", err)
			return // the short copy fails the client's length check
		}
		log.Info("job store backed up", "bytes", n)
	})
	// Bounds on silent connections, though only the gateway's user may
	// reach the socket: none of its clients needs one kept open.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	go srv.Serve(ln)
	return func() { srv.Close(); os.Remove(sock) }, nil
}

// deadlineWriter writes to w each time within timeout, and no later than
// end.
type deadlineWriter struct {
	w       io.Writer
	rc      *http.ResponseController
	timeout time.Duration
	end     time.Time
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	deadline := time.Now().Add(d.timeout)
	if d.end.Before(deadline) {
		deadline = d.end
	}
	if err := d.rc.SetWriteDeadline(deadline); err != nil {
		return 0, err
	}
	return d.w.Write(p)
}

// BackupStore writes a consistent copy of the job store of the gateway
// that holds stateDir to out (created with mode 0600): through the running
// gateway's backup socket, or, when none runs, from the file itself while
// holding the state directory's lock, so that no gateway starts meanwhile.
//
// The copy goes to a new file next to out, which then replaces out: an
// existing file (whatever its mode) or symbolic link at out is replaced,
// never written through, and a failed backup leaves it as it was.
func BackupStore(ctx context.Context, stateDir, out string) (int64, error) {
	dir := filepath.Dir(out)
	// O_EXCL creates a file of its own, never follows a link.
	f, err := os.CreateTemp(dir, "."+filepath.Base(out)+".tmp-")
	if err != nil {
		return 0, fmt.Errorf("creating backup: %w", err)
	}
	tmp := f.Name()
	// CreateTemp makes it 0600, which a umask can only narrow.
	n, err := backupTo(ctx, stateDir, f)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("writing backup: %w", cerr)
	}
	if err == nil {
		if err = os.Rename(tmp, out); err != nil {
			err = fmt.Errorf("writing backup: %w", err)
		}
	}
	if err != nil {
		os.Remove(tmp)
		return 0, err
	}
	// The rename, durable.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return n, nil
}

func backupTo(ctx context.Context, stateDir string, f *os.File) (int64, error) {
	lock, lockErr := statedir.Acquire(stateDir)
	if lockErr == nil {
		defer lock.Release()
		st, err := store.OpenReadOnly(workspace.NewLayout(stateDir).JobStore)
		if err != nil {
			return 0, err
		}
		defer st.Close()
		n, err := st.Backup(f, nil)
		if err != nil {
			return 0, err
		}
		return n, f.Sync()
	}
	// Held: by a running gateway, which serves the copy.
	sock := backupSocket(stateDir)
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://gateway/jobs.db", nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%w; asking the running gateway at %s instead: %w", lockErr, sock, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("backup socket %s answered %s", sock, resp.Status)
	}
	n, err := f.ReadFrom(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("copying the job store from the running gateway: %w", err)
	}
	if want, _ := strconv.ParseInt(resp.Header.Get("Content-Length"), 10, 64); want <= 0 || n != want {
		return 0, fmt.Errorf("copying the job store from the running gateway: got %d bytes, want %d", n, want)
	}
	return n, f.Sync()
}

// openSharedStore opens the PostgreSQL store whose DSN is in file. The DSN
// may hold a password: no error quotes it.
func openSharedStore(file string) (*pgstore.Store, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("store.postgres_dsn_file: %w", err)
	}
	dsn := strings.TrimSpace(string(b))
	if dsn == "" {
		return nil, fmt.Errorf("store.postgres_dsn_file: %s is empty", file)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := pgstore.Open(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("store.postgres_dsn_file %s: %w", file, err)
	}
	return s, nil
}

// replicaLease is how long a replica that stopped renewing its lease
// keeps its builds before another takes them over (docs/replication.md).
const replicaLease = 15 * time.Second

// replicaName names this gateway process among the replicas: its host
// name (a Pod's name) and a random suffix, new at every start.
func replicaName() (string, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("naming the replica: %w", err)
	}
	host, _ := os.Hostname()
	return host + "-" + hex.EncodeToString(b[:]), nil
}

// replicaInstance is the kubernetes runner's instance label of replica:
// instance (default kubernetes.DefaultInstance) and replica's random
// suffix, within the 63 characters of a label value.
func replicaInstance(instance, replica string) (string, error) {
	if instance == "" {
		instance = kubernetes.DefaultInstance
	}
	v := instance + "-" + replica[strings.LastIndexByte(replica, '-')+1:]
	if len(v) > 63 {
		return "", fmt.Errorf("runners.kubernetes.instance: %q is too long for replicas (at most 54 characters)", instance)
	}
	return v, nil
}
