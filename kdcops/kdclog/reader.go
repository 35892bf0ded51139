package kdclog

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/krbops/krbops/internal/readcap"
)

// maxLogFile is no real bound (logs are gigabytes); Open uses readcap
// for its refusal of FIFOs and devices, which would block or never end.
const maxLogFile = 1 << 50

// Reader yields the events of one log file, plain or gzipped (recognised
// by its magic bytes, not its name).
type Reader struct {
	path  string
	f     *os.File
	zr    *gzip.Reader
	mtime time.Time
	loc   *time.Location

	format Format // decided by the first line that is not blank
	lineNo int64
	stats  Stats
	ev     Event

	// syslog year inference (see the package doc)
	year      int
	prevMonth int
	days      dayCache

	heimdal heimdalState
	csvCols map[string]int
	scratch []byte

	pipe pipeline
}

// Open opens the log at path. The caller must Close it.
func Open(path string) (*Reader, error) {
	return openIn(path, time.Local)
}

func openIn(path string, loc *time.Location) (*Reader, error) {
	f, fi, err := readcap.Open(path, maxLogFile)
	if err != nil {
		return nil, err
	}
	r := &Reader{path: path, f: f, mtime: fi.ModTime(), loc: loc, days: dayCache{loc: loc}}
	fb := bufio.NewReaderSize(f, 256<<10)
	src := io.Reader(fb)
	if magic, _ := fb.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(fb)
		if err != nil {
			f.Close()
			return nil, &os.PathError{Op: "gunzip", Path: path, Err: err}
		}
		r.zr = zr
		src = zr
	}
	r.pipe.start(src)
	return r, nil
}

// Path is the file the reader reads.
func (r *Reader) Path() string { return r.path }

// Format is the log's format, known after the first event or line.
func (r *Reader) Format() Format { return r.format }

// Stats returns what the reader counted so far.
func (r *Reader) Stats() Stats { return r.stats }

// Close stops the reader's workers and closes the file.
func (r *Reader) Close() error {
	r.pipe.stop()
	if r.zr != nil {
		r.zr.Close()
	}
	return r.f.Close()
}

// Next returns the next event, valid until the next call, or io.EOF at
// the end. Lines it does not understand are counted, never an error; an
// error is the file's (a read failure, a corrupt gzip stream).
func (r *Reader) Next() (*Event, error) {
	for {
		if r.pipe.cur == nil || r.pipe.idx >= len(r.pipe.cur.recs) {
			if err := r.pipe.advance(); err != nil {
				if err != io.EOF {
					err = fmt.Errorf("%s: line %d: %w", r.path, r.lineNo+1, err)
				}
				return nil, err
			}
			continue
		}
		rc := &r.pipe.cur.recs[r.pipe.idx]
		r.pipe.idx++
		r.lineNo++
		r.stats.Lines++
		if r.take(rc) {
			r.stats.Events++
			t := r.ev.Time
			if r.stats.First == 0 || t < r.stats.First {
				r.stats.First = t
			}
			if t > r.stats.Last {
				r.stats.Last = t
			}
			return &r.ev, nil
		}
	}
}

// take turns one record of a worker into the reader's event; it reports
// whether the line is an event.
func (r *Reader) take(rc *rec) bool {
	switch rc.state {
	case recLong:
		r.stats.bad(r.path, r.lineNo, rc.line)
		return false
	case recSeq:
		return r.parse(rc.line)
	}
	if r.format == "" {
		r.format = FormatMIT
	}
	m := &rc.m
	if rc.state == recIgnored {
		r.stats.Ignored++
		return false
	}
	t := r.syslogUnix(m.month, m.day, m.hh, m.mm, m.ss)
	if m.exact != 0 {
		t = m.exact
	}
	r.set(t, m.kind, m.client, m.service, m.addr, m.status)
	return true
}

// parse fills r.ev from line and reports whether it is an event.
func (r *Reader) parse(line []byte) bool {
	if len(bytes.TrimSpace(line)) == 0 {
		r.stats.Ignored++
		return false
	}
	if r.format == "" {
		r.format = sniff(line)
		if r.format == FormatADCSV {
			if err := r.csvHeader(line); err != nil {
				r.stats.bad(r.path, r.lineNo, line)
				r.format = ""
			}
			return false
		}
	}
	var ok, known bool
	switch r.format {
	case FormatADJSON:
		ok, known = r.parseADJSON(line)
	case FormatADCSV:
		ok, known = r.parseADCSV(line)
	default:
		if line[0] >= '0' && line[0] <= '9' {
			ok, known = r.parseHeimdal(line)
		} else {
			ok, known = r.parseMIT(line)
		}
	}
	switch {
	case ok:
	case known:
		r.stats.Ignored++
	default:
		r.stats.bad(r.path, r.lineNo, line)
	}
	return ok
}

// sniff decides a file's format from its first line that is not blank.
func sniff(line []byte) Format {
	line = bytes.TrimLeft(line, " \t\ufeff")
	switch {
	case len(line) > 0 && line[0] == '{':
		return FormatADJSON
	case bytes.Contains(line, []byte("TimeCreated")) && bytes.IndexByte(line, ',') >= 0:
		return FormatADCSV
	case len(line) > 0 && line[0] >= '0' && line[0] <= '9':
		return FormatHeimdal
	}
	return FormatMIT
}

// set fills the event; the byte fields must stay valid until the next
// call to Next.
func (r *Reader) set(t int64, k Kind, client, service, addr, status []byte) {
	r.ev = Event{Time: t, Kind: k, Client: client, Service: service, Addr: addr, Status: status}
}

// cut returns s before and after the first sep.
func cut(s []byte, sep string) (before, after []byte, found bool) {
	if i := bytes.Index(s, []byte(sep)); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return s, nil, false
}

func atoiN(b []byte) (int, bool) {
	if len(b) == 0 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}
