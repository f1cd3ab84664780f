// Package client calls the JSON API of a running sniper: the CLI's verbs
// and the tests use it, so what they read is the API's own types
// (api.View, api.Event), not copies of them.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"sniper/api"
	"sniper/internal/clip"
)

// DefaultTimeout bounds every request but the live stream.
const DefaultTimeout = 10 * time.Second

// maxResponseBytes caps what is read of an answer.
const maxResponseBytes = 32 << 20

// ErrBadURL is a base URL that is not http:// or https://.
var ErrBadURL = errors.New("not an http:// or https:// URL")

// ErrNotFound is a 404 answer: no such sniper.
var ErrNotFound = errors.New("not found")

// Error is an answer other than 2xx, with the API's {"error"} message.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return e.Message }

// Is makes a 404 match ErrNotFound.
func (e *Error) Is(target error) bool {
	return target == ErrNotFound && e.Status == http.StatusNotFound
}

// Client calls the API of one running sniper.
type Client struct {
	base    string // without a trailing slash
	token   string
	timeout time.Duration
	http    *http.Client // bounded requests
	live    *http.Client // the stream: no overall timeout
	// UserAgent names the caller in the sniper's logs.
	UserAgent string
}

// New is a client of the API at base ("http://host:port"; a bare
// host:port means http), sending token as a bearer token when set.
func New(base, token string) (*Client, error) {
	base = strings.TrimSpace(base)
	if base != "" && !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q: %w", base, ErrBadURL)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = DefaultTimeout
	return &Client{
		base:      strings.TrimRight(base, "/"),
		token:     token,
		timeout:   DefaultTimeout,
		http:      &http.Client{Timeout: DefaultTimeout, Transport: tr},
		live:      &http.Client{Transport: tr},
		UserAgent: "sniper-client",
	}, nil
}

// Base is the API's base URL, as errors name it.
func (c *Client) Base() string { return c.base }

func (c *Client) newRequest(ctx context.Context, method, path string, body []byte) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.UserAgent)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// Send makes one request and returns the answer's status and body,
// whatever the status; the error is only that of reaching the sniper.
func (c *Client) Send(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	req, err := c.newRequest(ctx, method, path, body)
	if err != nil {
		return 0, nil, err
	}
	res, err := c.http.Do(req)
	if err != nil {
		return 0, nil, c.transportError(err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBytes))
	if err != nil {
		return 0, nil, fmt.Errorf("reading the answer from %s: %w", c.base, c.transportError(err))
	}
	return res.StatusCode, data, nil
}

// Do is Send for a 2xx answer: any other is an *Error saying in one line
// what went wrong.
func (c *Client) Do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	status, data, err := c.Send(ctx, method, path, body)
	if err != nil {
		return 0, nil, err
	}
	if status < 200 || status > 299 {
		return status, nil, answerError(status, data)
	}
	return status, data, nil
}

// GetJSON GETs path into v and returns the raw answer.
func (c *Client) GetJSON(ctx context.Context, path string, v any) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	_, data, err := c.Do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return nil, fmt.Errorf("%s answered GET %s with something unexpected: %v", c.base, path, err)
	}
	return data, nil
}

// Answer is the API's answer to a command: the sniper as it now is, the
// status (201 joined, 200 already so, 202 logged but not decided yet) and
// the raw body, for --json.
type Answer struct {
	Status int
	Sniper api.View
	Raw    []byte
}

// JoinOption is a choice a join can make beyond its stop price.
type JoinOption func(map[string]any)

// LastSecond holds the sniper's bid until lead before the close.
func LastSecond(lead time.Duration) JoinOption {
	return func(body map[string]any) {
		body["strategy"] = "last-second"
		body["lead_ms"] = lead.Milliseconds()
	}
}

// Join joins the auction for item with a stop price.
func (c *Client) Join(ctx context.Context, item string, stopPrice int64, opts ...JoinOption) (Answer, error) {
	req := map[string]any{"item": item, "stop_price": stopPrice}
	for _, o := range opts {
		o(req)
	}
	body, _ := json.Marshal(req)
	return c.command(ctx, http.MethodPost, "/api/snipers", body, "join")
}

// SetStopPrice changes the stop price of the sniper on item (and resumes
// it if stopped); a change the sniper cannot take is an *Error with
// Status 409 saying why.
func (c *Client) SetStopPrice(ctx context.Context, item string, stopPrice int64) (Answer, error) {
	body, _ := json.Marshal(map[string]any{"stop_price": stopPrice})
	return c.command(ctx, http.MethodPatch, "/api/snipers/"+url.PathEscape(item), body, "stop price change")
}

// GroupItem is one item of a snipe group and its stop price.
type GroupItem struct {
	Item      string `json:"item"`
	StopPrice int64  `json:"stop_price"`
}

// JoinGroup joins items as the snipe group name, which wins at most win
// of them; it returns the status and the members as they are.
func (c *Client) JoinGroup(ctx context.Context, name string, win int, items []GroupItem) (int, api.GroupView, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	body, _ := json.Marshal(map[string]any{"group": name, "win": win, "items": items})
	status, data, err := c.Do(ctx, http.MethodPost, "/api/groups", body)
	if err != nil {
		return 0, api.GroupView{}, nil, err
	}
	var g api.GroupView
	if err := json.Unmarshal(data, &g); err != nil {
		return 0, g, nil, fmt.Errorf("%s answered the group join with something unexpected: %v", c.base, err)
	}
	return status, g, data, nil
}

// Stop stops the sniper on item.
func (c *Client) Stop(ctx context.Context, item string) (Answer, error) {
	return c.command(ctx, http.MethodDelete, "/api/snipers/"+url.PathEscape(item), nil, "stop")
}

func (c *Client) command(ctx context.Context, method, path string, body []byte, what string) (Answer, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	status, data, err := c.Do(ctx, method, path, body)
	if err != nil {
		return Answer{}, err
	}
	a := Answer{Status: status, Raw: data}
	if err := json.Unmarshal(data, &a.Sniper); err != nil {
		return Answer{}, fmt.Errorf("%s answered the %s with something unexpected: %v", c.base, what, err)
	}
	return a, nil
}

// Snipers lists every sniper, and the raw answer.
func (c *Client) Snipers(ctx context.Context) ([]api.View, []byte, error) {
	var list struct {
		Snipers []api.View `json:"snipers"`
	}
	data, err := c.GetJSON(ctx, "/api/snipers", &list)
	return list.Snipers, data, err
}

// Sniper is the sniper on item; ErrNotFound (errors.Is) if there is none.
func (c *Client) Sniper(ctx context.Context, item string) (api.View, error) {
	var v api.View
	_, err := c.GetJSON(ctx, "/api/snipers/"+url.PathEscape(item), &v)
	return v, err
}

// History is item's history from the log, and the raw answer.
func (c *Client) History(ctx context.Context, item string) ([]api.Event, []byte, error) {
	var hist struct {
		Events []api.Event `json:"events"`
	}
	data, err := c.GetJSON(ctx, "/api/snipers/"+url.PathEscape(item)+"/events", &hist)
	return hist.Events, data, err
}

// Status is the sniper's readiness, its role and its checks.
func (c *Client) Status(ctx context.Context) (api.StatusView, error) {
	var st api.StatusView
	_, err := c.GetJSON(ctx, "/api/status", &st)
	return st, err
}

// transportError says why the sniper could not be talked to.
func (c *Client) transportError(err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("cannot reach the sniper at %s (is 'sniper run' running?)", c.base)
	case errors.Is(err, context.Canceled):
		return err
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("the sniper at %s did not answer within %s", c.base, c.timeout)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("cannot reach the sniper at %s: %v", c.base, err)
}

// answerError turns a non-2xx answer into its {"error"} message.
func answerError(status int, data []byte) error {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		return &Error{Status: status, Message: e.Error}
	}
	msg := fmt.Sprintf("%d %s", status, http.StatusText(status))
	if s := strings.TrimSpace(string(data)); s != "" {
		msg += ": " + clip.String(s, 200)
	}
	return &Error{Status: status, Message: msg}
}
