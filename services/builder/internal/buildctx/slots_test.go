package buildctx

import (
	"context"
	"errors"
	"testing"
	"time"
)

// waitFor acquires a slot in the background, recording the places it is
// told.
type waitFor struct {
	places  chan int
	release chan func()
	err     chan error
}

func startWaiting(ctx context.Context, s *slots) *waitFor {
	w := &waitFor{places: make(chan int, 16), release: make(chan func(), 1), err: make(chan error, 1)}
	go func() {
		rel, err := s.acquire(ctx, func(ahead int) { w.places <- ahead })
		if err != nil {
			w.err <- err
			return
		}
		w.release <- rel
	}()
	return w
}

func (w *waitFor) place(t *testing.T) int {
	t.Helper()
	select {
	case p := <-w.places:
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("no place was reported")
		return -1
	}
}

func (w *waitFor) slot(t *testing.T) func() {
	t.Helper()
	select {
	case rel := <-w.release:
		return rel
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter got no slot")
		return nil
	}
}

func TestSlotsServeFirstComeFirstServedAndTellPlaces(t *testing.T) {
	s := newSlots(1)
	first, err := s.acquire(context.Background(), func(int) { t.Error("a free slot reported a place") })
	if err != nil {
		t.Fatal(err)
	}
	a := startWaiting(context.Background(), s)
	if p := a.place(t); p != 0 {
		t.Fatalf("the first waiter's place = %d, want 0", p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := startWaiting(ctx, s)
	if p := b.place(t); p != 1 {
		t.Fatalf("the second waiter's place = %d, want 1", p)
	}
	c := startWaiting(context.Background(), s)
	if p := c.place(t); p != 2 {
		t.Fatalf("the third waiter's place = %d, want 2", p)
	}
	// The second gives up: the third moves up.
	cancel()
	if err := <-b.err; !errors.Is(err, context.Canceled) {
		t.Fatalf("the canceled waiter got %v", err)
	}
	if p := c.place(t); p != 1 {
		t.Fatalf("after a waiter ahead left, the third's place = %d, want 1", p)
	}
	first()
	relA := a.slot(t)
	if p := c.place(t); p != 0 {
		t.Fatalf("once the first waiter had the slot, the third's place = %d, want 0", p)
	}
	select {
	case <-c.release:
		t.Fatal("two builds hold the one slot")
	case <-time.After(50 * time.Millisecond):
	}
	relA()
	c.slot(t)()
}
