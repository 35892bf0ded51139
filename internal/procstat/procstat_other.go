//go:build !linux

package procstat

import "time"

func startTime(int) (time.Time, error) { return time.Time{}, ErrUnknown }
