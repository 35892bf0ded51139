//go:build linux

package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// startTime reads when pid started: /proc/PID/stat's starttime (clock
// ticks since boot, field 22) plus the boot time from /proc/stat.
func startTime(pid int) (time.Time, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return time.Time{}, err
	}
	// comm (field 2) may hold spaces and parentheses: fields count from
	// after its closing parenthesis.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return time.Time{}, ErrUnknown
	}
	fields := bytes.Fields(stat[i+1:])
	if len(fields) < 20 {
		return time.Time{}, ErrUnknown
	}
	ticks, err := strconv.ParseInt(string(fields[19]), 10, 64) // field 22
	if err != nil {
		return time.Time{}, ErrUnknown
	}
	boot, err := bootTime()
	if err != nil {
		return time.Time{}, err
	}
	const hz = 100 // USER_HZ, fixed at 100 on Linux for /proc
	return boot.Add(time.Duration(ticks) * time.Second / hz), nil
}

func bootTime() (time.Time, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, err
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("btime ")); ok {
			sec, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			if err != nil {
				return time.Time{}, ErrUnknown
			}
			return time.Unix(sec, 0), nil
		}
	}
	return time.Time{}, ErrUnknown
}
