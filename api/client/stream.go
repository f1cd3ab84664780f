package client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

const (
	// The stream sends a keepalive every 15 s: three missed and the
	// connection is taken for dead.
	streamIdleTimeout = 45 * time.Second
	minBackoff        = 100 * time.Millisecond
	maxBackoff        = 5 * time.Second
	// maxEventBytes caps one line of the stream.
	maxEventBytes = 1 << 20
)

// Watch is what to do with the live stream (GET /api/stream, Server-Sent
// Events); every field may be nil.
type Watch struct {
	// Opened: a connection is up, the first or again.
	Opened func()
	// Event: one event ("snapshot", "status") and its data.
	Event func(event string, data []byte)
	// Caught: every event received so far was handed over; a burst (the
	// state the stream sends on connect) is drawn once here.
	Caught func()
	// Lost: the connection dropped; the next try is in retry.
	Lost func(err error, retry time.Duration)
}

// Watch follows the live stream until ctx ends, reconnecting with
// backoff; it returns nil then. The first connection failing, or an
// answer that retrying will not change (a 4xx), is returned as an error:
// there is nothing to watch.
func (c *Client) Watch(ctx context.Context, w Watch) error {
	backoff := minBackoff
	everConnected := false
	for {
		connected, err := c.stream(ctx, w)
		if ctx.Err() != nil {
			return nil
		}
		if connected {
			everConnected, backoff = true, minBackoff
		}
		var ae *Error
		if !everConnected || (errors.As(err, &ae) && ae.Status < 500) {
			return err
		}
		if w.Lost != nil {
			w.Lost(err, backoff)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// stream reads one connection to /api/stream until it ends; connected
// says whether the stream was opened at all.
func (c *Client) stream(parent context.Context, w Watch) (connected bool, err error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	req, err := c.newRequest(ctx, http.MethodGet, "/api/stream", nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "text/event-stream")
	res, err := c.live.Do(req)
	if err != nil {
		return false, c.transportError(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
		return false, answerError(res.StatusCode, data)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return false, fmt.Errorf("%s/api/stream is not an event stream (Content-Type %q)", c.base, ct)
	}
	var idled atomic.Bool
	idle := time.AfterFunc(streamIdleTimeout, func() { idled.Store(true); cancel() })
	defer idle.Stop()
	if w.Opened != nil {
		w.Opened()
	}

	br := bufio.NewReaderSize(res.Body, 64<<10)
	var event string
	var data bytes.Buffer
	for {
		line, err := readLine(br)
		if err != nil {
			switch {
			case idled.Load():
				return true, fmt.Errorf("nothing from %s for %s", c.base, streamIdleTimeout)
			case errors.Is(err, io.EOF):
				return true, fmt.Errorf("the sniper at %s ended the stream", c.base)
			}
			return true, c.transportError(err)
		}
		idle.Reset(streamIdleTimeout)
		switch {
		case line == "":
			if (data.Len() > 0 || event != "") && w.Event != nil {
				w.Event(event, data.Bytes())
			}
			event = ""
			data.Reset()
			if br.Buffered() == 0 && w.Caught != nil {
				w.Caught()
			}
		case line[0] == ':': // a comment: keepalive
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				event = value
			case "data":
				if data.Len() > 0 {
					data.WriteByte('\n')
				}
				data.WriteString(value)
			}
			// retry and id: Watch has its own backoff and the stream
			// resends the whole state on reconnect.
		}
	}
}

// readLine reads one line without its \n or \r\n, up to maxEventBytes.
func readLine(br *bufio.Reader) (string, error) {
	var buf []byte
	for {
		chunk, err := br.ReadSlice('\n')
		buf = append(buf, chunk...)
		if len(buf) > maxEventBytes {
			return "", fmt.Errorf("a line of the stream is over %d bytes", maxEventBytes)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return "", err
		}
		return strings.TrimSuffix(strings.TrimSuffix(string(buf), "\n"), "\r"), nil
	}
}
