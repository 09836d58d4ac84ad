// Package testpg starts a throw-away PostgreSQL server (Debian's
// postgresql package) for tests: initdb and postgres from
// /usr/lib/postgresql/*/bin, listening only on a unix socket in a
// temporary directory, stopped when the test ends. As root the server
// runs as the postgres user the package creates (nobody if there is
// none), since postgres refuses to run as root.
package testpg

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/buildgw/buildgw/internal/testenv"
)

// Server is a running PostgreSQL.
type Server struct {
	// Dir holds the unix socket (Dir/.s.PGSQL.5432).
	Dir string
	// DSN reaches the server's postgres database as its superuser.
	DSN string

	cmd    *exec.Cmd
	exited chan struct{}
	logf   *os.File
}

// bin returns the directory of the newest installed PostgreSQL's
// programs.
func bin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(a, b int) bool {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[a])))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[b])))
		return va > vb
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("PostgreSQL not found under /usr/lib/postgresql: run scripts/setup --test (it installs Debian's postgresql)")
}

// Start runs a new server until the test ends. It is fast rather than
// durable: fsync is off.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := Launch()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stopping postgres: %v", err)
		}
	})
	return s
}

// Launch runs a new server, as Start does, for programs that have no
// testing.TB (benchmarks); the caller must Stop it.
func Launch() (_ *Server, err error) {
	bindir, err := bin()
	if err != nil {
		return nil, err
	}
	// Not t.TempDir: its parents are private to root, and the socket's
	// path must stay under the 107 bytes of a unix socket address.
	dir, err := os.MkdirTemp("", "testpg")
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, DSN: fmt.Sprintf("host=%s port=5432 user=postgres dbname=postgres sslmode=disable", dir)}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	var cred *syscall.Credential
	if os.Getuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			u, err = user.Lookup("nobody")
		}
		if err != nil {
			return nil, fmt.Errorf("looking up a user to run postgres as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	run := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(bindir, name), args...)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "TZ=UTC"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
		return cmd
	}
	init := run("initdb", "--no-sync", "--auth=trust", "--username=postgres", "--encoding=UTF8", "-D", data)
	if out, err := init.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	logPath := filepath.Join(dir, "postgres.log")
	if s.logf, err = os.Create(logPath); err != nil {
		return nil, err
	}
	srv := run("postgres", "-D", data,
		"-c", "listen_addresses=", "-c", "unix_socket_directories="+dir, "-c", "unix_socket_permissions=0700",
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "shared_buffers=16MB", "-c", "max_connections=100", "-c", "log_min_messages=warning")
	srv.Stdout, srv.Stderr = s.logf, s.logf
	if err := srv.Start(); err != nil {
		return nil, fmt.Errorf("starting postgres: %w", err)
	}
	s.cmd, s.exited = srv, make(chan struct{})
	go func() { srv.Wait(); close(s.exited) }()
	deadline := time.Now().Add(testenv.Scale(30 * time.Second))
	for {
		err := ping(s.DSN)
		if err == nil {
			return s, nil
		}
		select {
		case <-s.exited:
			b, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("postgres exited: %s", b)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("postgres did not start: %w\n%s", err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the server and removes its directory.
func (s *Server) Stop() error {
	var err error
	if s.cmd != nil {
		// SIGINT is the fast shutdown: connections are dropped.
		s.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-s.exited:
		case <-time.After(testenv.Scale(20 * time.Second)):
			syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.exited
			err = errors.New("postgres did not stop within 20s of SIGINT: killed")
		}
		s.cmd = nil
	}
	if s.logf != nil {
		s.logf.Close()
		s.logf = nil
	}
	if rerr := os.RemoveAll(s.Dir); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

func ping(dsn string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	return c.Ping(ctx)
}

// NewDatabase creates an empty database on s for one test and returns its
// DSN.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	var b [6]byte
	rand.Read(b[:])
	name := "t_" + hex.EncodeToString(b[:])
	ctx := context.Background()
	c, err := pgx.Connect(ctx, s.DSN)
	if err != nil {
		t.Fatalf("connecting to the test server: %v", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("creating database: %v", err)
	}
	return fmt.Sprintf("host=%s port=5432 user=postgres dbname=%s sslmode=disable", s.Dir, name)
}
