// Package server is buildgw's HTTP API, v1, on gin: authentication, the
// streaming build upload, status, logs, cancel and list.
package server

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/audit"
	"github.com/buildgw/buildgw/auth"
	"github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/internal/minrate"
	"github.com/buildgw/buildgw/jobs"
)

// maxSpecBytes bounds the spec part, which is read into memory.
const maxSpecBytes = 1 << 20

// uploadBufferSize is the read buffer of one upload.
const uploadBufferSize = 1 << 20

// Server serves the API for one jobs.Manager.
type Server struct {
	m        *jobs.Manager
	auth     auth.Authenticator
	log      *slog.Logger
	metrics  *Metrics
	policy   Policy
	auditLog *audit.Logger
	networks auth.Networks
	// identities says whether an identity is still configured and where
	// it may be used from, for requests that a build's read token
	// authenticates as its owner.
	identities func(auth.Identity) (auth.Networks, bool)
	// uploadRate bounds how slowly a submission's body may arrive.
	uploadRate UploadRate
	// bodyTimeout bounds how long any other request body may take.
	bodyTimeout time.Duration
	// writeRate bounds writes to clients that stop reading.
	writeRate WriteRate
	// downloads holds the client binaries served at /dl; "" serves none.
	downloads string
	ready     readiness
	handler   http.Handler
}

// Policy decides what an identity may build. It is asked twice per
// submission: with a nil Dockerfile before the context is read, and with
// the Dockerfile once it is. A refusal is a *jobs.DeniedError. ctx is
// the request's: the second check may look up base images.
type Policy interface {
	Authorize(ctx context.Context, id auth.Identity, spec *jobs.ValidSpec, analysis *dockerfile.Analysis) (rule string, g jobs.Grant, err error)
}

// Option configures a Server.
type Option func(*Server)

// WithMetrics serves mt at /metrics (authenticated like the API) and
// counts authentication failures in it. Default: no /metrics.
func WithMetrics(mt *Metrics) Option { return func(s *Server) { s.metrics = mt } }

// WithPolicy enforces p on every submission. Default: every authenticated
// identity may build anything (for tests; the gateway always sets one).
func WithPolicy(p Policy) Option { return func(s *Server) { s.policy = p } }

// WithAudit writes authentication failures and authorization decisions to
// l. Default: no audit log.
func WithAudit(l *audit.Logger) Option { return func(s *Server) { s.auditLog = l } }

// WithNetworks refuses requests from addresses n does not allow, before
// authentication. Default: any address.
func WithNetworks(n auth.Networks) Option { return func(s *Server) { s.networks = n } }

// WithIdentities holds a build's read token to its owner's standing: f
// returns where the identity's own credentials may be used from (nil: any
// address) and whether it is still configured at all. A read token ends
// with its owner: once the owner's token or mTLS identity, or its OIDC
// issuer, is removed from the configuration, its builds' read tokens are
// refused too. Default: every owner, from any address.
func WithIdentities(f func(auth.Identity) (networks auth.Networks, known bool)) Option {
	return func(s *Server) { s.identities = f }
}

// New returns a Server. log may be nil.
func New(m *jobs.Manager, authn auth.Authenticator, log *slog.Logger, opts ...Option) *Server {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Server{m: m, auth: authn, log: log}
	for _, o := range opts {
		o(s)
	}
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	// ClientIP() is the peer's address, which the audit log records as
	// source_ip. gin would otherwise take it from X-Forwarded-For or
	// X-Real-IP of any client, letting a caller forge its audited address.
	r.ForwardedByClientIP = false
	// No redirects: they are for browsers. The API's paths are exact, and
	// gin answers a redirect itself, without the middleware below: no
	// network allowlist, no request ID, no JSON error, and a 307 that
	// asks a client to send its whole upload again. Such a path gets
	// the 404 of any other unknown one.
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.Use(gin.Recovery(), requestIDMiddleware, s.errorMiddleware, s.networkMiddleware)
	r.GET("/healthz", s.healthz)
	r.GET("/readyz", s.readyz)
	s.publicRoutes(r)
	if s.metrics != nil {
		r.GET("/metrics", s.authMiddleware, gin.WrapH(s.metrics.handler()))
	}
	v1 := r.Group("/v1", s.authMiddleware)
	v1.POST("/builds", s.submit)
	v1.GET("/builds", s.list)
	v1.GET("/builds/:id", s.get)
	v1.GET("/builds/:id/logs", s.logs)
	v1.POST("/builds/:id/cancel", s.cancel)
	r.NoRoute(func(c *gin.Context) {
		c.Error(errorf(http.StatusNotFound, api.CodeNotFound, "no such endpoint: "+c.Request.Method+" "+c.Request.URL.Path))
	})
	s.handler = r
	return s
}

// ServeHTTP implements http.Handler. It bounds the request's body by
// WithBodyTimeout (minrate.SetBodyDeadline; submit lifts it or replaces
// it by WithUploadRate once it reads an accepted upload) and the writes
// of its answer by WithWriteRate before gin routes it: gin answers some
// requests itself, without running any middleware, and net/http then
// reads what is left of their body, and writes their answer, with no
// bound of its own.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	minrate.SetBodyDeadline(w, r, s.bodyTimeout)
	if s.writeRate.Window > 0 {
		w = newBoundedWriter(w, s.writeRate)
	}
	s.handler.ServeHTTP(w, r)
}

func (s *Server) healthz(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) }

// submit reads the multipart body as a stream: the spec part first, then
// the context part, extracted straight into the job's workspace while it
// arrives. The body is never parsed as a whole.
func (s *Server) submit(c *gin.Context) {
	// Checked before any of the body is read.
	key, err := idempotencyKey(c.Request.Header)
	if err != nil {
		c.Error(err)
		return
	}
	ct, params, err := mime.ParseMediaType(c.GetHeader("Content-Type"))
	if err != nil || ct != "multipart/form-data" {
		c.Error(errorf(http.StatusUnsupportedMediaType, api.CodeInvalidSpec, "want a multipart/form-data body with parts spec and context"))
		return
	}
	if params["boundary"] == "" {
		c.Error(errorf(http.StatusBadRequest, api.CodeInvalidSpec, "multipart/form-data without a boundary"))
		return
	}
	// A large buffer under the multipart reader: through net/http's own
	// 4 KiB one, every read down to the file writes is at most 4 KiB, and
	// the upload becomes CPU-bound (bench/upload).
	var in io.Reader = c.Request.Body
	if s.uploadRate.MinBytesPerSecond > 0 {
		in = newRateBody(c.Writer, in, s.uploadRate)
	}
	body := &countingBody{r: in}
	if s.metrics != nil {
		defer func() { s.metrics.uploadBytes.Add(float64(body.n)) }()
	}
	mr := multipart.NewReader(bufio.NewReaderSize(body, uploadBufferSize), params["boundary"])
	part, err := mr.NextPart()
	var se *Error
	if errors.As(err, &se) {
		c.Error(se) // too slow
		return
	}
	if err != nil || part.FormName() != "spec" {
		c.Error(errorf(http.StatusBadRequest, api.CodeInvalidSpec, "the first part must be spec, a JSON BuildSpec"))
		return
	}
	var spec api.BuildSpec
	dec := json.NewDecoder(io.LimitReader(part, maxSpecBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		if errors.As(err, &se) {
			c.Error(se)
			return
		}
		c.Error(errorf(http.StatusBadRequest, api.CodeInvalidSpec, "decoding spec: "+err.Error()))
		return
	}
	// One JSON object and nothing else: a second object or trailing junk
	// would otherwise be silently ignored.
	if _, err := dec.Token(); err != io.EOF {
		c.Error(errorf(http.StatusBadRequest, api.CodeInvalidSpec, "decoding spec: unexpected data after the JSON object"))
		return
	}
	part, err = mr.NextPart()
	if errors.As(err, &se) {
		c.Error(se)
		return
	}
	if err != nil || part.FormName() != "context" {
		c.Error(errorf(http.StatusBadRequest, api.CodeInvalidContext, "the second part must be context, a tar archive (optionally gzip-compressed)"))
		return
	}
	id := identity(c)
	readToken, readSum, err := newReadToken()
	if err != nil {
		c.Error(err)
		return
	}
	var upload io.Reader = part
	unbounded := s.uploadRate.MinBytesPerSecond == 0 && s.bodyTimeout > 0
	if unbounded {
		// Uploads have no bound: the one of other bodies is lifted once
		// the manager reads the context, after its checks of the runner,
		// the policy and the queue. What net/http reads of a refused
		// submission's rest stays bounded.
		upload = minrate.LiftOnRead(c.Writer, part)
	}
	j, err := s.m.Submit(c.Request.Context(), jobs.SubmitRequest{
		Owner:           id.Name,
		Identity:        id,
		Spec:            spec,
		IdempotencyKey:  key,
		Authorize:       s.authorizer(c, id),
		ReadTokenSHA256: readSum,
	}, upload)
	if err != nil {
		if unbounded {
			// Refused during the upload (too large, say): the rest, which
			// net/http reads before it answers, is bounded again.
			minrate.SetBodyDeadline(c.Writer, c.Request, s.bodyTimeout)
		}
		// Policy refusals are audited where they are made; a refused
		// upload (too large for the identity, hostile) is audited here.
		var de *jobs.DeniedError
		if he := toHTTP(err); he.Status < 500 && !errors.As(err, &de) && s.policy != nil {
			s.audit(audit.Record{
				Event: audit.EventAuthz, RequestID: requestID(c), Identity: &id, SourceIP: c.ClientIP(),
				Action: "build.submit", Decision: audit.DecisionDeny, Reason: he.Message,
				Destinations: spec.Destinations, BuildArgNames: audit.BuildArgNames(spec.BuildArgs),
			}, audit.SecretBuildArgValues(spec.BuildArgs, spec.SecretBuildArgs)...)
		}
		c.Error(err)
		return
	}
	s.log.Info("build submitted", "request_id", requestID(c), "job", j.ID, "owner", id.Name, "upload_bytes", body.n)
	c.JSON(http.StatusAccepted, api.Accepted{
		ID:        j.ID,
		Status:    j.Status(),
		StatusURL: "/v1/builds/" + j.ID,
		LogsURL:   "/v1/builds/" + j.ID + "/logs",
		ReadToken: readToken,
	})
}

// idempotencyKey returns the request's Idempotency-Key, "" if it sends
// none (or an empty one, which never made a key).
func idempotencyKey(h http.Header) (string, error) {
	keys := h.Values(api.IdempotencyKeyHeader)
	switch {
	case len(keys) == 0 || len(keys) == 1 && keys[0] == "":
		return "", nil
	case len(keys) > 1:
		return "", errorf(http.StatusBadRequest, api.CodeInvalidSpec, "send one "+api.IdempotencyKeyHeader+" header, not "+strconv.Itoa(len(keys)))
	case !api.ValidIdempotencyKey(keys[0]):
		return "", errorf(http.StatusBadRequest, api.CodeInvalidSpec, api.IdempotencyKeyHeader+" must be 1 to "+strconv.Itoa(api.MaxIdempotencyKey)+" printable ASCII characters without spaces")
	}
	return keys[0], nil
}

// authorizer asks the policy about one submission and audits its
// decision: every refusal, and the final allowance.
func (s *Server) authorizer(c *gin.Context, id auth.Identity) jobs.AuthorizeFunc {
	if s.policy == nil {
		return nil
	}
	return func(spec *jobs.ValidSpec, dockerfile []byte, analysis *dockerfile.Analysis) (jobs.Grant, error) {
		rule, g, err := s.policy.Authorize(c.Request.Context(), id, spec, analysis)
		if err == nil && dockerfile == nil {
			return g, nil // the final check follows
		}
		rec := audit.Record{
			Event: audit.EventAuthz, RequestID: requestID(c), Identity: &id, SourceIP: c.ClientIP(),
			Action: "build.submit", Decision: audit.DecisionAllow, Rule: rule,
			Dockerfile: spec.Dockerfile, Destinations: spec.Destinations,
			BuildArgNames: audit.BuildArgNames(spec.BuildArgs), Runner: spec.Runner,
		}
		if dockerfile != nil {
			sum := sha256.Sum256(dockerfile)
			rec.DockerfileSHA256 = hex.EncodeToString(sum[:])
		}
		if err != nil {
			rec.Decision, rec.Reason = audit.DecisionDeny, err.Error()
		}
		s.audit(rec, audit.SecretBuildArgValues(spec.BuildArgs, spec.SecretBuildArgs)...)
		return g, err
	}
}

func (s *Server) audit(r audit.Record, secrets ...string) {
	if s.auditLog == nil {
		return
	}
	if err := s.auditLog.Log(r, secrets...); err != nil {
		s.log.Error("writing audit record", "error", err)
	}
}

func (s *Server) get(c *gin.Context) {
	j, err := s.m.Get(identity(c).Name, c.Param("id"))
	if err != nil {
		c.Error(err)
		return
	}
	// The job keeps its status encoded between changes: pollers cost
	// neither encoding nor garbage.
	b, err := j.SnapshotJSON()
	if err != nil {
		c.Error(err)
		return
	}
	c.Data(http.StatusOK, "application/json; charset=utf-8", b)
}

func (s *Server) list(c *gin.Context) {
	out := api.BuildList{Builds: []api.Build{}}
	for _, j := range s.m.List(identity(c).Name) {
		out.Builds = append(out.Builds, j.Snapshot())
	}
	c.JSON(http.StatusOK, out)
}

func (s *Server) cancel(c *gin.Context) {
	j, err := s.m.Cancel(identity(c).Name, c.Param("id"))
	if err != nil {
		c.Error(err)
		return
	}
	// Give a running sandbox a moment to die so the answer is usually the
	// final state; the client polls otherwise.
	ctx, done := context.WithTimeout(c.Request.Context(), 5*time.Second)
	defer done()
	jobs.Wait(ctx, j)
	c.JSON(http.StatusAccepted, j.Snapshot())
}

func (s *Server) logs(c *gin.Context) {
	j, err := s.m.Get(identity(c).Name, c.Param("id"))
	if err != nil {
		c.Error(err)
		return
	}
	follow := c.Query("follow") == "1" || c.Query("follow") == "true"
	var offset int64
	if o := c.Query("offset"); o != "" {
		n, err := strconv.ParseInt(o, 10, 64)
		if err != nil || n < 0 {
			c.Error(errorf(http.StatusBadRequest, api.CodeInvalidSpec, "offset must be a non-negative integer"))
			return
		}
		offset = n
	}
	c.Header("Content-Type", "text/plain; charset=utf-8")
	c.Header("X-Content-Type-Options", "nosniff")
	c.Status(http.StatusOK)
	var w io.Writer = c.Writer
	if s.writeRate.Window > 0 {
		w = newDeadlineWriter(c.Writer, s.writeRate.Window)
	}
	if err := j.Log.WriteTo(c.Request.Context(), w, offset, follow); err != nil && !errors.Is(err, context.Canceled) {
		s.log.Info("streaming log", "job", j.ID, "error", err)
	}
}

// countingBody counts the bytes of an upload as they are read.
type countingBody struct {
	r io.Reader
	n int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += int64(n)
	return n, err
}
