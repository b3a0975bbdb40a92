package fsblob

import (
	"os"
	"sync"
)

// blockSize is the size of the writes a fileWriter makes: gRPC hands the
// blob store pieces of a few KiB, which are gathered into writes of a
// useful size.
const blockSize = 1 << 20

// blocksInFlight is how many full blocks a fileWriter lets wait for its
// goroutine, on top of the one being filled.
const blocksInFlight = 2

// writebackChunk is how many bytes a fileWriter writes between asking the
// kernel to start their writeback.
const writebackChunk = 8 << 20

var blocks = sync.Pool{New: func() any { b := make([]byte, 0, blockSize); return &b }}

// fileWriter writes a file in blocks from a goroutine of its own, so that
// its caller, which hashes every byte it writes, and the file's writes run
// at once: they are a blob store's two big costs per byte, and one after
// the other they halve what it can receive. Close waits for every block.
type fileWriter struct {
	f      *os.File
	buf    *[]byte      // the block being filled
	queue  chan *[]byte // full blocks, to the goroutine
	done   chan struct{}
	mu     sync.Mutex
	err    error // the first write error
	closed bool
}

// newFileWriter writes f from offset off on.
func newFileWriter(f *os.File, off int64) *fileWriter {
	w := &fileWriter{f: f, queue: make(chan *[]byte, blocksInFlight), done: make(chan struct{})}
	go w.run(off)
	return w
}

func (w *fileWriter) run(off int64) {
	defer close(w.done)
	queued := off
	for b := range w.queue {
		if w.failure() == nil {
			n, err := w.f.WriteAt(*b, off)
			off += int64(n)
			if err != nil {
				w.mu.Lock()
				w.err = err
				w.mu.Unlock()
			} else if off-queued >= writebackChunk {
				startWriteback(w.f, queued, off-queued)
				queued = off
			}
		}
		*b = (*b)[:0]
		blocks.Put(b)
	}
}

func (w *fileWriter) failure() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Write copies p into blocks; a write error of an earlier block is
// returned by a later Write or by Close.
func (w *fileWriter) Write(p []byte) (int, error) {
	if err := w.failure(); err != nil {
		return 0, err
	}
	n := len(p)
	for len(p) > 0 {
		if w.buf == nil {
			w.buf = blocks.Get().(*[]byte)
		}
		k := copy((*w.buf)[len(*w.buf):blockSize], p)
		*w.buf = (*w.buf)[:len(*w.buf)+k]
		p = p[k:]
		if len(*w.buf) == blockSize {
			w.queue <- w.buf
			w.buf = nil
		}
	}
	return n, nil
}

// Close writes what is left and waits until every block is in the file;
// the file stays open.
func (w *fileWriter) Close() error {
	if w.closed {
		return w.failure()
	}
	w.closed = true
	if w.buf != nil && len(*w.buf) > 0 {
		w.queue <- w.buf
	} else if w.buf != nil {
		blocks.Put(w.buf)
	}
	w.buf = nil
	close(w.queue)
	<-w.done
	return w.failure()
}
