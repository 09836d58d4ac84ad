package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"golang.org/x/term"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/api/client"
	"github.com/buildgw/buildgw/buildcontext"
)

// NewCmdSubmit returns the submit command.
func NewCmdSubmit(g *globals) *cobra.Command {
	var (
		spec      api.BuildSpec
		buildArgs []string
		labels    []string
		quiet     bool
		compress  string
	)
	cmd := &cobra.Command{
		Use:   "submit [flags] CONTEXT_DIR",
		Short: "Upload a build context, follow the build, print the pushed digest",
		Long: `submit streams CONTEXT_DIR (minus what .dockerignore excludes) to the gateway,
follows the build log on stderr and prints the pushed digest as the last line
of stdout; with --output json it prints the build's final state instead. It
exits 0 only if the build succeeded; an interrupt cancels the build.

A gateway that cannot be reached or is shutting down (no connection, 502,
503 or 504) is waited out for --restart-wait, with backoff and jitter, one
line on stderr per wait: the whole context is sent again from CONTEXT_DIR
with the same Idempotency-Key, so a submission whose answer was lost is not
built twice. Other refusals (401, 403, 4xx but 408) are not retried; a full
queue (429) is waited out as the gateway's Retry-After says.

After the upload it follows the build with the read token the gateway
returned for it, so a token that expires mid-build (a CI job's ID token)
does not lose the outcome. A build that a gateway restart interrupts is
submitted again from CONTEXT_DIR with the same Idempotency-Key, at most 3
times; after that, or if submitting it again fails, submit exits with
status 4.`,
		Example: `  buildctl-lite submit -t registry.example.com/team/app:dev .
  buildctl-lite submit -f docker/Dockerfile --build-arg VERSION=1.2 --target release -t reg.example.com/app:1.2 .`,
		Args: submitArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if spec.BuildArgs, err = buildArgValues(buildArgs, os.LookupEnv); err != nil {
				return err
			}
			if spec.Labels, err = keyValues("--label", labels); err != nil {
				return err
			}
			if len(spec.Destinations) == 0 {
				return errors.New("no destination: give at least one -t/--tag registry/repo:tag")
			}
			return submit(cmd, g, args[0], spec, compress, quiet || g.json())
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&spec.Destinations, "tag", "t", nil, "destination image reference, repeatable")
	f.StringVarP(&spec.Dockerfile, "file", "f", "", "Dockerfile inside CONTEXT_DIR, relative to it or absolute (default Dockerfile)")
	f.StringArrayVar(&buildArgs, "build-arg", nil, "build argument K=V, repeatable; K alone takes the value of environment variable K, and is left out if that is unset (as docker build does)")
	f.StringArrayVar(&labels, "label", nil, "image label K=V, repeatable")
	f.StringVar(&spec.Target, "target", "", "build stage to stop at")
	f.StringVar(&spec.Runner, "runner", "", "sandbox to build in: kaniko (default) or dind")
	f.BoolVar(&spec.NoCache, "no-cache", false, "build every step afresh, using and keeping no cache of earlier builds")
	f.BoolVarP(&quiet, "quiet", "q", false, "no progress and no build log on stderr")
	f.StringVar(&compress, "compress", "auto", "compression of the uploaded context: gzip, none, or auto (none when the gateway is on this host's loopback, where it would only cost time, else gzip)")
	return cmd
}

func keyValues(flag string, kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s %q: want KEY=VALUE", flag, kv)
		}
		m[k] = v
	}
	return m, nil
}

// buildArgValues parses --build-arg values as docker build does: K=V, or
// K alone for the value of environment variable K (looked up with lookup),
// left out if K is unset so that the Dockerfile's default applies.
func buildArgValues(kvs []string, lookup func(string) (string, bool)) (map[string]string, error) {
	var m map[string]string
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if k == "" {
			return nil, fmt.Errorf("--build-arg %q: want KEY=VALUE or KEY", kv)
		}
		if !ok {
			if v, ok = lookup(k); !ok {
				continue
			}
		}
		if m == nil {
			m = map[string]string{}
		}
		m[k] = v
	}
	return m, nil
}

// contextCompression is the gzip level of the context sent to server for
// the --compress mode.
func contextCompression(mode, server string) (int, error) {
	switch mode {
	case "gzip":
		return gzip.BestSpeed, nil
	case "none":
		return gzip.NoCompression, nil
	case "auto":
		// Over loopback the bytes cross no network: compressing them
		// takes longer than sending them (bench/overhead -phases; figures
		// in bench/README.md).
		if u, err := url.Parse(server); err == nil {
			h := u.Hostname()
			if ip := net.ParseIP(h); h == "localhost" || (ip != nil && ip.IsLoopback()) {
				return gzip.NoCompression, nil
			}
		}
		return gzip.BestSpeed, nil
	}
	return 0, fmt.Errorf("--compress %q: want auto, gzip or none", mode)
}

func submit(cmd *cobra.Command, g *globals, dir string, spec api.BuildSpec, compress string, quiet bool) error {
	ctx := cmd.Context()
	stderr := cmd.ErrOrStderr()
	if quiet {
		stderr = io.Discard
	}
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() {
		return fmt.Errorf("context %s is not a directory", dir)
	}
	df, err := dockerfileIn(dir, spec.Dockerfile)
	if err != nil {
		return err
	}
	if spec.Dockerfile != "" {
		spec.Dockerfile = df
	}
	if err := checkDestinations(spec.Destinations); err != nil {
		return err
	}
	server, token, err := g.credentials()
	if err != nil {
		return err
	}
	level, err := contextCompression(compress, server)
	if err != nil {
		return err
	}
	c, err := g.clientAt(cmd.ErrOrStderr(), server, token)
	if err != nil {
		return err
	}
	copts := []buildcontext.Option{buildcontext.WithDockerfile(df), buildcontext.WithCompression(level)}
	if _, err := os.Stat(filepath.Join(dir, df)); err != nil {
		return fmt.Errorf("no Dockerfile: %s not found in %s", df, dir)
	}

	key, err := client.NewIdempotencyKey()
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		progress := newProgress(stderr, dir, copts)
		// The same key each time: a resubmission after an interrupting
		// restart starts one new build, however often it is retried.
		acc, err := c.SubmitWithKey(ctx, key, spec, func() io.ReadCloser { return buildcontext.Reader(ctx, dir, copts...) }, progress.update)
		progress.done()
		if err != nil {
			if attempt > 0 {
				return &ExitError{Code: exitRestarted, Err: fmt.Errorf("a gateway restart interrupted the build and submitting it again failed (%v); run this submit again", describe(err))}
			}
			var ue *client.UnreachableError
			if errors.As(err, &ue) {
				return fmt.Errorf("submitting build: %w; raise --restart-wait to wait longer", err)
			}
			return fmt.Errorf("submitting build: %w", err)
		}
		fmt.Fprintf(stderr, "build %s queued\n", acc.ID)
		b, err := follow(cmd, c, acc, stderr)
		if err != nil {
			return err
		}
		if b.Interrupted() {
			if attempt < maxResubmits {
				fmt.Fprintf(stderr, "build %s: %s; submitting it again (%d of %d)\n", b.ID, b.Error, attempt+1, maxResubmits)
				continue
			}
			return &ExitError{Code: exitRestarted, Err: fmt.Errorf("build %s: %s, %d times; run this submit again", b.ID, b.Error, attempt+1)}
		}
		return report(cmd, g, b)
	}
}

// maxResubmits bounds how often submit sends a build again that gateway
// restarts interrupted.
const maxResubmits = 3

// exitRestarted is the exit status of a build that a gateway restart
// interrupted and that was not (or could not be) submitted again.
const exitRestarted = 4

// follow streams the build's log until it ends and returns its final
// state. Everything after the upload uses the build's read token, so
// that credentials which expire mid-build (a CI job's ID token) do not
// lose its outcome; an interrupt cancels the build on the gateway too.
func follow(cmd *cobra.Command, c *client.Client, acc *api.Accepted, stderr io.Writer) (*api.Build, error) {
	ctx := cmd.Context()
	if acc.ReadToken != "" {
		c = c.WithToken(acc.ReadToken)
	}
	eg, ectx := errgroup.WithContext(ctx)
	eg.Go(func() error { return c.Logs(ectx, acc.ID, true, stderr) })
	err := eg.Wait()
	if ctx.Err() != nil {
		cctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if _, cerr := c.Cancel(cctx, acc.ID); cerr == nil {
			return nil, fmt.Errorf("interrupted: build %s cancelled", acc.ID)
		}
		return nil, fmt.Errorf("interrupted: build %s may still be running", acc.ID)
	}
	if err != nil {
		return nil, fmt.Errorf("following build %s: %w", acc.ID, err)
	}
	b, err := c.Get(ctx, acc.ID)
	if err != nil {
		return nil, fmt.Errorf("getting build %s: %w", acc.ID, err)
	}
	return b, nil
}

// report prints a final build's outcome: the digest alone, last on
// stdout, for command composition, or the state with --output json.
func report(cmd *cobra.Command, g *globals, b *api.Build) error {
	if g.json() {
		if err := printJSON(cmd.OutOrStdout(), b); err != nil {
			return err
		}
	}
	switch b.Status {
	case api.StatusSucceeded:
		if g.json() {
			return nil
		}
		fmt.Fprintln(cmd.OutOrStdout(), b.Digest)
		return nil
	case api.StatusCancelled:
		return fmt.Errorf("build %s was cancelled", b.ID)
	default:
		return fmt.Errorf("build %s %s: %s", b.ID, b.Status, b.Error)
	}
}

// progress draws an upload bar on a terminal and nothing elsewhere.
type progress struct {
	w     io.Writer
	on    bool
	total int64

	mu   sync.Mutex
	last time.Time
	n    int64
}

func newProgress(w io.Writer, dir string, opts []buildcontext.Option) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.on = true
		_, p.total, _ = buildcontext.Size(dir, opts...)
	}
	return p
}

func (p *progress) update(n int64) {
	if !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n = n
	if time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	p.draw()
}

func (p *progress) draw() {
	// The bar counts compressed bytes sent against the uncompressed size,
	// so it is an upper bound that ends at "done".
	fmt.Fprintf(p.w, "\ruploading context: %s sent (%s uncompressed)", human(p.n), human(p.total))
}

func (p *progress) done() {
	if !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.draw()
	fmt.Fprintln(p.w, " done")
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
