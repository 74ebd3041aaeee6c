package credential

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

// fakeConn counts calls in flight and records whether it was closed while
// one was.
type fakeConn struct {
	mayfly.RefusingConnector
	inFlight     atomic.Int32
	closedInUse  atomic.Bool
	closed       atomic.Bool
	checkStarted chan struct{}
	release      chan struct{}
}

func (f *fakeConn) Check(ctx context.Context) error {
	f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	if f.checkStarted != nil {
		close(f.checkStarted)
		<-f.release
	}
	if f.closed.Load() {
		return errors.New("closed")
	}
	return nil
}

func (f *fakeConn) Close() error {
	if f.inFlight.Load() > 0 {
		f.closedInUse.Store(true)
	}
	f.closed.Store(true)
	return nil
}

// TestConnSwapWaitsForCalls checks that a replaced connector is closed
// only after the calls using it return, that new calls go to the new one,
// and that a closed Conn answers rather than spins.
func TestConnSwapWaitsForCalls(t *testing.T) {
	old := &fakeConn{checkStarted: make(chan struct{}), release: make(chan struct{})}
	w := &Conn{}
	w.set(old)
	var wg sync.WaitGroup
	wg.Add(1)
	var oldErr error
	go func() { defer wg.Done(); oldErr = w.Check(context.Background()) }()
	<-old.checkStarted
	next := &fakeConn{}
	retired := make(chan struct{})
	replaced := w.set(next)
	go func() { replaced.retire(); close(retired) }()
	if err := w.Check(context.Background()); err != nil {
		t.Fatalf("Check on the new connector: %v", err)
	}
	select {
	case <-retired:
		t.Fatal("the old connector was closed while a call used it")
	case <-time.After(100 * time.Millisecond):
	}
	close(old.release)
	wg.Wait()
	<-retired
	if oldErr != nil || old.closedInUse.Load() || !old.closed.Load() {
		t.Fatalf("old connector: call err %v, closed in use %v, closed %v", oldErr, old.closedInUse.Load(), old.closed.Load())
	}
	w.Close()
	done := make(chan error, 1)
	go func() { done <- w.Check(context.Background()) }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("a closed connector answered Check without error")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a call on a closed Conn did not return")
	}
	// The optional interfaces fall back when the connector lacks them.
	fw := FullConn{w}
	if _, err := fw.PrepareProvision(context.Background(), mayfly.ProvisionRequest{}); err == nil {
		t.Error("PrepareProvision on a connector that cannot stage succeeded")
	}
	if err := fw.Extend(context.Background(), mayfly.ExtendRequest{}); err != nil {
		t.Errorf("Extend on a connector without target expiry = %v; want nil", err)
	}
}
