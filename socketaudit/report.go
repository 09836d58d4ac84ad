package socketaudit

// DefaultSocket is the Docker daemon's usual socket.
const DefaultSocket = "/var/run/docker.sock"

// HostReport is what a host audit found about one socket.
type HostReport struct {
	Socket string `json:"socket"`
	// Exists is false when there is no socket at the path.
	Exists bool   `json:"exists"`
	Mode   string `json:"mode,omitempty"`
	Owner  string `json:"owner,omitempty"`
	Group  string `json:"group,omitempty"`
	// Problems are the ways the socket's mode or ownership is wider than
	// root:docker 0660.
	Problems []string `json:"problems"`
	// Holders are the processes with the socket open.
	Holders []Holder `json:"holders"`
}

// Holder is a process holding the socket open.
type Holder struct {
	// Role is "daemon" for the socket's listener and the connections it
	// accepted, "client" for a process connected to it.
	Role    string `json:"role"`
	PID     int    `json:"pid"`
	UID     int    `json:"uid"`
	User    string `json:"user"`
	Command string `json:"command"`
	FDs     []int  `json:"fds"`
}

// Findings counts what makes the host fail the audit: every problem and
// every holder.
func (r *HostReport) Findings() int { return len(r.Problems) + len(r.Holders) }
