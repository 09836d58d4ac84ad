package runnertest

import (
	"os"
	"strings"
	"testing"
)

// testOOMScore checks that a build is what the kernel's OOM killer picks
// first, never the gateway: RUN steps run with oom_score_adj 1000 whatever
// the gateway's own. A gateway that systemd protects with OOMScoreAdjust=
// has a lower score, which children inherit; lowering it needs a privilege
// the host may not grant, so the test raises it from the default 0 to 1,
// which shows inheritance just as well.
func (s *suite) testOOMScore(t *testing.T) {
	t.Parallel()
	r := s.newRunner(t)
	old, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(old)) == "0" {
		if err := os.WriteFile("/proc/self/oom_score_adj", []byte("1"), 0); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.WriteFile("/proc/self/oom_score_adj", old, 0) })
	}
	st := s.newSetup(t, r, job{files: map[string]string{
		"Dockerfile": "ARG BASE\nFROM ${BASE}\nRUN mkdir -p /probe && cat /proc/self/oom_score_adj > /probe/oom\n",
	}})
	img, log := mustBuild(t, r, st.req)
	if got := files(t, img)["/probe/oom"].body; got != "1000\n" {
		t.Errorf("RUN step's /proc/self/oom_score_adj = %q, want %q; build log:\n%s", got, "1000\n", log)
	}
}
