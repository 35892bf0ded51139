//go:build windows

package procstat

func exists(int) (bool, error) { return false, ErrUnknown }
