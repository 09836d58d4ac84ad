package jobs

import (
	"fmt"
	"strings"
	"testing"
)

func TestFairQueue(t *testing.T) {
	tests := []struct {
		name string
		// push lists jobs as owner/n, in submission order.
		push []string
		// blocked owners may not start anything.
		blocked string
		want    string
	}{
		{"one owner is FIFO", []string{"a/1", "a/2", "a/3"}, "", "a/1 a/2 a/3"},
		{"a flood does not starve others", []string{"a/1", "a/2", "a/3", "a/4", "b/1", "c/1", "b/2"}, "", "a/1 b/1 c/1 a/2 b/2 a/3 a/4"},
		{"a newcomer waits for the round", []string{"a/1", "b/1", "a/2", "b/2", "c/1"}, "", "a/1 b/1 c/1 a/2 b/2"},
		{"an owner at its limit does not hold up others", []string{"a/1", "a/2", "b/1", "b/2"}, "a", "b/1 b/2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := newFairQueue()
			for _, p := range tt.push {
				owner, _, _ := strings.Cut(p, "/")
				q.push(&Job{ID: p, Owner: owner})
			}
			var got []string
			for {
				j := q.pop(func(j *Job) bool { return j.Owner != tt.blocked })
				if j == nil {
					break
				}
				got = append(got, j.ID)
			}
			if g := strings.Join(got, " "); g != tt.want {
				t.Errorf("pop order of %v = %q, want %q", tt.push, g, tt.want)
			}
			wantLeft := len(tt.push) - len(got)
			if q.len() != wantLeft {
				t.Errorf("len() after popping = %d, want %d", q.len(), wantLeft)
			}
		})
	}
}

func TestFairQueueRemove(t *testing.T) {
	q := newFairQueue()
	jobs := map[string]*Job{}
	for _, p := range []string{"a/1", "b/1", "c/1", "a/2"} {
		owner, _, _ := strings.Cut(p, "/")
		jobs[p] = &Job{ID: p, Owner: owner}
		q.push(jobs[p])
	}
	if j := q.pop(func(*Job) bool { return true }); j.ID != "a/1" {
		t.Fatalf("first pop = %s, want a/1", j.ID)
	}
	// b's turn now; removing b's only job hands the turn to c.
	if !q.remove(jobs["b/1"]) || q.remove(jobs["b/1"]) {
		t.Fatalf("remove(b/1) twice = want true then false")
	}
	var got []string
	for j := q.pop(func(*Job) bool { return true }); j != nil; j = q.pop(func(*Job) bool { return true }) {
		got = append(got, j.ID)
	}
	if g := strings.Join(got, " "); g != "c/1 a/2" {
		t.Errorf("order after remove = %q, want %q", g, "c/1 a/2")
	}
}

// TestFairQueueTenants: turns go to tenants, not identities: a tenant
// with ten branches queued (ten owners) gets no more turns than a tenant
// with one, and builds without a tenant take turns as their owner.
func TestFairQueueTenants(t *testing.T) {
	q := newFairQueue()
	for i := range 10 {
		q.push(&Job{ID: fmt.Sprintf("a/%d", i), Owner: fmt.Sprintf("gitlab:project_path:g/a:ref:b%d", i), Grant: Grant{LimitTenant: "a"}})
	}
	q.push(&Job{ID: "b/0", Owner: "gitlab:project_path:g/b:ref:main", Grant: Grant{LimitTenant: "b"}})
	q.push(&Job{ID: "c/0", Owner: "c"})
	q.push(&Job{ID: "b/1", Owner: "gitlab:project_path:g/b:ref:f", Grant: Grant{LimitTenant: "b"}})
	var got []string
	for range 6 {
		j := q.pop(func(*Job) bool { return true })
		if j == nil {
			break
		}
		got = append(got, j.ID)
	}
	if g, want := strings.Join(got, " "), "a/0 b/0 c/0 a/1 b/1 a/2"; g != want {
		t.Errorf("first pops of ten branches of a, two of b and c's one = %q, want %q", g, want)
	}
}
