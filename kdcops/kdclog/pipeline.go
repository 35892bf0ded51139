package kdclog

import (
	"bytes"
	"io"
	"runtime"
	"sync"
)

// A Reader parses in three stages so a log of gigabytes keeps both CPUs
// of a small host busy: one goroutine reads the file in blocks of whole
// lines, workers split and parse the blocks (MIT lines need no state),
// and Next takes the blocks back in file order, applying what does need
// order: the syslog year, Heimdal's multi-line requests, the counts.
// Memory is a fixed number of blocks per file, whatever its size.

// blockSize is how much of the file one block holds.
const blockSize = 1 << 20

// Record states.
const (
	recEvent   uint8 = iota + 1 // an MIT line parsed into an event
	recIgnored                  // an MIT line that records no request
	recSeq                      // any other line: Next parses it in order
	recLong                     // longer than MaxLine: counted as not understood
)

// rec is one line of a block as a worker left it.
type rec struct {
	line  []byte
	state uint8
	m     mitLine
}

type block struct {
	seq      int
	buf      []byte
	recs     []rec
	contHead bool  // buf starts inside an overlong line counted before: skip to its end
	overlong bool  // buf is the start of a line longer than the block: one recLong
	err      error // the read error that ends the file, after this block
}

type pipeline struct {
	work    chan *block
	results chan *block
	free    chan *block // every block made, when not in use: see block
	made    int         // blocks made so far (produce's own)
	done    chan struct{}
	wg      sync.WaitGroup

	cur     *block
	idx     int
	next    int // seq of the block Next needs
	pending map[int]*block
	err     error // the file's end: io.EOF or a read error
	stopped bool
}

func (p *pipeline) start(src io.Reader) {
	workers := min(runtime.GOMAXPROCS(0), 4)
	p.work = make(chan *block, workers)
	p.results = make(chan *block, 2*workers)
	p.free = make(chan *block, 4*workers+2)
	p.done = make(chan struct{})
	p.pending = map[int]*block{}
	p.wg.Go(func() {
		defer close(p.work)
		p.produce(src)
	})
	var ws sync.WaitGroup
	for range workers {
		ws.Go(func() {
			for b := range p.work {
				parseBlock(b)
				select {
				case p.results <- b:
				case <-p.done:
					return
				}
			}
		})
	}
	p.wg.Go(func() {
		ws.Wait()
		close(p.results)
	})
}

// stop ends the goroutines; the file may then be closed.
func (p *pipeline) stop() {
	if p.stopped {
		return
	}
	p.stopped = true
	close(p.done)
	p.wg.Wait()
}

// block returns a free block for produce; false when the pipeline stops.
// At most cap(p.free) blocks are ever made, and each comes back to the
// free list: a block dropped and made anew would be garbage of a
// megabyte and its records, and collecting it rescans every principal's
// aggregate. When all are in use produce waits for one, which also
// bounds how far reading runs ahead of the consumer.
func (p *pipeline) block() (*block, bool) {
	select {
	case b := <-p.free:
		return b, true
	default:
	}
	if p.made < cap(p.free) {
		p.made++
		return &block{buf: make([]byte, 0, blockSize)}, true
	}
	select {
	case b := <-p.free:
		return b, true
	case <-p.done:
		return nil, false
	}
}

// produce reads src into blocks that end at a line end.
func (p *pipeline) produce(src io.Reader) {
	var carry []byte
	skipping := false // inside a line longer than a block
	for seq := 0; ; seq++ {
		b, ok := p.block()
		if !ok {
			return
		}
		b.seq, b.err, b.contHead, b.overlong = seq, nil, skipping, false
		b.buf = append(b.buf[:0], carry...)
		n, err := io.ReadFull(src, b.buf[len(b.buf):blockSize])
		b.buf = b.buf[:len(b.buf)+n]
		end := err == io.EOF || err == io.ErrUnexpectedEOF
		if err != nil && !end {
			b.err = err
		}
		carry = carry[:0]
		if !end && b.err == nil {
			i := bytes.LastIndexByte(b.buf, '\n')
			if i < 0 {
				// No line end in a whole block: a line far past MaxLine.
				// Count it once (its start is the sample) and skip the rest.
				if !skipping {
					b.overlong = true
					b.buf = b.buf[:sampleLen]
				} else {
					b.buf = b.buf[:0]
				}
				skipping = true
			} else {
				carry = append(carry, b.buf[i+1:]...)
				b.buf = b.buf[:i+1]
				skipping = false
			}
		}
		if end && b.err == nil {
			b.err = io.EOF
		}
		select {
		case p.work <- b:
		case <-p.done:
			return
		}
		if b.err != nil {
			return
		}
	}
}

func parseBlock(b *block) {
	b.recs = b.recs[:0]
	data := b.buf
	if b.contHead && !b.overlong {
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			data = data[i+1:]
		} else {
			data = nil
		}
	}
	if b.overlong {
		if len(data) > 0 {
			b.recs = append(b.recs, rec{line: data, state: recLong})
		}
		return
	}
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		for len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		b.recs = append(b.recs, rec{line: line})
		rc := &b.recs[len(b.recs)-1]
		switch {
		case len(line) > MaxLine:
			rc.state = recLong
		case len(line) > 0 && (line[0] >= 'A' && line[0] <= 'Z'):
			ok, known := parseMITLine(line, &rc.m)
			switch {
			case ok:
				rc.state = recEvent
			case known:
				rc.state = recIgnored
			default:
				rc.state = recSeq
			}
		default:
			rc.state = recSeq
		}
	}
}

// advance moves to the next block in file order, recycling the current
// one: the caller is done with the events that pointed into it.
func (p *pipeline) advance() error {
	if p.cur != nil {
		if p.cur.err != nil {
			p.err = p.cur.err
		}
		select {
		case p.free <- p.cur:
		default:
		}
		p.cur, p.idx = nil, 0
	}
	if p.err != nil {
		return p.err
	}
	for {
		if b, ok := p.pending[p.next]; ok {
			delete(p.pending, p.next)
			p.cur, p.idx = b, 0
			p.next++
			return nil
		}
		b, ok := <-p.results
		if !ok {
			p.err = io.EOF
			return p.err
		}
		p.pending[b.seq] = b
	}
}
