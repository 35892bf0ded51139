package kdclog

import (
	"bytes"
)

// Heimdal's kdc logs one request over several lines; the first names the
// client, address and service, a later one the outcome (testdata has a
// recorded log):
//
//	2026-12-02T06:43:47 AS-REQ alice@H.TEST from IPv4:127.0.0.1 for krbtgt/H.TEST@H.TEST
//	2026-12-02T06:43:47 AS-REQ authtime: 2026-12-02T06:43:47 starttime: unset endtime: ... renew till: unset
//	2026-12-02T06:43:52 UNKNOWN -- nobody@H.TEST: no such entry found in hdb
//	2026-12-02T06:43:47 Failed to decrypt PA-DATA -- alice@H.TEST (enctype aes256-cts-hmac-sha1-96) error Decrypt integrity check failed ...
//	2026-12-02T06:43:47 TGS-REQ alice@H.TEST from IPv4:127.0.0.1 for host/svc.h.test@H.TEST [canonicalize]
//	2026-12-02T06:43:47 TGS-REQ authtime: ...
//	2026-12-02T06:43:47 Server not found in database: host/none.h.test@H.TEST: no such entry found in hdb
//
// and kpasswdd one line per change:
//
//	2026-12-02T06:44:03 Changing password for alice@H.TEST
//
// Heimdal 7.8's kdc opens its log destination twice when both [logging]
// kdc and [kdc] logging name it, and then writes every line twice in a
// row: a line equal to the one before is skipped. One kdc process serves
// one request at a time, so a request's lines are adjacent; a request whose outcome line never comes (the KDC asked for
// pre-authentication, the client gave up) yields no event.
type heimdalState struct {
	kind                  Kind // 0: no request open
	client, service, addr []byte
	prev                  []byte // the line before, for doubled logs
}

func (h *heimdalState) open(k Kind, client, service, addr []byte) {
	h.kind = k
	h.client = append(h.client[:0], client...)
	h.service = append(h.service[:0], service...)
	h.addr = append(h.addr[:0], addr...)
}

var (
	hAS         = []byte("AS-REQ ")
	hTGS        = []byte("TGS-REQ ")
	hAuthtime   = []byte("authtime: ")
	hUnknown    = []byte("UNKNOWN -- ")
	hDecrypt    = []byte("Failed to decrypt PA-DATA -- ")
	hNoServer   = []byte("Server not found in database: ")
	hChangingPw = []byte("hanging password for ") // "Changing ..." and "... is changing ..."

	stClientNotFound = []byte("CLIENT_NOT_FOUND")
	stPreauthFailed  = []byte("PREAUTH_FAILED")
	stNoServer       = []byte("S_PRINCIPAL_UNKNOWN")
)

// heimdalTime parses "2026-12-02T06:43:47 " at the start of line.
func (r *Reader) heimdalTime(line []byte) (int64, bool) {
	if len(line) < 20 || line[4] != '-' || line[7] != '-' || line[10] != 'T' || line[13] != ':' || line[16] != ':' || line[19] != ' ' {
		return 0, false
	}
	y, ok1 := atoiN(line[0:4])
	mo, ok2 := atoiN(line[5:7])
	d, ok3 := atoiN(line[8:10])
	hh, ok4 := atoiN(line[11:13])
	mm, ok5 := atoiN(line[14:16])
	ss, ok6 := atoiN(line[17:19])
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 || mo < 1 || mo > 12 || d < 1 || d > 31 || hh > 23 || mm > 59 || ss > 60 {
		return 0, false
	}
	return r.days.unix(y, mo, d, hh, mm, ss), true
}

func (r *Reader) parseHeimdal(line []byte) (ok, known bool) {
	h := &r.heimdal
	if bytes.Equal(line, h.prev) {
		return false, true
	}
	h.prev = append(h.prev[:0], line...)
	t, good := r.heimdalTime(line)
	if !good {
		return false, false
	}
	msg := line[20:]
	var k Kind
	switch {
	case bytes.HasPrefix(msg, hAS):
		k, msg = AS, msg[len(hAS):]
	case bytes.HasPrefix(msg, hTGS):
		k, msg = TGS, msg[len(hTGS):]
	case bytes.HasPrefix(msg, hUnknown):
		return r.heimdalOutcome(t, AS, stClientNotFound), true
	case bytes.HasPrefix(msg, hDecrypt):
		return r.heimdalOutcome(t, AS, stPreauthFailed), true
	case bytes.HasPrefix(msg, hNoServer):
		return r.heimdalOutcome(t, TGS, stNoServer), true
	default:
		if _, princ, found := cut(msg, string(hChangingPw)); found && len(princ) > 0 {
			r.set(t, KeyChange, princ, nil, nil, nil)
			return true, true
		}
		return false, true
	}
	if bytes.HasPrefix(msg, hAuthtime) {
		return r.heimdalOutcome(t, k, nil), true
	}
	client, rest, found := cut(msg, " from ")
	if !found {
		return false, false
	}
	addr, service, found := cut(rest, " for ")
	if !found {
		return false, false
	}
	if i := bytes.IndexByte(addr, ':'); i >= 0 && bytes.HasPrefix(addr, []byte("IPv")) {
		addr = addr[i+1:]
	}
	if i := bytes.IndexByte(service, ' '); i >= 0 {
		service = service[:i] // " [canonicalize]"
	}
	h.open(k, client, service, addr)
	return false, true
}

// heimdalOutcome closes the open request of kind k with status.
func (r *Reader) heimdalOutcome(t int64, k Kind, status []byte) bool {
	h := &r.heimdal
	if h.kind != k {
		return false
	}
	h.kind = 0
	r.set(t, k, h.client, h.service, h.addr, status)
	return true
}
