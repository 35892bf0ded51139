//go:build linux

package procstat

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestOf(t *testing.T) {
	host, _ := os.Hostname()
	if got := Of(host, os.Getpid(), time.Now()); got != Alive {
		t.Errorf("this process: %s", got)
	}
	if got := Of("another-host.example", os.Getpid(), time.Now()); got != Unknown {
		t.Errorf("another host: %s", got)
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if got := Of(host, cmd.Process.Pid, time.Now()); got != Dead {
		t.Errorf("an exited process: %s", got)
	}
	// A process that started after the lock was taken is not its holder.
	if got := Of(host, os.Getpid(), time.Now().Add(-24*time.Hour)); got != Dead {
		t.Errorf("a pid reused since: %s", got)
	}
}
