package basestore

import (
	"context"
	"fmt"
	"io"
	"net/http"
)

// boundedTransport is the store's transport around the one it was given:
// the answer to a manifest request is read no further than
// MaxMetadataBytes, and one that says it is longer is refused unread.
// ggcr reads up to 100 MiB of a manifest into memory, before the store
// could refuse it; a registry a tenant runs could cost the gateway that
// much for each base image of each submission.
type boundedTransport struct{ next http.RoundTripper }

// manifestRequest marks the context of a manifest's download. The mark,
// not the URL, selects the answers to bound: a registry may redirect the
// request anywhere, with the same context.
type manifestRequest struct{ registry string }

type manifestKey struct{}

func withManifestBound(ctx context.Context, registry string) context.Context {
	return context.WithValue(ctx, manifestKey{}, manifestRequest{registry})
}

// tooLongError is a manifest request answered with more than a manifest
// may have. The store's error around it names the manifest.
type tooLongError struct {
	manifestRequest
	max int64
}

func (e *tooLongError) Error() string {
	return fmt.Sprintf("%s answered with more than the %d bytes a manifest may have", e.registry, e.max)
}

func (t *boundedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	m, ok := r.Context().Value(manifestKey{}).(manifestRequest)
	if err != nil || !ok {
		return resp, err
	}
	tooLong := &tooLongError{m, MaxMetadataBytes}
	if resp.ContentLength > MaxMetadataBytes {
		resp.Body.Close()
		return nil, tooLong
	}
	resp.Body = &boundedBody{ReadCloser: resp.Body, left: MaxMetadataBytes, err: tooLong}
	return resp, nil
}

// boundedBody fails once more than left bytes are read.
type boundedBody struct {
	io.ReadCloser
	left int64
	err  error
}

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, b.err
	}
	// One byte more than left tells a longer answer from one of left bytes.
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return n, b.err
	}
	return n, err
}
