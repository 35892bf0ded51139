// Package kdclog reads what KDCs record about the tickets they issue: MIT
// krb5kdc and kadmind logs, Heimdal kdc and kpasswdd logs, and exported
// Active Directory Security events 4768/4769 (JSON lines or CSV). Start
// with [Open] for one file or [Merge] for several: both yield [Event]s,
// Merge in time order across files.
//
// The readers are built for logs of gigabytes: lines are read with a
// capped length and parsed byte by byte, an Event's byte fields point
// into the reader's buffer (valid until the next call to Next), and
// nothing is kept per line. Lines that are not understood are counted
// and a few are kept as samples ([Stats]); they never stop a read.
//
// Syslog-style timestamps (MIT: "Dec 02 06:50:01") carry no year. The
// year of a file's first such line is the latest one that does not put
// it more than a day after the file's modification time; each time the
// month goes backwards from one line to the next (December to January)
// the year rises by one. A file that spans more than a year is therefore
// read a year early at its start: rotate logs more often than yearly.
// Timestamps without a zone are the local time of the machine krbops runs
// on, which is the KDC's when the logs are read where they are written.
package kdclog

import (
	"time"
)

// Kind is what an event records.
type Kind uint8

const (
	// AS is an AS exchange: Client asked for a TGT (a login).
	AS Kind = iota + 1
	// TGS is a TGS exchange: Client asked for a ticket to Service.
	TGS
	// KeyChange is a key change of Client (kadmind's randkey, cpw,
	// setkey, a kpasswd change): the principal's kvno rose.
	KeyChange
)

func (k Kind) String() string {
	switch k {
	case AS:
		return "AS"
	case TGS:
		return "TGS"
	case KeyChange:
		return "key-change"
	}
	return "unknown"
}

// Format is the kind of log a file holds.
type Format string

const (
	FormatMIT     Format = "mit"     // krb5kdc and kadmind FILE:/syslog lines
	FormatHeimdal Format = "heimdal" // Heimdal kdc and kpasswdd FILE: lines
	FormatADJSON  Format = "ad-json" // AD Security events 4768/4769, one JSON object per line
	FormatADCSV   Format = "ad-csv"  // the same as CSV with a header row
)

// Event is one request a KDC answered (or one key change). Its byte
// fields point into the reader's buffer: copy what you keep.
type Event struct {
	Time    int64 // Unix seconds
	Kind    Kind
	Client  []byte // AS/TGS: the requesting principal; KeyChange: the principal whose key changed
	Service []byte // AS: krbtgt/...; TGS: the service principal asked for
	Addr    []byte // the client's address as the KDC saw it; may be empty
	// Status is empty for a ticket issued or a key changed, else the
	// KDC's reason in MIT's words (PREAUTH_FAILED, CLIENT_NOT_FOUND,
	// KEY_EXPIRED, S_PRINCIPAL_UNKNOWN, ...); AD's codes are mapped to
	// the same names (docs/audit.md).
	Status []byte
}

// OK reports whether the KDC issued the ticket (or made the change).
func (e *Event) OK() bool { return len(e.Status) == 0 }

// MaxLine bounds one log line. A longer line is no KDC's: it is counted
// as not understood, and its remainder is skipped rather than buffered.
const MaxLine = 64 << 10

// MaxSamples is how many not-understood lines a reader keeps as samples.
const MaxSamples = 5

// sampleLen bounds one kept sample.
const sampleLen = 200

// Sample is one line a reader did not understand.
type Sample struct {
	File string
	Line int64
	Text string // raw, at most 200 bytes; strip control characters before showing it
}

// Stats counts what a reader saw.
type Stats struct {
	Lines   int64 // lines read
	Events  int64 // events yielded
	Ignored int64 // lines of a known log that record no request (start-up, padata detail)
	Bad     int64 // lines not understood, including overlong ones
	Samples []Sample
	// First and Last are the earliest and latest event time (Unix
	// seconds), 0 when none: the window the logs cover.
	First, Last int64
}

func (s *Stats) bad(file string, line int64, text []byte) {
	s.Bad++
	if len(s.Samples) < MaxSamples {
		if len(text) > sampleLen {
			text = text[:sampleLen]
		}
		s.Samples = append(s.Samples, Sample{File: file, Line: line, Text: string(text)})
	}
}

func (s *Stats) add(o Stats) {
	s.Lines += o.Lines
	s.Events += o.Events
	s.Ignored += o.Ignored
	for _, smp := range o.Samples {
		if len(s.Samples) < MaxSamples {
			s.Samples = append(s.Samples, smp)
		}
	}
	s.Bad += o.Bad
	if o.First != 0 && (s.First == 0 || o.First < s.First) {
		s.First = o.First
	}
	if o.Last > s.Last {
		s.Last = o.Last
	}
}

// dayCache turns a local date and time into Unix seconds, calling
// time.Date only when the day changes: most lines of a log share their
// day with the line before. On a day with a daylight-saving shift every
// line takes the slow path, so the hours after the shift are right too.
type dayCache struct {
	loc      *time.Location
	y, m, d  int
	midnight int64
	shifted  bool // the day is not 24 hours long
	valid    bool
}

func (c *dayCache) unix(y, m, d, hh, mm, ss int) int64 {
	if !c.valid || y != c.y || m != c.m || d != c.d {
		c.y, c.m, c.d, c.valid = y, m, d, true
		c.midnight = time.Date(y, time.Month(m), d, 0, 0, 0, 0, c.loc).Unix()
		c.shifted = time.Date(y, time.Month(m), d+1, 0, 0, 0, 0, c.loc).Unix()-c.midnight != 86400
	}
	if c.shifted {
		return time.Date(y, time.Month(m), d, hh, mm, ss, 0, c.loc).Unix()
	}
	return c.midnight + int64(hh*3600+mm*60+ss)
}
