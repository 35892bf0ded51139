package kdclog

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"
)

// An Active Directory DC records no text log; its signal is the Security
// event log: 4768 (a TGT was requested: a login) and 4769 (a service
// ticket was requested). krbops reads an export of them, one event per
// line, as JSON (docs/audit.md has the PowerShell that writes it):
//
//	{"TimeCreated":"2026-12-02T06:50:01.123Z","Id":4768,"TargetUserName":"svc-web","TargetDomainName":"AD.TEST","ServiceName":"krbtgt","IpAddress":"::ffff:10.0.0.5","Status":"0x0"}
//
// or as CSV with a header row naming the same columns (any order, any
// case; other columns are ignored). TimeCreated is RFC 3339, or
// ConvertTo-Json's "/Date(milliseconds)/".
type adEvent struct {
	TimeCreated      string
	ID               int `json:"Id"`
	TargetUserName   string
	TargetDomainName string
	ServiceName      string
	IpAddress        string
	Status           string
}

var adColumns = []string{"timecreated", "id", "targetusername", "targetdomainname", "servicename", "ipaddress", "status"}

func (r *Reader) csvHeader(line []byte) error {
	rec, err := csv.NewReader(bytes.NewReader(line)).Read()
	if err != nil {
		return err
	}
	r.csvCols = map[string]int{}
	for i, c := range rec {
		r.csvCols[strings.ToLower(strings.TrimSpace(strings.TrimPrefix(c, "\ufeff")))] = i
	}
	for _, c := range adColumns[:3] {
		if _, ok := r.csvCols[c]; !ok {
			return errors.New("missing column " + c)
		}
	}
	return nil
}

func (r *Reader) parseADCSV(line []byte) (ok, known bool) {
	rec, err := csv.NewReader(bytes.NewReader(line)).Read()
	if err != nil {
		return false, false
	}
	col := func(name string) string {
		if i, ok := r.csvCols[name]; ok && i < len(rec) {
			return strings.TrimSpace(rec[i])
		}
		return ""
	}
	id, err := strconv.Atoi(col("id"))
	if err != nil {
		return false, false
	}
	return r.adSet(adEvent{TimeCreated: col("timecreated"), ID: id, TargetUserName: col("targetusername"),
		TargetDomainName: col("targetdomainname"), ServiceName: col("servicename"), IpAddress: col("ipaddress"), Status: col("status")})
}

func (r *Reader) parseADJSON(line []byte) (ok, known bool) {
	var e adEvent
	if err := json.Unmarshal(line, &e); err != nil {
		return false, false
	}
	return r.adSet(e)
}

// adStatus maps the Status of 4768/4769 (a Kerberos error code in hex)
// to the names MIT's log uses.
var adStatus = map[uint64]string{
	0x6:  "CLIENT_NOT_FOUND",
	0x7:  "S_PRINCIPAL_UNKNOWN",
	0x12: "CLIENT_REVOKED",
	0x17: "KEY_EXPIRED",
	0x18: "PREAUTH_FAILED",
	0x25: "CLOCK_SKEW",
}

func (r *Reader) adSet(e adEvent) (ok, known bool) {
	var k Kind
	switch e.ID {
	case 4768:
		k = AS
	case 4769:
		k = TGS
	default:
		return false, true
	}
	t, good := adTime(e.TimeCreated)
	if !good || e.TargetUserName == "" {
		return false, false
	}
	realm := strings.ToUpper(e.TargetDomainName)
	qualify := func(name string) string {
		if name == "" || strings.Contains(name, "@") || realm == "" {
			return name
		}
		return name + "@" + realm
	}
	client := qualify(e.TargetUserName)
	service := e.ServiceName
	if k == AS && (service == "" || strings.EqualFold(service, "krbtgt")) {
		service = "krbtgt/" + realm
	}
	service = qualify(service)
	var status string
	code, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(e.Status), "0x"), 16, 32)
	switch {
	case e.Status == "":
	case err != nil:
		return false, false
	case code == 0:
	default:
		status = adStatus[code]
		if status == "" {
			status = "KDC_ERR_0x" + strconv.FormatUint(code, 16)
		}
	}
	addr := strings.TrimPrefix(e.IpAddress, "::ffff:")
	r.scratch = append(r.scratch[:0], client...)
	nc := len(r.scratch)
	r.scratch = append(r.scratch, service...)
	ns := len(r.scratch)
	r.scratch = append(r.scratch, addr...)
	na := len(r.scratch)
	r.scratch = append(r.scratch, status...)
	b := r.scratch
	var st []byte
	if status != "" {
		st = b[na:]
	}
	r.set(t, k, b[:nc], b[nc:ns], b[ns:na], st)
	return true, true
}

func adTime(s string) (int64, bool) {
	if ms, ok := strings.CutPrefix(s, "/Date("); ok {
		ms, _, _ = strings.Cut(ms, ")")
		ms, _, _ = strings.Cut(ms, "+") // "/Date(ms+0100)/"
		v, err := strconv.ParseInt(ms, 10, 64)
		return v / 1000, err == nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	return t.Unix(), err == nil
}
