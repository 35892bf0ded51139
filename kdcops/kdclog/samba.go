package kdclog

import (
	"bytes"
)

// A Samba AD DC (4.x, whose KDC is a bundled Heimdal) writes its own log
// (log file = ...%m.log, or samba -i's output): each message is a header
// line with the local time and debug level, then the message indented
// on the next line (testdata/samba-ad-dc.log is recorded from the lab):
//
//	[2026/12/02 07:30:08.669253,  3] ../../source4/auth/kerberos/krb5_init_context.c:90(smb_krb5_debug_wrapper)
//	  Kerberos: AS-REQ SUCCESS ipv4:127.0.0.1:46164 alice@AD.TEST krbtgt/AD.TEST@AD.TEST pa=ENC-TS etype=18/18 ...
//
// With "log level = kerberos:3" the KDC ends every request with one such
// audit line: the request type, its outcome (SUCCESS or the Kerberos
// error's name), the client's address, the client and the server. Only
// those lines are events. ERR_PREAUTH_REQUIRED (the first round of every
// login) and KRB5KRB_ERR_RESPONSE_TOO_BIG (the client repeats the request
// over TCP) are not: no ticket was issued and no login was refused. The
// request's earlier lines ("AS-REQ alice@AD.TEST from ... for ...") and
// the auth_audit lines ("Auth: [Kerberos KDC,...] user ...", and their
// JSON form) repeat what the audit line says and are counted as
// ignored: a DC that logs auth_audit but not kerberos:3 yields no events.
type sambaState struct {
	t    int64 // the last header's time
	have bool  // a header was read: its message lines follow
}

var (
	sambaKerberos = []byte("Kerberos: ")
	sambaSuccess  = []byte("SUCCESS")
	sambaErr      = []byte("ERR_")
	sambaNotEvent = [][]byte{[]byte("ERR_PREAUTH_REQUIRED"), []byte("KRB5KRB_ERR_RESPONSE_TOO_BIG")}
)

// sambaStatus maps the error names of Samba's audit lines to the names
// events carry (MIT's words, as the other readers use).
var sambaStatus = map[string][]byte{
	"ERR_C_PRINCIPAL_UNKNOWN": stClientNotFound,
	"ERR_PREAUTH_FAILED":      stPreauthFailed,
	"ERR_S_PRINCIPAL_UNKNOWN": stNoServer,
	"ERR_KEY_EXPIRED":         []byte("KEY_EXPIRED"),
	"ERR_CLIENT_REVOKED":      []byte("CLIENT_LOCKED_OUT"),
	"ERR_NAME_EXP":            []byte("CLIENT_EXPIRED"),
	"ERR_SERVICE_EXP":         []byte("SERVICE_EXPIRED"),
}

// isErrorName reports whether s is a Kerberos error's name
// (ERR_PREAUTH_FAILED, KRB5KRB_ERR_RESPONSE_TOO_BIG): upper case, digits
// and underscores, never a principal (which has an @).
func isErrorName(s []byte) bool {
	if !bytes.Contains(s, sambaErr) {
		return false
	}
	for _, c := range s {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// isSambaHeader reports whether line starts like "[2026/12/02 07:30:08".
func isSambaHeader(line []byte) bool {
	return len(line) >= 21 && line[0] == '[' && line[5] == '/' && line[8] == '/' && line[11] == ' ' && line[14] == ':' && line[17] == ':'
}

// sambaTime parses the header's "[2026/12/02 07:30:08" (the fraction and
// level after it vary with "debug hires timestamp").
func (r *Reader) sambaTime(line []byte) (int64, bool) {
	return r.dateTime(line[1:5], line[6:8], line[9:11], line[12:14], line[15:17], line[18:20])
}

func (r *Reader) parseSamba(line []byte) (ok, known bool) {
	s := &r.samba
	if line[0] == '[' {
		if !isSambaHeader(line) {
			return false, false
		}
		t, good := r.sambaTime(line)
		if !good {
			return false, false
		}
		s.t, s.have = t, true
		return false, true
	}
	if line[0] != ' ' && line[0] != '\t' {
		return false, false
	}
	if !s.have {
		return false, true // a message whose header is in the file before
	}
	msg := bytes.TrimLeft(line, " \t")
	msg, found := bytes.CutPrefix(msg, sambaKerberos)
	if !found {
		return false, true
	}
	k, msg := requestKind(msg)
	if k == 0 {
		return false, true
	}
	// "STATUS ipv4:ADDR:PORT CLIENT SERVER key=value..."
	status, rest, _ := cut(msg, " ")
	if !bytes.Equal(status, sambaSuccess) && !isErrorName(status) {
		return false, true // "AS-REQ alice@R from ... for ...", "AS-REQ authtime: ..."
	}
	for _, n := range sambaNotEvent {
		if bytes.Equal(status, n) {
			return false, true
		}
	}
	addr, rest, found := cut(rest, " ")
	if !found {
		return false, false
	}
	client, rest, found := cut(rest, " ")
	if !found || len(client) == 0 {
		return false, false
	}
	service, _, _ := cut(rest, " ")
	if len(service) == 0 {
		return false, false
	}
	// "ipv4:127.0.0.1:46164", "ipv6:::1:46164": the host without the port.
	if _, a, found := cut(addr, ":"); found {
		addr = a
		if i := bytes.LastIndexByte(addr, ':'); i >= 0 {
			addr = addr[:i]
		}
	}
	if bytes.Equal(status, sambaSuccess) {
		status = nil
	} else if mapped, isMapped := sambaStatus[string(status)]; isMapped {
		status = mapped
	} else {
		status = bytes.TrimPrefix(status, []byte("KRB5KDC_"))
		status = bytes.TrimPrefix(status, sambaErr)
	}
	r.set(s.t, k, client, service, addr, status)
	return true, true
}
