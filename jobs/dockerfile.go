package jobs

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/dockerfile"
)

// argPredefiner is a runner whose builder predefines BuildKit's global
// ARGs (TARGETOS, TARGETSTAGE...) as BuildKit does, building on and for
// the platform it returns; the analysis resolves FROM with them, as that
// builder will.
type argPredefiner interface {
	PredefinedArgsPlatform() v1.Platform
}

// argLister is an argPredefiner whose builder predefines only some of
// those ARGs, the ones of dockerfile.PlatformArgs it returns (Docker
// 20.10's BuildKit lacks TARGETSTAGE). A FROM that uses another without
// a value is refused at submit, as for a runner that predefines none.
type argLister interface {
	PredefinedArgs() []string
}

// analyzeDockerfile analyzes the Dockerfile src of spec, to be built by
// runner. What it cannot resolve is the caller's to fix: a *SpecError,
// before any build work.
func analyzeDockerfile(src []byte, spec *ValidSpec, runner builder.Runner) (*dockerfile.Analysis, error) {
	var opts []dockerfile.Option
	if p, ok := runner.(argPredefiner); ok {
		l, some := runner.(argLister)
		switch {
		case !some:
			opts = append(opts, dockerfile.WithPredefinedArgs(p.PredefinedArgsPlatform()))
		case len(l.PredefinedArgs()) > 0:
			opts = append(opts, dockerfile.WithPredefinedArgs(p.PredefinedArgsPlatform(), l.PredefinedArgs()...))
		}
	}
	a, err := dockerfile.Analyze(src, spec.BuildArgs, spec.Target, opts...)
	if err != nil {
		return nil, &SpecError{Field: "dockerfile", Reason: spec.Dockerfile + ": " + err.Error()}
	}
	return a, nil
}

// Analysis returns the job's Dockerfile as analyzed when the build was
// accepted; nil once the job has ended, or for a job recovered after a
// restart that has not run yet.
func (j *Job) Analysis() *dockerfile.Analysis {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.analysis
}

// analysisForBuild returns the job's analysis. A job queued again after
// a restart has none in memory: its Dockerfile is analyzed again from its
// context, which no build has touched yet.
func (j *Job) analysisForBuild(runner builder.Runner) (*dockerfile.Analysis, error) {
	if a := j.Analysis(); a != nil {
		return a, nil
	}
	src, err := dockerfile.Read(filepath.Join(j.workspace, "context"), j.Spec.Dockerfile)
	if err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(src); j.DockerfileSHA256 != "" && hex.EncodeToString(sum[:]) != j.DockerfileSHA256 {
		return nil, errors.New("the Dockerfile changed since the build was accepted")
	}
	return analyzeDockerfile(src, j.Spec, runner)
}
