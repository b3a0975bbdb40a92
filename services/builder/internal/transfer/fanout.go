package transfer

import (
	"io"
	"sync"
	"sync/atomic"
)

const (
	// fanChunk is the size of the pieces fanOut reads, the blob client's
	// message size.
	fanChunk = 1 << 20
	// fanDepth is how many pieces may wait for each sink.
	fanDepth = 4
)

type fanBuf struct {
	b    []byte
	n    int
	refs atomic.Int32
}

// fanOut copies r to every sink, each sink writing in its own goroutine, so
// that reading (the network), storing (the blob store), hashing and
// decompressing overlap instead of taking turns. It returns the bytes read
// and the first error: the source's, or a sink's wrapped in sinkErr (with
// pipe set for the sinks at the indexes in pipes). After a sink fails, the
// others still get every piece read so far, and reading stops.
func fanOut(r io.Reader, sinks []io.Writer, pipes ...int) (int64, error) {
	free := make(chan *fanBuf, fanDepth*len(sinks)+2)
	allocated := 0
	var failed atomic.Bool
	queues := make([]chan *fanBuf, len(sinks))
	errs := make([]error, len(sinks))
	var wg sync.WaitGroup
	release := func(fb *fanBuf) {
		if fb.refs.Add(-1) == 0 {
			free <- fb
		}
	}
	for i, s := range sinks {
		q := make(chan *fanBuf, fanDepth)
		queues[i] = q
		wg.Add(1)
		go func() {
			defer wg.Done()
			for fb := range q {
				if errs[i] == nil {
					if _, err := s.Write(fb.b[:fb.n]); err != nil {
						errs[i] = err
						failed.Store(true)
					}
				}
				release(fb)
			}
		}()
	}

	var total int64
	var srcErr error
	for !failed.Load() {
		var fb *fanBuf
		select {
		case fb = <-free:
		default:
			if allocated < cap(free) {
				allocated++
				fb = &fanBuf{b: make([]byte, fanChunk)}
			} else {
				fb = <-free
			}
		}
		fb.n = 0
		var err error
		for fb.n < len(fb.b) && err == nil {
			var m int
			m, err = r.Read(fb.b[fb.n:])
			fb.n += m
		}
		total += int64(fb.n)
		if fb.n > 0 {
			fb.refs.Store(int32(len(sinks)))
			for _, q := range queues {
				q <- fb
			}
		} else {
			free <- fb
		}
		if err != nil {
			if err != io.EOF {
				srcErr = err
			}
			break
		}
	}
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
	if srcErr != nil {
		return total, srcErr
	}
	for i, err := range errs {
		if err != nil {
			isPipe := false
			for _, p := range pipes {
				isPipe = isPipe || p == i
			}
			return total, sinkErr{err: err, pipe: isPipe}
		}
	}
	return total, nil
}
