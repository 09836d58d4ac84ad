package testcluster_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/buildgw/buildgw/internal/testcluster"
	"github.com/buildgw/buildgw/internal/testenv"
)

// TestPodRuns runs a Pod on the cluster's kubelet and reads its log
// through the API server: the scheduler binds it, containerd runs it on
// the Pod network, the kubelet reports it and serves its log.
func TestPodRuns(t *testing.T) {
	c := testcluster.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(2*time.Minute))
	defer cancel()

	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := "smoke-" + hex.EncodeToString(b)
	podPath := "/api/v1/namespaces/default/pods/" + name
	noToken := false
	pod := corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			RestartPolicy:                corev1.RestartPolicyNever,
			AutomountServiceAccountToken: &noToken,
			Containers: []corev1.Container{{
				Name:            "hello",
				Image:           testcluster.Image,
				ImagePullPolicy: corev1.PullNever,
				Command:         []string{"/bin/echo", "hello"},
			}},
		},
	}
	if err := c.Do(ctx, http.MethodPost, "/api/v1/namespaces/default/pods", pod, nil); err != nil {
		t.Fatalf("creating pod: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(30*time.Second))
		defer cancel()
		var se *testcluster.StatusError
		if err := c.Do(ctx, http.MethodDelete, podPath+"?gracePeriodSeconds=0", nil, nil); err != nil && !(errors.As(err, &se) && se.Code == http.StatusNotFound) {
			t.Errorf("deleting pod: %v", err)
		}
	})

	var got corev1.Pod
	for {
		if err := c.Do(ctx, http.MethodGet, podPath, nil, &got); err != nil {
			t.Fatalf("pod %s (last status %s): %v", name, status(got), err)
		}
		if got.Status.Phase == corev1.PodSucceeded || got.Status.Phase == corev1.PodFailed {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pod %s did not end: %s", name, status(got))
		case <-time.After(200 * time.Millisecond):
		}
	}
	if got.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("pod %s: phase %s, want %s: %s", name, got.Status.Phase, corev1.PodSucceeded, status(got))
	}
	if got.Status.PodIP == "" {
		t.Errorf("pod %s has no IP: the Pod network did not give it one", name)
	}
	var log string
	if err := c.Do(ctx, http.MethodGet, podPath+"/log?container=hello", nil, &log); err != nil {
		t.Fatalf("reading the log of %s: %v", name, err)
	}
	if log != "hello\n" {
		t.Errorf("log of %s = %q, want %q", name, log, "hello\n")
	}
}

func status(p corev1.Pod) string {
	s := fmt.Sprintf("phase %q node %q", p.Status.Phase, p.Spec.NodeName)
	for _, c := range p.Status.Conditions {
		s += fmt.Sprintf("; %s=%s %s", c.Type, c.Status, c.Message)
	}
	for _, c := range p.Status.ContainerStatuses {
		if w := c.State.Waiting; w != nil {
			s += fmt.Sprintf("; %s waiting: %s %s", c.Name, w.Reason, w.Message)
		}
		if x := c.State.Terminated; x != nil {
			s += fmt.Sprintf("; %s terminated: %s exit %d", c.Name, x.Reason, x.ExitCode)
		}
	}
	return s
}
