//go:build !amd64 && !arm64

package sockfilter

// sandboxABI is unknown here: Install fails, and so does every
// sandbox, rather than run builds without the filter.
var sandboxABI = abi{}
