// Package podinit is the part of the kubernetes runner that runs in the
// build's Pod, linked into the executor (cmd/kaniko-executor) like
// runners/kaniko/sandboxinit. It fetches the build context and the base
// images from the gateway over the build's one-time URLs, starts the
// executor in user, mount, pid, IPC and UTS namespaces of its own (and a
// network namespace of its own unless the build has egress), the same
// sandbox the rootless kaniko runner gives a build, and sends the OCI
// layout kaniko wrote back to the gateway. What the runner and the Pod
// agree on (environment, URL paths, directories) is defined here once.
package podinit

import (
	"archive/tar"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/archive"
	"github.com/buildgw/buildgw/netmode"
	"github.com/buildgw/buildgw/sandbox"
)

// Environment of the Pod's container, set by the runner.
const (
	// EnvURL is the build's base URL on the gateway's data server; the
	// Pod GETs URL+PathContext and URL+PathBase and PUTs URL+PathOutput.
	EnvURL = "BUILDGW_POD_URL"
	// EnvToken is the build's bearer token for those URLs.
	EnvToken = "BUILDGW_POD_TOKEN"
	// EnvNetwork is the build's network mode (package netmode).
	EnvNetwork = "BUILDGW_POD_NETWORK"
	// EnvMaxOutput bounds the bytes of the output the Pod sends back.
	EnvMaxOutput = "BUILDGW_POD_MAX_OUTPUT"
	// EnvCA is the data server's certificate (PEM), the only one the Pod
	// trusts for EnvURL.
	EnvCA = "BUILDGW_POD_CA"
	// EnvExtraCAs is PEM roots the executor trusts besides the image's
	// system ones (builder.Request.ExtraCAs), for what kaniko fetches
	// itself: ADD URLs.
	EnvExtraCAs = "BUILDGW_POD_EXTRA_CAS"
)

// Paths of the data server under EnvURL.
const (
	PathContext = "/context"
	PathBase    = "/base"
	PathOutput  = "/output"
)

// Paths in the Pod's container.
const (
	// Executor is the executor in the image.
	Executor = "/kaniko/executor"
	// WorkDir is the Pod's scratch volume (an emptyDir): context, base
	// images, the job root and kaniko's output.
	WorkDir = "/buildgw"
	// SystemCAs is the image's CA bundle.
	SystemCAs = "/etc/ssl/certs/ca-certificates.crt"
)

// ExitFetch and ExitUpload are the container's exit codes when the data
// could not be fetched from or sent to the gateway (kaniko's own are 0
// and 1, sandboxinit's 125).
const (
	ExitFetch  = 120
	ExitUpload = 121
)

// Requested reports whether the executor runs as a kubernetes runner's
// Pod.
func Requested() bool { return os.Getenv(EnvURL) != "" }

// Run does the Pod's work and returns the container's exit code. args are
// kaniko's arguments.
func Run(args []string) int {
	url, token, mode := os.Getenv(EnvURL), os.Getenv(EnvToken), netmode.Mode(os.Getenv(EnvNetwork))
	var maxOut int64
	fmt.Sscan(os.Getenv(EnvMaxOutput), &maxOut)
	pool := x509.NewCertPool()
	okCA := pool.AppendCertsFromPEM([]byte(os.Getenv(EnvCA)))
	for _, k := range []string{EnvURL, EnvToken, EnvNetwork, EnvMaxOutput, EnvCA} {
		os.Unsetenv(k)
	}
	if !okCA {
		fmt.Fprintf(os.Stderr, "buildgw pod: no data server certificate in %s\n", EnvCA)
		return ExitFetch
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	p := &pod{url: url, token: token, client: &http.Client{Transport: tr}}
	dirs := map[string]string{}
	for _, d := range []string{"context", "base", "out"} {
		dirs[d] = filepath.Join(WorkDir, d)
		if err := os.Mkdir(dirs[d], 0o755); err != nil {
			fmt.Fprintf(os.Stderr, "buildgw pod: %v\n", err)
			return ExitFetch
		}
	}
	if err := p.fetch(ctx, PathContext, dirs["context"]); err != nil {
		fmt.Fprintf(os.Stderr, "buildgw pod: fetching the build context: %v\n", err)
		return ExitFetch
	}
	if err := p.fetch(ctx, PathBase, dirs["base"]); err != nil {
		fmt.Fprintf(os.Stderr, "buildgw pod: fetching the base images: %v\n", err)
		return ExitFetch
	}
	// The gateway closes a connection idle for long, as this one is for
	// the whole build: the image goes on a new one, not on one the
	// gateway may be closing just then.
	p.client.CloseIdleConnections()
	code, err := build(ctx, args, dirs, mode)
	if err != nil {
		fmt.Fprintf(os.Stderr, "buildgw pod: %v\n", err)
		return 125
	}
	if code != 0 {
		return code
	}
	if err := p.upload(ctx, dirs["out"], maxOut); err != nil {
		fmt.Fprintf(os.Stderr, "buildgw pod: sending the image: %v\n", err)
		return ExitUpload
	}
	return 0
}

type pod struct {
	url, token string
	client     *http.Client
}

func (p *pod) request(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, p.url+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, b)
	}
	return resp, nil
}

// fetch unpacks the tar the gateway serves at path into dir.
func (p *pod) fetch(ctx context.Context, path, dir string) error {
	resp, err := p.request(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// The gateway is trusted, but the archive package is the one way
	// this code base unpacks a tar.
	_, err = archive.Extract(ctx, resp.Body, dir, archive.Limits{MaxBytes: 1 << 40, MaxFiles: 1 << 30})
	return err
}

// build runs the executor in its sandbox and returns kaniko's exit code.
func build(ctx context.Context, args []string, dirs map[string]string, mode netmode.Mode) (int, error) {
	root := sandbox.Root{Dir: filepath.Join(WorkDir, "root"), Executor: Executor, BindExecutor: true, SystemCAs: SystemCAs,
		ExtraCAs: []byte(os.Getenv(EnvExtraCAs))}
	if err := root.Prepare(); err != nil {
		return 0, err
	}
	cmd := exec.Command(Executor, args...)
	cmd.Dir = root.Dir
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root",
		"DOCKER_CONFIG=" + sandbox.DockerConfig,
		"SSL_CERT_DIR=" + sandbox.CertDir,
		sandbox.EnvRoot + "=" + root.Dir,
		sandbox.EnvContext + "=" + dirs["context"],
		sandbox.EnvOutput + "=" + dirs["out"],
		sandbox.EnvBase + "=" + dirs["base"],
		sandbox.EnvExecutor + "=" + Executor,
		sandbox.EnvProcBind + "=1",
	}
	flags := uintptr(unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS)
	if mode != netmode.Egress {
		// Loopback only. With egress the build shares the Pod's network,
		// which the build's NetworkPolicy bounds.
		flags |= unix.CLONE_NEWNET
		cmd.Env = append(cmd.Env, sandbox.EnvNetwork+"="+string(netmode.None))
	}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	// Without privilege in the Pod, a user namespace maps only the Pod's
	// own user: the build's root is that user, and no other uid exists.
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:                 flags,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
		GidMappingsEnableSetgroups: false,
		Setsid:                     true,
		Pdeathsig:                  syscall.SIGKILL,
	}
	// The sandbox holds until this process is no longer dumpable (see
	// below), which it cannot be while it starts the sandbox: the user
	// namespace's maps are written through the child's proc files, which
	// are the child's user's only if it is dumpable.
	holdR, release, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer holdR.Close()
	defer release.Close()
	cmd.Env = append(cmd.Env, sandbox.EnvHold+"="+Executor)
	if cmd.ExtraFiles, err = sandbox.ExtraFiles(map[sandbox.FD]*os.File{sandbox.Release: holdR}); err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("starting the sandbox: %w", err)
	}
	holdR.Close()
	// The build sees this process in the Pod's proc (sandbox.EnvProcBind).
	// Its memory, environment and root are closed to the build already:
	// the build's user namespace is a child of this process's, and reading
	// them across that boundary takes CAP_SYS_PTRACE in the Pod's. Not
	// dumpable, they stay closed should that ever not hold.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return 0, fmt.Errorf("making the Pod's init undumpable: %w", err)
	}
	if _, err := release.Write([]byte{1}); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return 0, fmt.Errorf("releasing the sandbox: %w", err)
	}
	release.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		// The sandbox's init is pid 1 of its namespace: killing it kills
		// every process of the build.
		cmd.Process.Kill()
		<-done
		return 0, errors.New("stopped")
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ee.ExitCode() < 0 {
			return 128 + 9, nil
		}
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 0, err
	}
	return 0, nil
}

// upload sends dir, which the build wrote and which is therefore
// hostile, as a tar: directories and regular files only, never through
// a symbolic link, at most max bytes of content (0: no bound here; the
// gateway has its own).
func (p *pod) upload(ctx context.Context, dir string, max int64) error {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeTar(dir, pw, max)) }()
	ctx, cancel := context.WithTimeout(ctx, time.Hour)
	defer cancel()
	resp, err := p.request(ctx, http.MethodPut, PathOutput, pr)
	pr.CloseWithError(errors.New("request ended"))
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

func writeTar(dir string, w io.Writer, max int64) error {
	tw := tar.NewWriter(w)
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		switch {
		case d.IsDir():
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: filepath.ToSlash(rel) + "/", Mode: 0o755})
		case d.Type().IsRegular():
		default:
			return nil // links, FIFOs, devices: nothing kaniko writes
		}
		f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		total += fi.Size()
		if max > 0 && total > max {
			return fmt.Errorf("the output exceeds %d bytes", max)
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: filepath.ToSlash(rel), Mode: 0o644, Size: fi.Size()}); err != nil {
			return err
		}
		_, err = io.CopyN(tw, f, fi.Size())
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
