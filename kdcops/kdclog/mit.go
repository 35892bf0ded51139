package kdclog

import (
	"bytes"
)

// MIT krb5kdc and kadmind write (FILE: logging or syslog):
//
//	Dec 02 06:43:27 vm krb5kdc[10501](info): AS_REQ (2 etypes {aes256-cts-hmac-sha1-96(18), ...}) 127.0.0.1: ISSUE: authtime 1796193807, etypes {rep=..., tkt=..., ses=...}, alice@R for krbtgt/R@R
//	Dec 02 06:43:27 vm krb5kdc[10501](info): AS_REQ (...) 127.0.0.1: PREAUTH_FAILED: alice@R for krbtgt/R@R, Preauthentication failed
//	Dec 02 06:43:27 vm krb5kdc[10501](info): TGS_REQ (...) 127.0.0.1: LOOKING_UP_SERVER: authtime 0, etypes {rep=UNSUPPORTED:(0)} alice@R for host/none@R, Server not found in Kerberos database
//	Dec 02 06:44:11 vm kadmind[12979](Notice): Request: kadm5_randkey_principal, alice@R, success, client=admin/admin@R, service=kadmin/admin@R, addr=127.0.0.1
//	Dec 02 06:44:11 vm kadmind[12979](Notice): chpw request from 127.0.0.1 for alice@R: success

var months = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

// syslogTime parses "Dec 02 06:43:27" (or "Dec  2 06:43:27") at the start
// of line into month, day and seconds of the day.
func syslogTime(line []byte) (month, day, hh, mm, ss int, ok bool) {
	if len(line) < 16 || line[3] != ' ' || line[6] != ' ' || line[9] != ':' || line[12] != ':' || line[15] != ' ' {
		return 0, 0, 0, 0, 0, false
	}
	for i, m := range months {
		if line[0] == m[0] && line[1] == m[1] && line[2] == m[2] {
			month = i + 1
			break
		}
	}
	if month == 0 {
		return 0, 0, 0, 0, 0, false
	}
	d0 := line[4]
	if d0 == ' ' {
		d0 = '0'
	}
	var okd, okh, okm, oks bool
	day, okd = atoiN([]byte{d0, line[5]})
	hh, okh = atoiN(line[7:9])
	mm, okm = atoiN(line[10:12])
	ss, oks = atoiN(line[13:15])
	if !okd || !okh || !okm || !oks || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60 {
		return 0, 0, 0, 0, 0, false
	}
	return month, day, hh, mm, ss, true
}

// syslogUnix applies the year rule of the package doc.
func (r *Reader) syslogUnix(month, day, hh, mm, ss int) int64 {
	if r.year == 0 {
		r.year = r.mtime.In(r.loc).Year()
		if r.days.unix(r.year, month, day, hh, mm, ss) > r.mtime.Unix()+86400 {
			r.year--
		}
	} else if month < r.prevMonth {
		r.year++
	}
	r.prevMonth = month
	return r.days.unix(r.year, month, day, hh, mm, ss)
}

var (
	asReq   = []byte("AS_REQ ")
	tgsReq  = []byte("TGS_REQ ")
	request = []byte("Request: kadm5_")
	chpw    = []byte("chpw request from ")
	setpw   = []byte("setpw request from ")

	statusIssue  = []byte("ISSUE")
	statusNeeded = []byte("NEEDED_PREAUTH")
)

// mitStatus maps krb5kdc's status words to the names events carry.
var mitStatus = map[string][]byte{
	"LOOKING_UP_SERVER":  []byte("S_PRINCIPAL_UNKNOWN"),
	"CLIENT KEY EXPIRED": []byte("KEY_EXPIRED"),
	"CLIENT EXPIRED":     []byte("CLIENT_EXPIRED"),
	"SERVICE EXPIRED":    []byte("SERVICE_EXPIRED"),
	"CLIENT LOCKED OUT":  []byte("CLIENT_LOCKED_OUT"),
}

// mitLine is one parsed krb5kdc or kadmind line, before the year of its
// timestamp is known: parsing needs no state, so workers can do it in
// parallel; the reader applies the year rule in order.
type mitLine struct {
	month, day, hh, mm, ss int
	exact                  int64 // the Unix time when the line carries one (an AS ticket's authtime), else 0
	kind                   Kind
	client, service, addr  []byte
	status                 []byte
}

// parseMIT parses one syslog-style line. known is true for a line of a
// KDC or kadmind log that records no request (start-up, padata detail).
func (r *Reader) parseMIT(line []byte) (ok, known bool) {
	var m mitLine
	ok, known = parseMITLine(line, &m)
	if known {
		t := r.syslogUnix(m.month, m.day, m.hh, m.mm, m.ss)
		if ok {
			if m.exact != 0 {
				t = m.exact
			}
			r.set(t, m.kind, m.client, m.service, m.addr, m.status)
		}
	}
	return ok, known
}

// parseMITLine parses line into m without the reader's state.
func parseMITLine(line []byte, m *mitLine) (ok, known bool) {
	var good bool
	m.month, m.day, m.hh, m.mm, m.ss, good = syslogTime(line)
	if !good {
		return false, false
	}
	_, msg, found := cut(line[16:], "): ")
	if !found {
		return false, false
	}
	switch {
	case bytes.HasPrefix(msg, asReq):
		return m.request(AS, msg[len(asReq):])
	case bytes.HasPrefix(msg, tgsReq):
		return m.request(TGS, msg[len(tgsReq):])
	case bytes.HasPrefix(msg, request):
		return m.kadm(msg[len(request):]), true
	case bytes.HasPrefix(msg, chpw):
		return m.passwd(msg[len(chpw):], false), true
	case bytes.HasPrefix(msg, setpw):
		return m.passwd(msg[len(setpw):], true), true
	}
	return false, true
}

// request parses "(N etypes {...}) ADDR: STATUS: rest".
func (m *mitLine) request(k Kind, msg []byte) (ok, known bool) {
	// "(N etypes {...}) ": one scan for the brace; the list holds many
	// parentheses ("(18), ") and no brace.
	i := bytes.IndexByte(msg, '}')
	if i < 0 || i+2 >= len(msg) || msg[i+1] != ')' || msg[i+2] != ' ' {
		return false, false
	}
	rest := msg[i+3:]
	addr, rest, found := cut(rest, ": ")
	if !found {
		return false, false
	}
	status, rest, found := cut(rest, ": ")
	if !found {
		return false, false
	}
	if bytes.Equal(status, statusNeeded) {
		return false, true // the first round of every pre-authenticated login
	}
	m.exact = 0
	if bytes.HasPrefix(rest, []byte("authtime ")) {
		num := rest[len("authtime "):]
		end := bytes.IndexByte(num, ',')
		if end < 0 {
			return false, false
		}
		if k == AS && bytes.Equal(status, statusIssue) {
			// An AS ticket's authtime is the moment of issue, exact to
			// the second and with its year.
			if at, good := atoiN(num[:end]); good && at > 0 {
				m.exact = int64(at)
			}
		}
		i := bytes.IndexByte(rest, '}')
		if i < 0 {
			return false, false
		}
		rest = rest[i+1:]
		for len(rest) > 0 && (rest[0] == ',' || rest[0] == ' ') {
			rest = rest[1:]
		}
	}
	client, service, found := cut(rest, " for ")
	if !found || len(client) == 0 {
		return false, false
	}
	if i := bytes.Index(service, []byte(", ")); i >= 0 {
		service = service[:i]
	}
	if bytes.Equal(status, statusIssue) {
		status = nil
	} else if mapped, isMapped := mitStatus[string(status)]; isMapped {
		status = mapped
	} else if bytes.IndexByte(status, ' ') >= 0 {
		status = bytes.ReplaceAll(status, []byte(" "), []byte("_")) // rare: a copy
	}
	m.kind, m.client, m.service, m.addr, m.status = k, client, service, addr, status
	return true, true
}

// keyChangeOps are the kadmind requests that give a principal new keys.
var keyChangeOps = [][]byte{[]byte("randkey_principal"), []byte("chpass_principal"), []byte("setkey_principal")}

// kadm parses "randkey_principal, alice@R, success, client=...".
func (m *mitLine) kadm(msg []byte) bool {
	op, rest, found := cut(msg, ", ")
	if !found {
		return false
	}
	change := false
	for _, k := range keyChangeOps {
		if bytes.HasPrefix(op, k) {
			change = true
		}
	}
	if !change {
		return false
	}
	princ, rest, found := cut(rest, ", ")
	if !found || !bytes.HasPrefix(rest, []byte("success")) {
		return false
	}
	var addr []byte
	if _, a, ok := cut(rest, "addr="); ok {
		addr, _, _ = cut(a, ",")
	}
	m.exact, m.kind, m.client, m.service, m.addr, m.status = 0, KeyChange, princ, nil, addr, nil
	return true
}

// passwd parses "ADDR for alice@R: success" (chpw) or
// "ADDR by admin@R for alice@R: success" (setpw).
func (m *mitLine) passwd(msg []byte, set bool) bool {
	addr, rest, found := cut(msg, " ")
	if !found {
		return false
	}
	if set {
		if _, rest, found = cut(rest, " for "); !found {
			return false
		}
	} else if rest, found = bytes.CutPrefix(rest, []byte("for ")); !found {
		return false
	}
	princ, status, found := cut(rest, ": ")
	if !found || !bytes.HasPrefix(status, []byte("success")) {
		return false
	}
	m.exact, m.kind, m.client, m.service, m.addr, m.status = 0, KeyChange, princ, nil, addr, nil
	return true
}
