// Package syncbuf is a buffer that one goroutine writes while another reads
// it, for tests that watch a program's output.
package syncbuf

import (
	"bytes"
	"regexp"
	"sync"
	"time"
)

// Buffer is safe for concurrent Write and String.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// WaitFor waits up to d for the text to match re and returns the match, or
// "" when it never did.
func (b *Buffer) WaitFor(re *regexp.Regexp, d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		if m := re.FindString(b.String()); m != "" {
			return m
		}
		if time.Now().After(deadline) {
			return ""
		}
		time.Sleep(10 * time.Millisecond)
	}
}
