package jobs_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/jobs"
)

// stalledReader signals its first Read, then blocks until released.
type stalledReader struct {
	started chan struct{}
	release chan struct{}
	once    bool
}

func (s *stalledReader) Read([]byte) (int, error) {
	if !s.once {
		s.once = true
		close(s.started)
	}
	<-s.release
	return 0, errors.New("upload abandoned")
}

// TestMaxUploading checks that an identity's uploads in progress are
// bounded on their own, naming the setting, and that another identity
// is not kept out by them.
func TestMaxUploading(t *testing.T) {
	r := newRestartable(t)
	m, _ := r.start(t, false, jobs.WithMaxQueued(10, 5), jobs.WithMaxUploading(1))
	spec := api.BuildSpec{Destinations: []string{r.reg + "/test/up:v1"}}
	submit := func(owner string, in io.Reader) error {
		_, err := m.Submit(context.Background(), jobs.SubmitRequest{Owner: owner, Spec: spec}, in)
		return err
	}
	slow := &stalledReader{started: make(chan struct{}), release: make(chan struct{})}
	first := make(chan error, 1)
	go func() { first <- submit("alice", slow) }()
	<-slow.started // alice's upload holds its slot

	var qf *jobs.QueueFullError
	err := submit("alice", bytes.NewReader(scratchContext(t, "x")))
	if !errors.As(err, &qf) || !qf.Uploading || !strings.Contains(err.Error(), "1 uploads in progress (max_uploading_per_identity)") {
		t.Errorf("Submit(alice) during her upload = %v, want a QueueFullError naming max_uploading_per_identity", err)
	}
	if err := submit("bob", bytes.NewReader(scratchContext(t, "x"))); err != nil {
		t.Errorf("Submit(bob) during alice's upload = %v, want accepted", err)
	}
	close(slow.release)
	if err := <-first; err == nil {
		t.Fatalf("Submit(alice) of an abandoned upload = nil, want an error")
	}
	if err := submit("alice", bytes.NewReader(scratchContext(t, "x"))); err != nil {
		t.Errorf("Submit(alice) after her upload ended = %v, want accepted", err)
	}
}
