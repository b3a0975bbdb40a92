package grpcclient_test

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/strata-build/strata/lib/grpcclient"
)

// TestReconnectsWithinSecondsOfAnOutage: while a service is down for half a
// minute, a client keeps trying to reach it at least every six seconds, so
// it takes calls again within seconds of the service's return rather than
// after gRPC's default backoff (which by then waits over ten seconds
// between tries, and up to two minutes). The "service" accepts and drops
// each connection, so every attempt fails and is seen.
func TestReconnectsWithinSecondsOfAnOutage(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		attempts []time.Time
	)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			attempts = append(attempts, time.Now())
			mu.Unlock()
			_ = c.Close()
		}
	}()
	conn, err := grpcclient.Dial(ln.Addr().String(), grpcclient.Config{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	conn.Connect()
	time.Sleep(30 * time.Second)
	_ = conn.Close()
	_ = ln.Close()

	mu.Lock()
	defer mu.Unlock()
	if len(attempts) < 2 {
		t.Fatalf("%d connection attempts in 30 s, want several", len(attempts))
	}
	last := start
	for i, at := range attempts {
		if gap := at.Sub(last); gap > 6500*time.Millisecond {
			t.Errorf("attempt %d came %v after the one before (at %v into the outage), want at most 6 s", i+1, gap.Round(time.Millisecond), at.Sub(start).Round(time.Second))
		}
		last = at
	}
	if gap := start.Add(30 * time.Second).Sub(last); gap > 6500*time.Millisecond {
		t.Errorf("no attempt in the last %v of the outage, want one at least every 6 s", gap.Round(time.Millisecond))
	}
}
