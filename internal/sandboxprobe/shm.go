package main

import (
	"bytes"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// shmCreate creates the SysV shared memory segment key of size bytes,
// writes marker at its start and leaves it, as a build that wants to hand
// something to a later one would.
func shmCreate(key, size, marker string) (int, error) {
	k, err := strconv.ParseInt(key, 0, 32)
	if err != nil {
		return 0, fmt.Errorf("key %q: %w", key, err)
	}
	n, err := strconv.Atoi(size)
	if err != nil || n < len(marker)+1 {
		return 0, fmt.Errorf("size %q too small or not a number", size)
	}
	id, err := unix.SysvShmGet(int(k), n, unix.IPC_CREAT|unix.IPC_EXCL|0o666)
	if err != nil {
		return 0, fmt.Errorf("shmget: %w", err)
	}
	b, err := unix.SysvShmAttach(id, 0, 0)
	if err != nil {
		return 0, fmt.Errorf("shmat: %w", err)
	}
	copy(b, marker)
	// Touch every page, so that the segment holds memory.
	for i := len(marker) + 1; i < len(b); i += 4096 {
		b[i] = 1
	}
	if err := unix.SysvShmDetach(b); err != nil {
		return 0, fmt.Errorf("shmdt: %w", err)
	}
	return id, nil
}

// shmRead returns the marker at the start of the segment key.
func shmRead(key string) (string, error) {
	k, err := strconv.ParseInt(key, 0, 32)
	if err != nil {
		return "", fmt.Errorf("key %q: %w", key, err)
	}
	id, err := unix.SysvShmGet(int(k), 0, 0)
	if err != nil {
		return "", fmt.Errorf("shmget: %w", err)
	}
	b, err := unix.SysvShmAttach(id, 0, unix.SHM_RDONLY)
	if err != nil {
		return "", fmt.Errorf("shmat: %w", err)
	}
	defer unix.SysvShmDetach(b)
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b), nil
}
