package kdclog

import (
	"errors"
	"io"
)

// Merged yields the events of several logs in time order: the logs of
// several KDCs, and each KDC's rotated files (kdc.log.2.gz, kdc.log.1,
// kdc.log), in any order on the command line. Each file must be in time
// order itself, as a KDC writes it; in one second key changes come first,
// then events in the order of the paths.
type Merged struct {
	readers []*Reader
	cur     []*Event // each reader's next event; nil when it is done
	last    int      // the reader whose event Next returned last; -1 before
}

// OpenAll opens every path. On an error it closes what it opened.
func OpenAll(paths []string) (*Merged, error) {
	m := &Merged{last: -1}
	for _, p := range paths {
		r, err := Open(p)
		if err != nil {
			m.Close()
			return nil, err
		}
		m.readers = append(m.readers, r)
	}
	m.cur = make([]*Event, len(m.readers))
	for i, r := range m.readers {
		ev, err := r.Next()
		if err != nil && !errors.Is(err, io.EOF) {
			m.Close()
			return nil, err
		}
		m.cur[i] = ev
	}
	return m, nil
}

// Next returns the earliest event of all logs, valid until the next call,
// and the reader it came from; io.EOF when every log is done.
func (m *Merged) Next() (*Event, *Reader, error) {
	if m.last >= 0 {
		ev, err := m.readers[m.last].Next()
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, nil, err
		}
		m.cur[m.last] = ev
	}
	// A linear scan: a run reads a handful of files.
	best := -1
	for i, ev := range m.cur {
		if ev != nil && (best < 0 || before(ev, m.cur[best])) {
			best = i
		}
	}
	m.last = best
	if best < 0 {
		return nil, nil, io.EOF
	}
	return m.cur[best], m.readers[best], nil
}

// before orders events: by time, and in one second a key change first.
// Logs have a resolution of one second; a login refused in the second
// of its key change was refused for it, and a key change read after it
// would hide the host that missed the change.
func before(a, b *Event) bool {
	if a.Time != b.Time {
		return a.Time < b.Time
	}
	return a.Kind == KeyChange && b.Kind != KeyChange
}

// Readers are the open logs, in the order of the paths.
func (m *Merged) Readers() []*Reader { return m.readers }

// Stats sums the counts of every log.
func (m *Merged) Stats() Stats {
	var s Stats
	for _, r := range m.readers {
		s.add(r.stats)
	}
	return s
}

// Close closes every log.
func (m *Merged) Close() error {
	var first error
	for _, r := range m.readers {
		if err := r.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
