package server

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/examples/gitlab"
	"github.com/buildgw/buildgw/version"
)

// These routes need no authentication: a CI job fetches its template and
// its client before it can present a token, and version mismatches must
// be diagnosable without one. None of them reveals anything about builds.

// WithDownloads serves the client binaries in dir at
// GET /dl/buildctl-lite/{os}/{arch} and their checksums at
// GET /dl/buildctl-lite/{os}/{arch}.sha256. dir holds release files named
// buildctl-lite-{os}-{arch} (".exe" for windows) and optionally their
// SHA256SUMS; a plain "buildctl-lite" stands for the gateway's own
// platform. Default: no downloads (404).
func WithDownloads(dir string) Option { return func(s *Server) { s.downloads = dir } }

func (s *Server) publicRoutes(r *gin.Engine) {
	r.GET("/version", s.version)
	r.GET("/ci/gitlab/buildgw.yml", s.gitlabTemplate)
	r.GET("/dl/buildctl-lite/:os/:arch", s.download)
}

func (s *Server) version(c *gin.Context) {
	c.JSON(http.StatusOK, api.Version{Version: version.Version, Commit: version.Commit(), Kaniko: version.Kaniko()})
}

func (s *Server) gitlabTemplate(c *gin.Context) {
	c.Data(http.StatusOK, "text/yaml; charset=utf-8", gitlab.Template)
}

var platformPart = regexp.MustCompile(`^[a-z0-9]{1,16}$`)

// download serves one client binary, or with ".sha256" its checksum in
// sha256sum's format, named as the binary's download file.
func (s *Server) download(c *gin.Context) {
	goos, arch := c.Param("os"), c.Param("arch")
	arch, wantSum := strings.CutSuffix(arch, ".sha256")
	if !platformPart.MatchString(goos) || !platformPart.MatchString(arch) {
		c.Error(errorf(http.StatusNotFound, api.CodeNotFound, "no buildctl-lite for "+c.Param("os")+"/"+c.Param("arch")))
		return
	}
	name := "buildctl-lite-" + goos + "-" + arch
	if goos == "windows" {
		name += ".exe"
	}
	path, err := s.binary(name, goos, arch)
	if err != nil {
		c.Error(err)
		return
	}
	f, err := os.Open(path)
	if err != nil {
		c.Error(fmt.Errorf("opening %s: %w", name, err))
		return
	}
	defer f.Close()
	if wantSum {
		sum, err := s.checksum(name, f)
		if err != nil {
			c.Error(err)
			return
		}
		c.Data(http.StatusOK, "text/plain; charset=utf-8", []byte(sum+"  "+name+"\n"))
		return
	}
	fi, err := f.Stat()
	if err != nil {
		c.Error(err)
		return
	}
	c.Header("Content-Disposition", `attachment; filename="`+name+`"`)
	c.Header("Content-Type", "application/octet-stream")
	if d := s.writeRate.within(fi.Size()); d > 0 {
		// Anyone may download: a client that stops reading must not hold
		// the connection and the file for good. The deadline stays after
		// the handler, over net/http's final flush.
		http.NewResponseController(c.Writer).SetWriteDeadline(time.Now().Add(d))
	}
	http.ServeContent(c.Writer, c.Request, name, fi.ModTime(), f)
}

// binary finds the file of a platform's client.
func (s *Server) binary(name, goos, arch string) (string, error) {
	notFound := errorf(http.StatusNotFound, api.CodeNotFound, "this gateway has no buildctl-lite for "+goos+"/"+arch)
	if s.downloads == "" {
		return "", notFound
	}
	candidates := []string{filepath.Join(s.downloads, name)}
	if goos == runtime.GOOS && arch == runtime.GOARCH {
		candidates = append(candidates, filepath.Join(s.downloads, "buildctl-lite"))
	}
	for _, p := range candidates {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", notFound
}

// checksum is the file's line in SHA256SUMS if the release left one, else
// the file's digest.
func (s *Server) checksum(name string, f io.Reader) (string, error) {
	sums, err := os.Open(filepath.Join(s.downloads, "SHA256SUMS"))
	if err == nil {
		defer sums.Close()
		sc := bufio.NewScanner(sums)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) == 2 && strings.TrimPrefix(fields[1], "*") == name {
				return fields[0], nil
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("reading SHA256SUMS: %w", err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hashing %s: %w", name, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
