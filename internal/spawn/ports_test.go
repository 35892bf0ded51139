package spawn

import (
	"net"
	"strconv"
	"testing"
)

// Every port handed out is distinct within the process and bindable on
// both TCP and UDP (a KDC listens on both).
func TestFreePortDistinctAndBindable(t *testing.T) {
	seen := map[int]bool{}
	for range 30 {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		addr := "127.0.0.1:" + strconv.Itoa(p)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("tcp %s: %v", addr, err)
		}
		u, err := net.ListenPacket("udp", addr)
		if err != nil {
			l.Close()
			t.Fatalf("udp %s: %v", addr, err)
		}
		l.Close()
		u.Close()
	}
}
