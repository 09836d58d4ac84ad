package jobs

import (
	"errors"
	"testing"

	"github.com/buildgw/buildgw/api"
)

func TestInterrupted(t *testing.T) {
	tests := []struct {
		was  api.Status
		verr error
		want string
	}{
		{api.StatusRunning, nil, "interrupted: gateway restarted"},
		{api.StatusPushing, nil, "interrupted: gateway restarted"},
		{api.StatusQueued, nil, "interrupted: gateway restarted and the queued build could not be resumed"},
		{api.StatusQueued, errors.New("runner: unknown"), "interrupted: gateway restarted and the queued build could not be resumed: runner: unknown"},
	}
	for _, tc := range tests {
		err := interrupted(tc.was, tc.verr)
		if !errors.Is(err, ErrRestarted) || err.Error() != tc.want {
			t.Errorf("interrupted(%s, %v) = %q (errors.Is ErrRestarted: %v), want %q wrapping ErrRestarted", tc.was, tc.verr, err, errors.Is(err, ErrRestarted), tc.want)
		}
		if tc.verr != nil && !errors.Is(err, tc.verr) {
			t.Errorf("interrupted(%s, %v) = %q, want it to wrap %v", tc.was, tc.verr, err, tc.verr)
		}
	}
}
