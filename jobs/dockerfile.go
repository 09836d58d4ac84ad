package jobs

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"path/filepath"

	"github.com/buildgw/buildgw/dockerfile"
)

// analyzeDockerfile analyzes the Dockerfile src of spec. What it cannot
// resolve is the caller's to fix: a *SpecError, before any build work.
func analyzeDockerfile(src []byte, spec *ValidSpec) (*dockerfile.Analysis, error) {
	a, err := dockerfile.Analyze(src, spec.BuildArgs, spec.Target)
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
func (j *Job) analysisForBuild() (*dockerfile.Analysis, error) {
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
	return analyzeDockerfile(src, j.Spec)
}
