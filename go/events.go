//go:build (linux && cgo) || (windows && (amd64 || arm64))

package redirector

import (
	"context"
	"sync"
	"time"
)

// EventType says what happened to a redirected connection.
type EventType uint8

const (
	// EventOpened: a connection was redirected.
	EventOpened EventType = 1
	// EventClosed: a redirected connection ended (closed or idle); its byte
	// counts are final.
	EventClosed EventType = 2
)

func (t EventType) String() string {
	return enumString("event", int(t), map[int]string{int(EventOpened): "opened", int(EventClosed): "closed"})
}

// Event is a connection opened or closed, with its origin and byte counts.
type Event struct {
	Type EventType
	// Time is when it happened on the library's monotonic clock (only
	// differences between events mean something).
	Time time.Duration
	Origin
}

// The event goroutine waits for events inside the library
// (redirector_next_event), so it wakes as soon as one comes; it holds no lock
// of the Redirector meanwhile.
const (
	eventWait    = 50 * time.Millisecond  // longest wait in the library: how soon the pump sees Close or no listeners
	eventStopped = 100 * time.Millisecond // between asks while the redirector is stopped
)

// Events returns a channel of connection events. Every channel gets every
// event; it is closed when ctx is cancelled or the Redirector is closed.
// Events keep coming across Stop and Start.
//
// One goroutine takes events from the library (redirector_next_event) while
// any channel is open. Receive promptly: a channel that is not read holds up
// the others, and meanwhile the library keeps up to 4096 events and then
// drops new ones (counted in Stats().EventsLost).
func (r *Redirector) Events(ctx context.Context) <-chan Event {
	if ctx == nil {
		ctx = context.Background()
	}
	return r.events.subscribe(ctx)
}

type eventHub struct {
	r       *Redirector
	mu      sync.Mutex
	subs    map[*subscriber]struct{}
	pumping bool
	closed  bool
	wg      sync.WaitGroup // the pump and the forwarders
}

type subscriber struct {
	in   chan Event
	done chan struct{} // closed when the subscriber has gone
}

func (h *eventHub) subscribe(ctx context.Context) <-chan Event {
	out := make(chan Event, 64)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(out)
		return out
	}
	s := &subscriber{in: make(chan Event), done: make(chan struct{})}
	if h.subs == nil {
		h.subs = map[*subscriber]struct{}{}
	}
	h.subs[s] = struct{}{}
	h.wg.Add(1)
	go h.forward(ctx, s, out)
	if !h.pumping {
		h.pumping = true
		h.wg.Add(1)
		go h.pump()
	}
	return out
}

// forward passes a subscriber's events on until ctx or the Redirector ends.
func (h *eventHub) forward(ctx context.Context, s *subscriber, out chan<- Event) {
	defer h.wg.Done()
	defer close(out)
	defer func() {
		h.mu.Lock()
		delete(h.subs, s)
		h.mu.Unlock()
		close(s.done)
	}()
	for {
		select {
		case ev := <-s.in:
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			case <-h.r.done:
				return
			}
		case <-ctx.Done():
			return
		case <-h.r.done:
			return
		}
	}
}

// pump takes events from the library while anyone listens.
func (h *eventHub) pump() {
	defer h.wg.Done()
	buf := newEventBuf()
	defer buf.free()
	subs := make([]*subscriber, 0, 4)
	for {
		h.mu.Lock()
		if len(h.subs) == 0 || h.closed || !buf.ok() {
			h.pumping = false
			h.mu.Unlock()
			if !buf.ok() {
				h.r.logf("redirector: events: out of memory")
			}
			return
		}
		subs = subs[:0]
		for s := range h.subs {
			subs = append(subs, s)
		}
		h.mu.Unlock()

		var ev Event
		rc, e := buf.next(eventWait, &ev)
		switch Error(rc) {
		case 0:
			for _, s := range subs {
				select {
				case s.in <- ev:
				case <-s.done:
				case <-h.r.done:
				}
			}
		case ErrNoEvent:
		case ErrNotRunning:
			h.sleep(eventStopped)
		default:
			h.r.logf("redirector: events: %s", e.text)
			h.sleep(time.Second)
		}
	}
}

func (h *eventHub) sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-h.r.done:
	}
}

// wait ends the hub (after r.done is closed) and waits for its goroutines.
func (h *eventHub) wait() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.wg.Wait()
}
