package kubernetes

import (
	"archive/tar"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/netutil"
	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/archive"
	"github.com/buildgw/buildgw/internal/minrate"
	"github.com/buildgw/buildgw/runners/kubernetes/podinit"
)

// dataServer serves, over TLS with a certificate of its own, each build's context and base images to its Pod and
// takes the image back, over one-time URLs: every build has a random
// token, each of its three URLs answers once, and none after the build's
// deadline or once the build has ended. Everything a Pod sends is hostile:
// it is unpacked beneath the build's output directory by package archive
// (no entry outside it, no link leading out of it), bounded in bytes and
// files, and read afterwards only by package ocilayout. A Pod may also
// open many connections and leave them silent: dataLimits bounds what
// they hold.
type dataServer struct {
	srv *http.Server
	ln  net.Listener
	url string
	lim dataLimits
	// caPEM is the server's own certificate, made at start: Pods trust it
	// and nothing else, so that nobody on the way learns a token or
	// answers in the gateway's place.
	caPEM []byte

	mu     sync.Mutex
	builds map[string]*transfer // by Pod name
}

// transfer is one build's registration.
type transfer struct {
	token    string
	ctxDir   string
	base     string // "" without base images
	out      string
	deadline time.Time
	max      int64
	used     map[string]bool
	// output is closed once the output has been received, with outErr
	// what unpacking it gave.
	output chan struct{}
	outErr error
}

// dataLimits bound the data server's connections, each a file
// descriptor of the gateway's, so that silent Pods cannot hold them for
// good.
type dataLimits struct {
	// conns is how many connections the server holds at once; more wait
	// in the kernel's accept queue, which costs the gateway no
	// descriptor, until one closes.
	conns int
	// header bounds a connection's TLS handshake and the header of each
	// request.
	header time.Duration
	// idle is how long a kept-alive connection may wait for its next
	// request.
	idle time.Duration
	// body bounds the arrival of the body of any request but a claimed
	// output, which output bounds instead.
	body time.Duration
	// output is the slowest a build's image may arrive: in the cluster,
	// a Pod that sends less is stalled or hostile.
	output minrate.Rate
}

func defaultDataLimits() dataLimits {
	return dataLimits{
		conns:  1024,
		header: 30 * time.Second,
		idle:   30 * time.Second,
		body:   30 * time.Second,
		output: minrate.Rate{MinBytesPerSecond: 64 << 10, Window: 30 * time.Second},
	}
}

func newDataServer(listen, url string, lim dataLimits) (*dataServer, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("kubernetes runner: data server: %w", err)
	}
	if url == "" {
		url = "https://" + ln.Addr().String()
	}
	if !strings.HasPrefix(url, "https://") {
		ln.Close()
		return nil, fmt.Errorf("kubernetes runner: data server URL %q: want https://", url)
	}
	host, _ := splitURL(url)
	// Each build's NetworkPolicy lets its Pod reach this host as an
	// ipBlock: a name would make every build fail at its first step.
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("kubernetes runner: data server URL %q: want the IP address by which Pods reach it (their NetworkPolicies allow it by address)", url)
	}
	cert, caPEM, err := selfSigned(host)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("kubernetes runner: data server certificate: %w", err)
	}
	// Counted before the handshake: a connection that never completes
	// one holds a descriptor too.
	ln = netutil.LimitListener(ln, lim.conns)
	ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	d := &dataServer{ln: ln, url: strings.TrimSuffix(url, "/"), lim: lim, caPEM: caPEM, builds: map[string]*transfer{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/pods/{name}"+podinit.PathContext, d.serveContext)
	mux.HandleFunc("GET /v1/pods/{name}"+podinit.PathBase, d.serveBase)
	mux.HandleFunc("PUT /v1/pods/{name}"+podinit.PathOutput, d.receiveOutput)
	// ReadHeaderTimeout bounds the handshake too. No ReadTimeout: it
	// would bound the output as a whole; bodies are bounded per request
	// instead (bodyDeadline, receiveOutput).
	d.srv = &http.Server{Handler: d.bodyDeadline(mux), ReadHeaderTimeout: lim.header, IdleTimeout: lim.idle}
	go d.srv.Serve(ln)
	return d, nil
}

// bodyDeadline bounds the body of every request by lim.body
// (minrate.SetBodyDeadline); receiveOutput bounds the output by its rate
// instead.
func (d *dataServer) bodyDeadline(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		minrate.SetBodyDeadline(w, r, d.lim.body)
		h.ServeHTTP(w, r)
	})
}

func (d *dataServer) close() error { return d.srv.Close() }

// selfSigned makes a key and a certificate for host (an IP address or a
// DNS name), valid for a year.
func selfSigned(host string) (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "buildgw data server"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// register makes the one-time URLs of the build whose Pod is name, and
// returns the base URL and the token.
func (d *dataServer) register(name string, t *transfer) (string, string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	t.token = hex.EncodeToString(b)
	t.used = map[string]bool{}
	t.output = make(chan struct{})
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.builds[name]; ok {
		return "", "", fmt.Errorf("build %s is running already", name)
	}
	d.builds[name] = t
	return d.url + "/v1/pods/" + name, t.token, nil
}

func (d *dataServer) unregister(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.builds, name)
}

// claim returns the build of the request if its token is right and the
// URL unused and in time, marking the URL used.
func (d *dataServer) claim(w http.ResponseWriter, r *http.Request, what string) *transfer {
	name := r.PathValue("name")
	auth, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.builds[name]
	if t == nil || !ok || subtle.ConstantTimeCompare([]byte(auth), []byte(t.token)) != 1 {
		// The same answer for an unknown build and a wrong token.
		httpError(w, http.StatusUnauthorized, "unauthorized", "no such build or wrong token")
		return nil
	}
	if time.Now().After(t.deadline) {
		httpError(w, http.StatusGone, "expired", "the build's URLs have expired")
		return nil
	}
	if t.used[what] {
		httpError(w, http.StatusGone, "used", "the "+what+" URL has been used")
		return nil
	}
	t.used[what] = true
	return t
}

func httpError(w http.ResponseWriter, code int, c, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": c, "message": msg}})
}

func (d *dataServer) serveContext(w http.ResponseWriter, r *http.Request) {
	t := d.claim(w, r, "context")
	if t == nil {
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	// A Pod that stops reading holds the connection until the URLs
	// expire, no longer.
	http.NewResponseController(w).SetWriteDeadline(t.deadline)
	// An error past the headers can only cut the stream short; the Pod's
	// extraction then fails on a truncated archive.
	writeTree(r.Context(), w, t.ctxDir)
}

func (d *dataServer) serveBase(w http.ResponseWriter, r *http.Request) {
	t := d.claim(w, r, "base")
	if t == nil {
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	http.NewResponseController(w).SetWriteDeadline(t.deadline)
	if t.base == "" {
		tar.NewWriter(w).Close()
		return
	}
	writeTree(r.Context(), w, t.base)
}

func (d *dataServer) receiveOutput(w http.ResponseWriter, r *http.Request) {
	t := d.claim(w, r, "output")
	if t == nil {
		return
	}
	ctx, cancel := context.WithDeadline(r.Context(), t.deadline)
	defer cancel()
	// The context's deadline is checked between reads; the rate bound
	// ends a read that waits on a silent Pod.
	body := minrate.NewReader(w, http.MaxBytesReader(w, r.Body, t.max+1<<20), d.lim.output)
	_, err := archive.Extract(ctx, body, t.out, archive.Limits{MaxBytes: t.max, MaxFiles: 10000})
	t.outErr = err
	close(t.output)
	if me := (*minrate.Error)(nil); errors.As(err, &me) {
		httpError(w, http.StatusRequestTimeout, "too_slow", "the image arrived too slowly: "+me.Error())
		return
	}
	if err != nil {
		httpError(w, http.StatusBadRequest, "bad_output", err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// writeTree writes the directory tree dir (the gateway's own: an
// extracted context or a base image layout) as a tar: directories,
// regular files and symbolic links, as they are.
func writeTree(ctx context.Context, w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		} else if !fi.IsDir() && !fi.Mode().IsRegular() {
			return nil
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			h.Name += "/"
		}
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.CopyN(tw, f, h.Size)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// waitOutput waits until the Pod has sent its output, or ctx ends.
func (t *transfer) waitOutput(ctx context.Context) error {
	select {
	case <-t.output:
		return t.outErr
	case <-ctx.Done():
		return errors.New("the build's Pod sent no image")
	}
}
