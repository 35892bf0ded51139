//go:build unix

package procstat

import (
	"errors"
	"syscall"
)

func exists(pid int) (bool, error) {
	err := syscall.Kill(pid, 0)
	switch {
	case err == nil, errors.Is(err, syscall.EPERM):
		return true, nil // EPERM: it runs, as another user
	case errors.Is(err, syscall.ESRCH):
		return false, nil
	}
	return false, err
}
