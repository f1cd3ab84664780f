package xmppclient

import "net"

// KillConn drops the session's TCP connection the way the kernel does for
// a killed process with unread data: at once, with a reset, no stream
// close.
func KillConn(s *Session) {
	tc, ok := s.raw.(*net.TCPConn)
	if q, isQ := s.raw.(*quickAckConn); isQ {
		tc, ok = q.tcp, true
	}
	if ok {
		_ = tc.SetLinger(0)
	}
	_ = s.raw.Close()
}

// PendingPings is the number of Sends waiting for the server's answer.
func PendingPings(s *Session) int {
	s.pendMu.Lock()
	defer s.pendMu.Unlock()
	return len(s.pending)
}
