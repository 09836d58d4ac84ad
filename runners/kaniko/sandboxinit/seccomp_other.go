//go:build !amd64 && !arm64

package sandboxinit

// sandboxABI is unknown here: installFilter fails, and so does every
// sandbox, rather than run builds without the filter.
var sandboxABI = abi{}
