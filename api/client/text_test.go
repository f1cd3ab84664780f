package client

import (
	"testing"

	"sniper/api"
)

// TestDescribeNotifications: the history says what the notifier recorded.
func TestDescribeNotifications(t *testing.T) {
	for _, c := range []struct {
		e    api.Event
		want string
	}{
		{api.Event{Type: "notified", Subject: "out.notified", Data: []byte(`{"type":"notified","item":"i","event_seq":7,"attempts":4}`)}, "notified event 7 (after 4 attempts)"},
		{api.Event{Type: "notified", Subject: "out.notified", Data: []byte(`{"type":"notified","item":"i","event_seq":7,"attempts":1}`)}, "notified event 7"},
		{api.Event{Type: "notify_failed", Subject: "out.notify_failed", Data: []byte(`{"type":"notify_failed","item":"i","event_seq":7,"reason":"POST http://h: 500"}`)}, "notifying event 7 failed, retrying: POST http://h: 500"},
	} {
		if got := DescribeEvent(c.e); got != c.want {
			t.Errorf("DescribeEvent(%s) = %q, want %q", c.e.Data, got, c.want)
		}
	}
}
