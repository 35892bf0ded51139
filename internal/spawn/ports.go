package spawn

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
)

var (
	portsMu   sync.Mutex
	handedOut = map[int]bool{}
)

// FreePort returns a loopback port number that is free for both TCP and
// UDP right now and was never returned before in this process, so two
// harnesses in one test binary never race for the same number between the
// probe bind and the daemon's bind.
func FreePort() (int, error) {
	for range 50 {
		port, err := bindBoth()
		if err != nil {
			continue
		}
		portsMu.Lock()
		dup := handedOut[port]
		handedOut[port] = true
		portsMu.Unlock()
		if !dup {
			return port, nil
		}
	}
	return 0, errors.New("spawn: no free loopback port for both TCP and UDP")
}

func bindBoth() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return 0, fmt.Errorf("udp %d busy: %w", port, err)
	}
	u.Close()
	return port, nil
}
